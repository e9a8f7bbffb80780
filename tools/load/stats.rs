//! Percentiles, and the CPU the server (when its pid is known), its database thread and the
//! load tool itself spent during a phase.

use anyhow::Result;

use crate::server::{own_cpu_s, Proc};

/// The `p`th percentile of sorted values (nearest rank), 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The median of unsorted values.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 50.0)
}

/// CPU seconds at the start of a phase.
pub struct Meter {
    proc: Option<Proc>,
    server: Option<f64>,
    store: Option<f64>,
    own: f64,
}

/// CPU seconds spent in a phase; the server's only when its pid is known.
pub struct Usage {
    pub server: Option<f64>,
    pub store: Option<f64>,
    pub own: f64,
}

impl Meter {
    pub fn start(proc: Option<Proc>) -> Result<Meter> {
        Ok(Meter {
            proc,
            server: proc.map(|p| p.cpu_s()).transpose()?,
            store: proc.and_then(|p| p.store_cpu_s().ok()),
            own: own_cpu_s()?,
        })
    }

    pub fn finish(&self) -> Result<Usage> {
        let server = match (self.proc, self.server) {
            (Some(p), Some(before)) => Some(p.cpu_s()? - before),
            _ => None,
        };
        let store = match (self.proc, self.store) {
            (Some(p), Some(before)) => p.store_cpu_s().ok().map(|now| now - before),
            _ => None,
        };
        Ok(Usage {
            server,
            store,
            own: own_cpu_s()? - self.own,
        })
    }
}

impl Usage {
    /// `server_cpu_s=… store_thread_cpu_s=… load_cpu_s=…` (`na` where unknown).
    pub fn fields(&self) -> String {
        format!(
            "server_cpu_s={} store_thread_cpu_s={} load_cpu_s={:.2}",
            opt(self.server, 2),
            opt(self.store, 2),
            self.own
        )
    }

    /// Server CPU per unit of work in ms (`na` without the pid).
    pub fn server_ms_per(&self, units: usize) -> String {
        opt(self.server.map(|s| s * 1000.0 / units.max(1) as f64), 3)
    }
}

/// A value with `digits` decimals, or `na`.
pub fn opt(value: Option<f64>, digits: usize) -> String {
    match value {
        Some(v) => format!("{v:.digits$}"),
        None => "na".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 50.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn unknown_values_are_na() {
        assert_eq!(opt(None, 2), "na");
        assert_eq!(opt(Some(1.234), 2), "1.23");
        let usage = Usage {
            server: None,
            store: None,
            own: 0.5,
        };
        assert_eq!(usage.server_ms_per(10), "na");
        assert_eq!(
            usage.fields(),
            "server_cpu_s=na store_thread_cpu_s=na load_cpu_s=0.50"
        );
    }
}

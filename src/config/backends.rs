//! The configuration tables named after backends (`[matrix] presence_fallback = ...`): which
//! keys each has, their defaults and their checks come from the backend (its `Linker`), so this
//! crate's configuration never names one.

use std::collections::BTreeMap;

use crate::backend::registry::{networks, KNOWN_NETWORKS};

use super::ConfigError;

/// The settings of each backend compiled into this build, by backend name and key, with the
/// defaults of those not given. Each login of an account linked to a backend gets them as
/// options (see [`BackendSettings::options`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings(BTreeMap<String, BTreeMap<String, String>>);

impl Default for BackendSettings {
    /// Every compiled-in backend's defaults.
    fn default() -> Self {
        let mut settings = BTreeMap::new();
        for network in networks() {
            let table: &mut BTreeMap<_, _> = settings.entry(network.name().into()).or_default();
            for setting in network.settings() {
                table.insert(setting.key.into(), setting.default.into());
            }
        }
        BackendSettings(settings)
    }
}

/// Takes the tables named after backends out of the whole configuration, those of backends
/// this build lacks too (they are then ignored, so one file serves every build).
pub(super) fn take_tables(
    table: &mut config::Map<String, config::Value>,
) -> Vec<(String, config::Value)> {
    let mut names: Vec<String> = KNOWN_NETWORKS.iter().map(|n| n.to_string()).collect();
    for network in networks() {
        if !names.iter().any(|n| n == network.name()) {
            names.push(network.name().into());
        }
    }
    names
        .into_iter()
        .filter_map(|name| table.remove(&name).map(|value| (name, value)))
        .collect()
}

impl BackendSettings {
    /// The defaults, then the given tables of compiled-in backends; an unknown key or one
    /// that isn't a single value is an error naming it.
    pub(super) fn from_tables(
        tables: Vec<(String, config::Value)>,
    ) -> Result<BackendSettings, ConfigError> {
        let mut settings = BackendSettings::default();
        let networks = networks();
        for (name, value) in tables {
            let Some(network) = networks.iter().find(|n| n.name() == name) else {
                continue;
            };
            let invalid = |key: String, reason: &str| ConfigError::Invalid {
                key,
                reason: reason.into(),
            };
            let entries = value
                .into_table()
                .map_err(|_| invalid(name.clone(), "must be a table"))?;
            for (key, value) in entries {
                let full = format!("{name}.{key}");
                if !network.settings().iter().any(|s| s.key == key) {
                    let known: Vec<_> = network.settings().iter().map(|s| s.key).collect();
                    let reason = match known.is_empty() {
                        true => "unknown key: this backend has no settings".to_string(),
                        false => format!("unknown key, expected one of: {}", known.join(", ")),
                    };
                    return Err(invalid(full, &reason));
                }
                let value = value
                    .into_string()
                    .map_err(|_| invalid(full.clone(), "must be a single value"))?;
                settings.set(&name, &key, value);
            }
        }
        Ok(settings)
    }

    /// Checks each value with its backend.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for network in networks() {
            for (key, value) in self.0.get(network.name()).into_iter().flatten() {
                if let Err(reason) = network.check_setting(key, value) {
                    return Err(ConfigError::Invalid {
                        key: format!("{}.{key}", network.name()),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// The value of a backend's setting.
    pub fn get(&self, backend: &str, key: &str) -> Option<&str> {
        self.0.get(backend)?.get(key).map(String::as_str)
    }

    /// Sets a backend's setting (for a configuration built in code; not checked here).
    pub fn set(&mut self, backend: &str, key: &str, value: impl Into<String>) {
        self.0
            .entry(backend.into())
            .or_default()
            .insert(key.into(), value.into());
    }

    /// A backend's settings as login options.
    pub fn options(&self, backend: &str) -> Vec<(String, String)> {
        self.0
            .get(backend)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

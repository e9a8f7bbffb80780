//! `[cluster]`: joining several msngate processes into one service over NATS
//! (docs/OPERATIONS.md, "Several nodes"). Without `nats`, msngate is one process on its own.

use serde::Deserialize;

use super::ConfigError;

/// The longest node name: it is part of NATS subjects and of log lines.
const MAX_NODE_NAME: usize = 64;

#[derive(Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server the nodes meet on, e.g. `nats://127.0.0.1:4222`. Unset: a single node.
    pub nats: Option<String>,
    /// This node's name, unique in the cluster (letters, digits, `-` and `_`).
    pub node: Option<String>,
}

impl ClusterConfig {
    /// The NATS address and this node's name, when the node is part of a cluster.
    pub fn joined(&self) -> Option<(&str, &str)> {
        Some((self.nats.as_deref()?, self.node.as_deref()?))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        match (&self.nats, &self.node) {
            (None, None) => Ok(()),
            (Some(_), None) => invalid("cluster.node", "must be set when cluster.nats is"),
            (None, Some(_)) => invalid("cluster.nats", "must be set when cluster.node is"),
            (Some(nats), Some(node)) => {
                let scheme = ["nats://", "tls://"].iter().any(|s| nats.starts_with(s));
                if !scheme || nats.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return invalid(
                        "cluster.nats",
                        "must be a NATS URL such as nats://127.0.0.1:4222",
                    );
                }
                let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
                if node.is_empty() || node.len() > MAX_NODE_NAME || !node.chars().all(allowed) {
                    return invalid(
                        "cluster.node",
                        "must be 1 to 64 letters, digits, `-` or `_`",
                    );
                }
                Ok(())
            }
        }
    }
}

/// The URL may carry NATS credentials (`nats://user:password@host`): never printed.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("nats", &self.nats.as_deref().map(redact_credentials))
            .field("node", &self.node)
            .finish()
    }
}

/// `url` with any `user:password@` replaced by `[redacted]@`.
pub fn redact_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[redacted]{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(nats: Option<&str>, node: Option<&str>) -> ClusterConfig {
        ClusterConfig {
            nats: nats.map(String::from),
            node: node.map(String::from),
        }
    }

    #[test]
    fn credentials_are_not_shown() {
        assert_eq!(
            redact_credentials("nats://me:secret@10.0.0.5:4222"),
            "nats://[redacted]@10.0.0.5:4222"
        );
        assert_eq!(
            redact_credentials("nats://10.0.0.5:4222"),
            "nats://10.0.0.5:4222"
        );
        let config = cluster(Some("nats://me:secret@h"), Some("a"));
        assert!(!format!("{config:?}").contains("secret"));
        assert_eq!(
            redact_credentials("tls://tok@h/x@y"),
            "tls://[redacted]@h/x@y"
        );
    }

    #[test]
    fn both_keys_or_neither() {
        assert!(cluster(None, None).validate().is_ok());
        assert!(cluster(Some("nats://127.0.0.1:4222"), Some("ns-1"))
            .validate()
            .is_ok());
        for bad in [
            cluster(Some("nats://127.0.0.1:4222"), None),
            cluster(None, Some("a")),
            cluster(Some("http://x"), Some("a")),
            cluster(Some("nats://x"), Some("a.b")),
            cluster(Some("nats://x"), Some("")),
            cluster(Some("nats://x"), Some(&"a".repeat(65))),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}

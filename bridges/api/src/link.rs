//! Linking: how an MSN account is mapped to an account on a backend's network, described by
//! the backend so that the core (`msngate user link`, the configuration) never names one.
//!
//! A backend that accounts can be linked to implements [`Linker`] next to [`Backend`]: the
//! arguments a link takes ([`LinkArg`], from which the command line builds its options), the
//! check of those arguments (logging in once where the network needs it) and what is kept
//! ([`Linked`]: the core seals the secret), undoing a link, and the server-wide settings of its
//! table in the configuration ([`Setting`]).

use std::fmt;
use std::future::Future;
use std::path::PathBuf;

use crate::Backend;

/// How an argument of a link is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkArgKind {
    /// `--NAME VALUE`, which must be given.
    Required,
    /// `--NAME VALUE`, which may be left out.
    Optional,
    /// `--NAME` alone; given, its value is `"true"`.
    Flag,
}

/// One argument of a link (`msngate user link HANDLE BACKEND --NAME VALUE ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkArg {
    /// The option's name, without the dashes.
    pub name: &'static str,
    /// One line for the command's help.
    pub help: &'static str,
    /// What the help shows for the value; by default the name in capitals.
    pub value_name: Option<&'static str>,
    pub kind: LinkArgKind,
    /// A password or the like: never printed, and the command line may take it from the
    /// environment instead, out of `ps`.
    pub secret: bool,
}

/// The arguments of one link, as given.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkRequest {
    /// The MSN handle being linked.
    pub msn_handle: String,
    /// Each argument given, by [`LinkArg::name`]; a flag given has the value `"true"`.
    pub args: Vec<(String, String)>,
    /// A directory for this account's own state on the backend's side (created by the backend
    /// when it needs one); the core chooses it under `[storage] backend_data`.
    pub data_dir: PathBuf,
}

impl LinkRequest {
    /// The value of the argument `name`, if it was given.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the flag `name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.arg(name) == Some("true")
    }
}

impl fmt::Debug for LinkRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkRequest")
            .field("msn_handle", &self.msn_handle)
            .field(
                "args",
                &self.args.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// What a link keeps: the core stores it with the account, the secret sealed, and gives it back
/// in the [`Credentials`](crate::Credentials) of each login.
#[derive(Clone, PartialEq, Eq)]
pub struct Linked {
    /// The account on the backend's network (a JID, a Matrix user id).
    pub account: String,
    /// Opaque and secret (a password, an access token): stored sealed.
    pub secret: String,
    /// Not secret: server address, device id, store directory...
    pub options: Vec<(String, String)>,
}

impl fmt::Debug for Linked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Linked")
            .field("account", &self.account)
            .field("secret", &"[redacted]")
            .field("options", &self.options)
            .finish()
    }
}

/// Why a link (or undoing one) failed, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// An argument is not valid; the text says which and why.
    #[error("{0}")]
    Invalid(String),
    /// The network refused the credentials.
    #[error("{0}")]
    Refused(String),
    /// The network could not be reached, or something else went wrong.
    #[error("{0}")]
    Failed(String),
}

/// A link as stored, for undoing it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub account: String,
    /// The secret, unsealed; `None` when the core could not open it (no key, another key).
    pub secret: Option<String>,
    pub options: Vec<(String, String)>,
}

impl fmt::Debug for StoredLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredLink")
            .field("account", &self.account)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("options", &self.options)
            .finish()
    }
}

/// A server-wide setting of a backend: the key `KEY` of the table named after the backend in
/// the configuration (`[matrix] presence_fallback = ...`). Its value joins the link's options
/// in the [`Credentials`](crate::Credentials) of every login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub default: &'static str,
}

/// How accounts are linked to a backend; the companion of [`Backend`] for the backends of other
/// networks (the local backend has no links).
pub trait Linker: Backend {
    /// One line for the command's help: what a link to this backend does.
    fn link_help(&self) -> &'static str;

    /// The arguments a link takes, in the order the help lists them.
    fn link_args(&self) -> &'static [LinkArg];

    /// Checks a link's arguments and, where the network needs it, logs in once (the account's
    /// token is then what is kept, never the password). The core has checked that every
    /// required argument is there.
    fn link(&self, request: LinkRequest) -> impl Future<Output = Result<Linked, LinkError>> + Send;

    /// Tries a new link's credentials once, where [`link`](Self::link) did not log in (XMPP
    /// keeps the password without logging in, so that `msngate user link` works while the
    /// server is out of reach): the self-service page calls it before it stores a link, so
    /// that a wrong password or an unreachable server is said at once and nothing is kept.
    /// `Refused` for refused credentials, `Failed` for a server out of reach. By default there
    /// is nothing more to try.
    fn check(&self, linked: &Linked) -> impl Future<Output = Result<(), LinkError>> + Send {
        let _ = linked;
        async { Ok(()) }
    }

    /// Undoes what a link left on the network's side and on disk (a logged-in device, its
    /// store), after the core removed the link. `Ok(Some(text))` is a line for the operator.
    /// Undoing is best effort: the link is gone either way.
    fn unlink(
        &self,
        link: StoredLink,
    ) -> impl Future<Output = Result<Option<String>, LinkError>> + Send {
        let _ = link;
        async { Ok(None) }
    }

    /// The settings of this backend's table in the configuration, with their defaults.
    fn settings(&self) -> &'static [Setting] {
        &[]
    }

    /// Checks a setting's value; `Err` says what it must be.
    fn check_setting(&self, key: &str, value: &str) -> Result<(), String> {
        let _ = (key, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_never_print_their_secret() {
        let request = LinkRequest {
            msn_handle: "a@b.c".into(),
            args: vec![("password".into(), "hunter2".into())],
            data_dir: "/tmp/x".into(),
        };
        let linked = Linked {
            account: "a@xmpp.example".into(),
            secret: "hunter2".into(),
            options: Vec::new(),
        };
        let stored = StoredLink {
            account: "a@xmpp.example".into(),
            secret: Some("hunter2".into()),
            options: Vec::new(),
        };
        for printed in [
            format!("{request:?}"),
            format!("{linked:?}"),
            format!("{stored:?}"),
        ] {
            assert!(!printed.contains("hunter2"), "{printed}");
        }
        assert_eq!(request.arg("password"), Some("hunter2"));
        assert!(!request.flag("plaintext"));
    }
}

//! How an MSN account is linked to a Matrix account (`msngate user link HANDLE matrix ...`):
//! one password login that leaves a device and its store, undone by logging that device out;
//! and the backend's `[matrix]` settings.

use msngate_bridge_api::{
    BackendError, LinkArg, LinkArgKind, LinkError, LinkRequest, Linked, Linker, Setting, StoredLink,
};

use crate::{presence, MatrixBackend, OPTION_PRESENCE_FALLBACK};

const ARGS: &[LinkArg] = &[
    LinkArg {
        name: "homeserver",
        help: "The homeserver's client API, e.g. https://matrix.example.org",
        value_name: None,
        kind: LinkArgKind::Required,
        secret: false,
    },
    LinkArg {
        name: "user",
        help: "The Matrix user, e.g. @alice:example.org",
        value_name: None,
        kind: LinkArgKind::Required,
        secret: false,
    },
    LinkArg {
        name: "password",
        help: "The Matrix password",
        value_name: None,
        kind: LinkArgKind::Required,
        secret: true,
    },
];

const SETTINGS: &[Setting] = &[Setting {
    key: OPTION_PRESENCE_FALLBACK,
    default: "online",
}];

impl Linker for MatrixBackend {
    fn link_help(&self) -> &'static str {
        "A Matrix account: its direct chats and rooms become the MSN contact list. Logs in once \
         and keeps an access token and device (never the password); `unlink` logs that device out"
    }

    fn link_args(&self) -> &'static [LinkArg] {
        ARGS
    }

    /// Logs a device in with the password ([`crate::link`]) into a new store directory under
    /// the request's: one per link, so relinking never meets the previous store (which goes
    /// when that device is logged out).
    async fn link(&self, request: LinkRequest) -> Result<Linked, LinkError> {
        let homeserver = request.arg("homeserver").unwrap_or_default();
        let user = request.arg("user").unwrap_or_default();
        let password = request.arg("password").unwrap_or_default();
        if password.is_empty() {
            return Err(LinkError::Invalid("the password must not be empty".into()));
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let store = request.data_dir.join(stamp.to_string());
        crate::link(homeserver, user, password, &store)
            .await
            .map_err(|e| match e {
                BackendError::BadCredentials => {
                    LinkError::Refused(format!("the homeserver refused the password of {user}"))
                }
                e => LinkError::Failed(format!("cannot log {user} in at {homeserver}: {e}")),
            })
    }

    /// Logs the device out and removes its store ([`crate::unlink`]).
    async fn unlink(&self, link: StoredLink) -> Result<Option<String>, LinkError> {
        let account = &link.account;
        let Some(secret) = link.secret else {
            return Err(LinkError::Failed(format!(
                "cannot open the stored Matrix token; the device of {account} stays logged in"
            )));
        };
        match crate::unlink(account, &secret, &link.options).await {
            Ok(()) => Ok(Some(format!("logged the Matrix device of {account} out"))),
            Err(e) => Err(LinkError::Failed(format!(
                "could not log the Matrix device of {account} out: {e}"
            ))),
        }
    }

    fn settings(&self) -> &'static [Setting] {
        SETTINGS
    }

    fn check_setting(&self, key: &str, value: &str) -> Result<(), String> {
        if key == OPTION_PRESENCE_FALLBACK && presence::parse_state(value).is_none() {
            return Err("must be online, busy, idle, brb, away, phone, lunch or offline".into());
        }
        Ok(())
    }
}

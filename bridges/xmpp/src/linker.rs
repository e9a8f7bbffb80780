//! How an MSN account is linked to an XMPP account (`msngate user link HANDLE xmpp ...`): the
//! JID and password are checked and kept (the password sealed by the core); nothing is left on
//! the server to undo.

use msngate_bridge_api::{LinkArg, LinkArgKind, LinkError, LinkRequest, Linked, Linker};

use tokio_xmpp::jid::BareJid;

use crate::connect::{self, ConnectError, Target};
use crate::XmppBackend;

const ARGS: &[LinkArg] = &[
    LinkArg {
        name: "jid",
        help: "The XMPP account, e.g. alice@example.org",
        value_name: None,
        kind: LinkArgKind::Required,
        secret: false,
    },
    LinkArg {
        name: "password",
        help: "The XMPP password",
        value_name: None,
        kind: LinkArgKind::Required,
        secret: true,
    },
    LinkArg {
        name: "server",
        help: "Connect to this HOST:PORT instead of looking the server up in DNS",
        value_name: Some("HOST:PORT"),
        kind: LinkArgKind::Optional,
        secret: false,
    },
    LinkArg {
        name: "plaintext",
        help: "Connect without TLS. Only for servers on a trusted network: the password would \
               cross it in clear",
        value_name: None,
        kind: LinkArgKind::Flag,
        secret: false,
    },
];

impl Linker for XmppBackend {
    fn link_help(&self) -> &'static str {
        "An XMPP account: the MSN contact list becomes its roster"
    }

    fn link_args(&self) -> &'static [LinkArg] {
        ARGS
    }

    /// Checks the arguments only: the password is first tried at the account's next logon.
    async fn link(&self, request: LinkRequest) -> Result<Linked, LinkError> {
        let jid = request.arg("jid").unwrap_or_default();
        check_jid(jid)?;
        let password = request.arg("password").unwrap_or_default();
        if password.is_empty() {
            return Err(LinkError::Invalid("the password must not be empty".into()));
        }
        let mut options = Vec::new();
        if let Some(server) = request.arg("server") {
            check_server(server)?;
            options.push(("server".to_string(), server.to_string()));
        }
        if request.flag("plaintext") {
            options.push(("plaintext".to_string(), "true".to_string()));
        }
        Ok(Linked {
            account: jid.to_owned(),
            secret: password.to_owned(),
            options,
        })
    }

    /// One authenticated connection, closed again at once.
    async fn check(&self, linked: &Linked) -> Result<(), LinkError> {
        let jid = BareJid::new(&linked.account)
            .map_err(|e| LinkError::Invalid(format!("invalid JID {:?}: {e}", linked.account)))?;
        let option = |key: &str| {
            linked
                .options
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let target = Target {
            jid,
            password: linked.secret.clone(),
            server: option("server"),
            plaintext: option("plaintext").as_deref() == Some("true"),
        };
        match connect::connect_once(&target).await {
            Ok(connection) => {
                drop(connection);
                Ok(())
            }
            Err(ConnectError::Auth) => Err(LinkError::Refused(
                "the XMPP server refused this address and password".into(),
            )),
            Err(ConnectError::Other(reason)) => Err(LinkError::Failed(format!(
                "cannot reach the XMPP server ({reason})"
            ))),
        }
    }
}

/// A bare JID: local@domain, without spaces or a resource.
fn check_jid(jid: &str) -> Result<(), LinkError> {
    let valid = match jid.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains(['@', '/'])
                && !jid.chars().any(|c| c.is_whitespace() || c.is_control())
                && jid.len() <= 3071
        }
        None => false,
    };
    if !valid {
        return Err(LinkError::Invalid(format!(
            "invalid JID {jid:?}: expected a bare JID like alice@example.org"
        )));
    }
    Ok(())
}

fn check_server(server: &str) -> Result<(), LinkError> {
    let valid = server
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        return Err(LinkError::Invalid(format!(
            "invalid server {server:?}: expected HOST:PORT"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(args: &[(&str, &str)]) -> LinkRequest {
        LinkRequest {
            msn_handle: "alice@example.com".into(),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            data_dir: "/nonexistent".into(),
        }
    }

    #[tokio::test]
    async fn a_link_keeps_the_jid_password_and_options() {
        let linked = XmppBackend
            .link(request(&[
                ("jid", "alice@example.org"),
                ("password", "pw"),
                ("server", "127.0.0.1:5222"),
                ("plaintext", "true"),
            ]))
            .await
            .unwrap();
        assert_eq!(linked.account, "alice@example.org");
        assert_eq!(linked.secret, "pw");
        assert_eq!(
            linked.options,
            vec![
                ("server".to_string(), "127.0.0.1:5222".to_string()),
                ("plaintext".to_string(), "true".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn bad_arguments_are_refused_with_the_reason() {
        for (args, needle) in [
            (
                vec![("jid", "no-at-sign"), ("password", "x")],
                "invalid JID",
            ),
            (vec![("jid", "a@b.c/res"), ("password", "x")], "invalid JID"),
            (
                vec![("jid", "a@b.c"), ("password", "")],
                "must not be empty",
            ),
            (
                vec![("jid", "a@b.c"), ("password", "x"), ("server", "nohost")],
                "invalid server",
            ),
        ] {
            let err = XmppBackend.link(request(&args)).await.unwrap_err();
            assert!(matches!(err, LinkError::Invalid(_)), "{args:?}: {err:?}");
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }
}

//! The dispatch server: negotiates the version, then refers the client to the notification
//! server with `XFR TrID NS host:port` and closes (draft section 7.4).

use std::sync::Arc;

use crate::connection::{Flow, Replies, Role};
use crate::protocol::{AuthStage, ClientCommand, Dialect, ErrorCode, ParseError, ServerCommand};
use crate::server::Services;

/// One dispatch connection.
pub struct DispatchConnection {
    services: Arc<Services>,
}

impl DispatchConnection {
    pub fn new(services: Arc<Services>) -> DispatchConnection {
        DispatchConnection { services }
    }
}

impl Role for DispatchConnection {
    fn logged_in(&self) -> bool {
        false
    }

    async fn handle(
        &mut self,
        command: Result<ClientCommand, ParseError>,
        out: &mut Replies,
    ) -> Flow {
        match command {
            Err(e) => out.error(e.code, e.trid.unwrap_or_default()),
            Ok(ClientCommand::Ver { trid, dialects }) => {
                let dialect = Dialect::negotiate(dialects.iter().map(String::as_str));
                out.push(ServerCommand::Ver { trid, dialect });
                if dialect.is_none() {
                    return Flow::Close;
                }
            }
            Ok(ClientCommand::Inf { trid }) => out.push(ServerCommand::Inf { trid }),
            Ok(ClientCommand::Cvr { trid, .. }) => {
                let c = &self.services.config.client;
                out.push(ServerCommand::Cvr {
                    trid,
                    recommended: c.recommended_version.clone(),
                    minimum: c.minimum_version.clone(),
                    download_url: c.download_url.clone(),
                    info_url: c.info_url.clone(),
                });
            }
            Ok(ClientCommand::UsrAuth {
                trid,
                stage: AuthStage::Initial(_),
                ..
            }) => {
                out.push(ServerCommand::XfrNs {
                    trid,
                    address: self.services.notification_address.clone(),
                });
                return Flow::Close;
            }
            Ok(ClientCommand::Out) => return Flow::Close,
            Ok(other) => out.error(ErrorCode::NotExpected, other.trid().unwrap_or_default()),
        }
        Flow::Continue
    }

    async fn closed(self) {}
}

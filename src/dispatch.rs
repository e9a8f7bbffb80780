//! The dispatch server: negotiates the version, then refers the client to the notification
//! server with `XFR TrID NS host:port` and closes (draft section 7.4). In a cluster the
//! referral names the live node the handle hashes to (`Delivery::notification_address`).

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{info_span, Span};

use crate::connection::{Flow, Replies, Role};
use crate::protocol::{AuthStage, ClientCommand, ErrorCode, ServerCommand};
use crate::services::Services;

/// One dispatch connection.
pub struct DispatchConnection {
    services: Arc<Services>,
    address: SocketAddr,
}

impl DispatchConnection {
    pub fn new(services: Arc<Services>, address: SocketAddr) -> DispatchConnection {
        DispatchConnection { services, address }
    }
}

impl Role for DispatchConnection {
    fn logged_in(&self) -> bool {
        false
    }

    fn span(&self) -> Span {
        info_span!("ds", peer = %self.address)
    }

    async fn handle(&mut self, command: ClientCommand, out: &mut Replies) -> Flow {
        match command {
            ClientCommand::Ver { trid, dialects } => {
                let (dialect, answer) = ServerCommand::version_answer(trid, &dialects);
                if let Some(d) = dialect {
                    out.set_dialect(d);
                }
                out.push(answer);
                if dialect.is_none() {
                    return Flow::Close;
                }
            }
            ClientCommand::Inf { trid } => out.push(ServerCommand::Inf { trid }),
            ClientCommand::Cvr { trid, query, .. } => {
                out.push(crate::notification::cvr_reply(
                    &self.services.config.client,
                    trid,
                    query,
                ));
            }
            ClientCommand::UsrAuth {
                trid,
                stage: AuthStage::Initial(handle),
                ..
            } => {
                // In a cluster, the live node the handle hashes to; alone, this node.
                let address = self.services.hub.notification_address(&handle);
                out.push(ServerCommand::XfrNs {
                    trid,
                    address: address.unwrap_or_else(|| self.services.notification_address.clone()),
                    current: self.services.dispatch_address.clone(),
                });
                return Flow::Close;
            }
            ClientCommand::Out => return Flow::Close,
            other => out.error(ErrorCode::NotExpected, other.trid().unwrap_or_default()),
        }
        Flow::Continue
    }

    async fn closed(self) {}
}

//! Test infrastructure for the bridge tests: private XMPP servers (Prosody, ejabberd) and a
//! private Matrix homeserver (Synapse), and independent clients to play the other side.
//!
//! ```ignore
//! mod support;
//! use support::prosody::Prosody;
//! use support::xmpp::XmppClient;
//!
//! let server = Prosody::start().await;
//! server.register("alice", "pw").await;
//! let mut alice = XmppClient::connect(&server.jid("alice"), "pw", server.port()).await?;
//! ```

pub mod browser;
pub mod ejabberd;
pub mod matrix;
pub mod nats;
pub mod netcut;
pub mod process;
pub mod prosody;
pub mod synapse;
pub mod xmpp;

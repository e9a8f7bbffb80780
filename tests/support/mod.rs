//! Test infrastructure for the XMPP bridge tests: a private Prosody server and an independent
//! XMPP client to play the other side.
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

pub mod matrix;
pub mod process;
pub mod prosody;
pub mod synapse;
pub mod xmpp;

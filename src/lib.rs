//! msngate: an MSN Messenger 1.0 (MSNP2) server whose accounts can be local or bridged.
//!
//! See docs/ARCHITECTURE.md for the map of this crate.

pub mod backend;
pub mod bridge;
pub mod chat;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod http;
pub mod hub;
pub mod local;
pub mod metrics;
pub mod msncd;
pub mod notification;
pub mod protocol;
pub mod secrets;
pub mod server;
pub mod services;
pub mod store;
pub mod switchboard;

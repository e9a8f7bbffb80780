//! MSNP2 wire protocol: framing, typed commands, error codes. No I/O and no tokio here.

pub mod client;
pub mod error;
pub mod frame;
pub mod server;
pub mod types;

pub use client::{AuthStage, ClientCommand, ParseError};
pub use error::ErrorCode;
pub use frame::{decode, Frame, FrameError, MAX_LINE_BYTES, MAX_PAYLOAD_BYTES};
pub use server::{ListItem, OutReason, ServerCommand};
pub use types::{
    AckMode, BlpSetting, Dialect, FriendlyName, GtcSetting, HandleError, ListKind, NameError,
    Status, TrId, UserHandle,
};

/// A line for the debug log: secrets (challenge responses, cookies) are cut off after the
/// verb and TrID, and the line is truncated.
pub fn loggable_line(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut tokens = text.split_ascii_whitespace();
    let verb = tokens.next().unwrap_or("");
    if matches!(verb, "USR" | "ANS" | "RNG" | "XFR") {
        let trid = tokens.next().unwrap_or("");
        return format!("{verb} {trid} [redacted]");
    }
    let mut s: String = text.chars().take(200).collect();
    if text.len() > s.len() {
        s.push('…');
    }
    s
}

//! The client's side of a server connection: framed, parsed lines in; lines and MSGs out.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tracing::debug;

use super::{ClientError, REPLY_TIMEOUT};
use crate::protocol::{decode, ServerCommand, TrId};

/// A reply as a result: an error line (`217 5`) becomes [`ClientError::Msn`].
pub(super) fn into_result(line: ServerCommand) -> Result<ServerCommand, ClientError> {
    match line {
        ServerCommand::Error { code, .. } => Err(ClientError::Msn { code: code.code() }),
        line => Ok(line),
    }
}

/// A reply that is not an error but not the one the command has either.
pub(super) fn unexpected(command: &str) -> ClientError {
    ClientError::Failed(format!("unexpected answer to {command}"))
}

/// Frames a server connection with the crate's own decoder.
pub(super) struct LineReader {
    half: OwnedReadHalf,
    buf: BytesMut,
}

impl LineReader {
    pub(super) fn new(half: OwnedReadHalf) -> LineReader {
        LineReader {
            half,
            buf: BytesMut::new(),
        }
    }

    /// The next line, `None` at end of stream or when the stream cannot be framed. A line
    /// that is not a server command is skipped.
    pub(super) async fn next(&mut self) -> Option<ServerCommand> {
        loop {
            match decode(&mut self.buf) {
                Ok(Some(frame)) => match ServerCommand::parse(frame) {
                    Ok(line) => return Some(line),
                    Err(e) => {
                        debug!(error = %e, "unreadable line from the server");
                        continue;
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    debug!(error = %e, "unframeable line from the server");
                    return None;
                }
            }
            self.buf.reserve(4096);
            match self.half.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The reply to `trid`, skipping anything else, within [`REPLY_TIMEOUT`].
    pub(super) async fn reply(&mut self, trid: u32) -> Result<ServerCommand, ClientError> {
        let wait = async {
            loop {
                let line = self.next().await.ok_or(ClientError::Disconnected)?;
                if line.trid() == Some(TrId(trid)) {
                    return into_result(line);
                }
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, wait)
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}

pub(super) async fn send_line(writer: &mut OwnedWriteHalf, line: &str) -> Result<(), ClientError> {
    let bytes = format!("{line}\r\n");
    let write = writer.write_all(bytes.as_bytes());
    match tokio::time::timeout(REPLY_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(ClientError::Disconnected),
    }
}

pub(super) async fn send_message(
    writer: &mut OwnedWriteHalf,
    trid: u32,
    payload: &[u8],
) -> Result<(), ClientError> {
    // N: the switchboard answers only when a message could not be delivered (NAK).
    let mut bytes = format!("MSG {trid} N {}\r\n", payload.len()).into_bytes();
    bytes.extend_from_slice(payload);
    match tokio::time::timeout(REPLY_TIMEOUT, writer.write_all(&bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(ClientError::Disconnected),
    }
}

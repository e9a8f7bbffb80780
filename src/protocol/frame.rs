//! Line framing: splits a byte stream into command lines and MSG payloads.
//!
//! Pure and incremental: [`decode`] looks at what has been read so far and either takes one
//! whole frame off the front of the buffer, asks for more bytes (`Ok(None)`), or reports that
//! the stream can no longer be framed, which ends the connection.

use bytes::{Buf, Bytes, BytesMut};

/// The longest command line accepted, without its CRLF. The longest legal MSNP2 client line,
/// `ADD` with a 129-byte handle and a 387-byte name, is under 550 bytes.
pub const MAX_LINE_BYTES: usize = 2048;
/// The largest MSG payload accepted. MSN clients of the time capped a message near 1,664
/// bytes; the extra room is for invitations and headers from later clients.
pub const MAX_PAYLOAD_BYTES: usize = 8192;

/// One framed unit: a command line and, for MSG, its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The line without its line ending. Not necessarily UTF-8: parsing decides.
    pub line: Bytes,
    /// The payload announced by a MSG line's last parameter.
    pub payload: Option<Bytes>,
}

/// Why the stream cannot be framed any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    /// The TrID is kept so the client can be told which command was refused.
    #[error("MSG without a readable payload length")]
    BadPayloadLength { trid: Option<u32> },
    #[error("MSG payload of {0} bytes is over the limit of {MAX_PAYLOAD_BYTES}")]
    PayloadTooLong(usize),
}

/// Takes the next frame off the front of `buf`, if it is complete.
///
/// Lines end with CRLF as the draft says; a bare LF is accepted too so that people can type
/// at the server with telnet or netcat.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let search = &buf[..buf.len().min(MAX_LINE_BYTES + 2)];
    let Some(lf) = search.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE_BYTES + 1 {
            return Err(FrameError::LineTooLong);
        }
        return Ok(None);
    };
    let line_end = if lf > 0 && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    if line_end > MAX_LINE_BYTES {
        return Err(FrameError::LineTooLong);
    }
    let payload_len = payload_length(&buf[..line_end])?;
    let frame_len = lf + 1 + payload_len.unwrap_or(0);
    if buf.len() < frame_len {
        // Make room once for the whole payload instead of growing in small steps.
        buf.reserve(frame_len - buf.len());
        return Ok(None);
    }
    let line = buf.split_to(line_end).freeze();
    buf.advance(lf + 1 - line_end);
    let payload = payload_len.map(|n| buf.split_to(n).freeze());
    Ok(Some(Frame { line, payload }))
}

/// Commands followed by a payload whose length is their last parameter: MSG, and from
/// MSNP5/6 on SDC, PAG and QRY.
const PAYLOAD_VERBS: [&[u8]; 4] = [b"MSG", b"SDC", b"PAG", b"QRY"];

/// For a payload command's line, the payload length in its last parameter.
fn payload_length(line: &[u8]) -> Result<Option<usize>, FrameError> {
    if !PAYLOAD_VERBS.iter().any(|v| line.starts_with(v))
        || line.get(3).is_some_and(|b| !b.is_ascii_whitespace())
    {
        return Ok(None);
    }
    // The server's answers `QRY TrID` and `SDC TrID OK` carry no payload; the clients' forms
    // have at least four tokens (verb, TrID, an argument, the length), so short ones are not
    // payload commands. (MSG keeps its MSNP2 behaviour: a short MSG is a framing error.)
    let tokens = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .count();
    if !line.starts_with(b"MSG") && tokens < 4 {
        return Ok(None);
    }
    let last = line
        .split(|b| b.is_ascii_whitespace())
        .rfind(|t| !t.is_empty())
        .unwrap_or_default();
    let bad = || {
        let trid = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|t| !t.is_empty())
            .nth(1)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<super::TrId>().ok())
            .map(|t| t.0);
        FrameError::BadPayloadLength { trid }
    };
    if last.is_empty() || last.len() > 10 || !last.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let n: usize = std::str::from_utf8(last)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    if n > MAX_PAYLOAD_BYTES {
        return Err(FrameError::PayloadTooLong(n));
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = decode(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn lines_and_pipelining() {
        let f = frames(b"VER 1 MSNP2 CVR0\r\nINF 2\r\nUSR 3 MD5 I a@b.c\r\n").unwrap();
        let lines: Vec<_> = f.iter().map(|f| f.line.clone()).collect();
        assert_eq!(lines, ["VER 1 MSNP2 CVR0", "INF 2", "USR 3 MD5 I a@b.c"]);
        assert!(f.iter().all(|f| f.payload.is_none()));
    }

    #[test]
    fn incomplete_input_waits() {
        let mut buf = BytesMut::from(&b"VER 1 MSN"[..]);
        assert_eq!(decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"P2\r");
        assert_eq!(decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"\n");
        assert_eq!(decode(&mut buf).unwrap().unwrap().line, "VER 1 MSNP2");
        assert!(buf.is_empty());
    }

    #[test]
    fn bare_lf_is_accepted() {
        let f = frames(b"INF 1\nINF 2\r\n").unwrap();
        assert_eq!(f[0].line, "INF 1");
        assert_eq!(f[1].line, "INF 2");
    }

    #[test]
    fn msg_payload_is_taken_by_byte_length() {
        let payload = "MIME-Version: 1.0\r\n\r\nhé\r\nOUT\r\n";
        let input = format!("MSG 4 A {}\r\n{payload}INF 5\r\n", payload.len());
        let mut buf = BytesMut::from(input.as_bytes());
        let first = decode(&mut buf).unwrap().unwrap();
        assert_eq!(first.line, format!("MSG 4 A {}", payload.len()));
        assert_eq!(first.payload.unwrap(), payload.as_bytes());
        assert_eq!(decode(&mut buf).unwrap().unwrap().line, "INF 5");
    }

    #[test]
    fn msg_payload_split_across_reads() {
        let mut buf = BytesMut::from(&b"MSG 1 U 5\r\nab"[..]);
        assert_eq!(decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"cde");
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.payload.unwrap(), "abcde");
    }

    #[test]
    fn zero_length_payload() {
        let f = frames(b"MSG 1 U 0\r\nINF 2\r\n").unwrap();
        assert_eq!(f[0].payload.as_deref(), Some(&b""[..]));
        assert_eq!(f[1].line, "INF 2");
    }

    #[test]
    fn limits_close_the_stream() {
        let long = vec![b'A'; MAX_LINE_BYTES + 2];
        assert_eq!(frames(&long), Err(FrameError::LineTooLong));
        let mut at_limit = vec![b'A'; MAX_LINE_BYTES];
        at_limit.extend_from_slice(b"\r\n");
        assert_eq!(frames(&at_limit).unwrap().len(), 1);
        let mut over = vec![b'A'; MAX_LINE_BYTES + 1];
        over.extend_from_slice(b"\r\n");
        assert_eq!(frames(&over), Err(FrameError::LineTooLong));
        let big = format!("MSG 1 A {}\r\n", MAX_PAYLOAD_BYTES + 1);
        assert_eq!(
            frames(big.as_bytes()),
            Err(FrameError::PayloadTooLong(MAX_PAYLOAD_BYTES + 1))
        );
        assert_eq!(
            frames(b"MSG 1 A x\r\n"),
            Err(FrameError::BadPayloadLength { trid: Some(1) })
        );
        assert_eq!(
            frames(b"MSG\r\n"),
            Err(FrameError::BadPayloadLength { trid: None })
        );
        assert_eq!(
            frames(b"MSG 1 A 99999999999999999999\r\n"),
            Err(FrameError::BadPayloadLength { trid: Some(1) })
        );
    }

    #[test]
    fn only_msg_has_a_payload() {
        let f = frames(b"MSGX 1 2\r\nmsg 1 U 3\r\n").unwrap();
        assert!(f.iter().all(|f| f.payload.is_none()));
    }
}

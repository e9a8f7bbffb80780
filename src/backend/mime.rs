//! MSN message payloads (MIME headers, a blank line, the body) to and from what backends
//! carry: plain text and typing notifications.

use bytes::Bytes;

/// What an MSN payload means to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A text message, decoded, with line breaks as `\n`.
    Text(String),
    /// `text/x-msmsgscontrol` with a `TypingUser` header.
    Typing,
    /// Anything else (invitations, unknown types): nothing a backend can carry.
    Other(String),
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// Reads an MSN payload. The body is decoded by the Content-Type's charset: UTF-8 when it
/// says so (or when it says nothing and the bytes are valid UTF-8), otherwise as Latin-1,
/// the Windows code page MSN 1.0 used for plain `text/plain`.
pub fn parse(payload: &[u8]) -> Payload {
    let split = payload.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (&payload[..i], &payload[i + 4..]),
        None => (payload, &b""[..]),
    };
    let headers = String::from_utf8_lossy(head);
    let content_type = header(&headers, "Content-Type")
        .unwrap_or("text/plain")
        .to_ascii_lowercase();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    match mime.as_str() {
        "text/plain" => {
            let utf8 = content_type.contains("charset=utf-8") || !content_type.contains("charset");
            let text = match (utf8, std::str::from_utf8(body)) {
                (true, Ok(s)) => s.to_string(),
                _ => body.iter().map(|&b| b as char).collect(),
            };
            Payload::Text(text.replace("\r\n", "\n"))
        }
        "text/x-msmsgscontrol" if header(&headers, "TypingUser").is_some() => Payload::Typing,
        other => Payload::Other(other.to_string()),
    }
}

/// The most text one MSN message from a backend carries: what MSN clients of the time show in
/// one message comfortably, well inside every client's payload limit.
pub const TEXT_PER_MESSAGE: usize = 1400;
/// The most messages one text from a backend becomes; the rest is cut with a note.
pub const MAX_PARTS: usize = 32;

/// The MSN payloads for a text from a backend: one, or for a long text several, each at most
/// [`TEXT_PER_MESSAGE`] bytes of text, split at line ends or spaces where possible (never
/// inside a character). Past [`MAX_PARTS`] the text is cut, and the last message says how
/// much was left out: a contact pasting a novel must not flood the user's connection.
pub fn texts(text: &str) -> Vec<Bytes> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if parts.len() == MAX_PARTS {
            let note = format!("[{} more bytes of this message were not shown]", rest.len());
            parts.push(self::text(&note));
            break;
        }
        let cut = split_point(rest, TEXT_PER_MESSAGE);
        parts.push(self::text(&rest[..cut]));
        rest = &rest[cut..];
    }
    if parts.is_empty() {
        parts.push(self::text(""));
    }
    parts
}

/// Where to end a part of at most `max` bytes: after the last line end or space in its second
/// half, or else at the last character boundary.
fn split_point(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let window = &text[..end];
    match window.rfind(['\n', ' ']) {
        Some(i) if i + 1 > end / 2 => i + 1,
        _ => end,
    }
}

/// The MSN payload for a text from a backend.
pub fn text(text: &str) -> Bytes {
    let body = text.replace("\r\n", "\n").replace('\n', "\r\n");
    Bytes::from(format!(
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{body}"
    ))
}

/// The MSN payload saying that `handle` is typing.
pub fn typing(handle: &str) -> Bytes {
    Bytes::from(format!("MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: {handle}\r\n\r\n\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_with_line_breaks_and_utf8() {
        let p = text("Grüße\naus 1999 ☺");
        assert_eq!(parse(&p), Payload::Text("Grüße\naus 1999 ☺".into()));
        assert!(String::from_utf8(p.to_vec())
            .unwrap()
            .ends_with("Grüße\r\naus 1999 ☺"));
    }

    #[test]
    fn charsets() {
        let latin1 = b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nGr\xfc\xdfe";
        assert_eq!(parse(latin1), Payload::Text("Grüße".into()));
        let declared =
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nh\xc3\xa9";
        assert_eq!(parse(declared), Payload::Text("hé".into()));
        let other = b"Content-Type: text/plain; charset=ISO-8859-1\r\n\r\n\xe9t\xe9";
        assert_eq!(parse(other), Payload::Text("été".into()));
        let no_headers = b"just text";
        assert_eq!(parse(no_headers), Payload::Text(String::new()));
    }

    #[test]
    fn typing_and_other_types() {
        assert_eq!(parse(&typing("a@b.c")), Payload::Typing);
        let invite = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite; charset=UTF-8\r\n\r\nInvitation-Command: INVITE\r\n";
        assert_eq!(parse(invite), Payload::Other("text/x-msmsgsinvite".into()));
    }

    #[test]
    fn a_long_text_becomes_several_messages_and_a_huge_one_is_cut_with_a_note() {
        let short = texts("hello");
        assert_eq!(short.len(), 1);
        let line = "éé word ".repeat(1000); // 10,000 bytes, two-byte characters included
        let parts = texts(&line);
        assert!(parts.len() > 1);
        let mut joined = String::new();
        for p in &parts {
            let Payload::Text(t) = parse(p) else {
                panic!("not text")
            };
            assert!(t.len() <= TEXT_PER_MESSAGE, "{}", t.len());
            joined.push_str(&t);
        }
        assert_eq!(joined, line);
        let novel = "x".repeat(300 * 1024);
        let parts = texts(&novel);
        assert_eq!(parts.len(), MAX_PARTS + 1);
        let Payload::Text(last) = parse(parts.last().unwrap()) else {
            panic!("not text")
        };
        let left = 300 * 1024 - MAX_PARTS * TEXT_PER_MESSAGE;
        assert_eq!(
            last,
            format!("[{left} more bytes of this message were not shown]")
        );
    }
}

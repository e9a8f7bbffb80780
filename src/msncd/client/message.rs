//! MSG payloads: the MIME text msncd sends for a script, and incoming ones as events.

use super::Event;
use crate::protocol::UserHandle;

/// The MIME payload msncd sends for a script's lines.
pub fn text_payload(lines: &[String]) -> Vec<u8> {
    let mut payload =
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n".to_vec();
    payload.extend_from_slice(lines.join("\r\n").as_bytes());
    payload
}

/// An incoming MSG as an event: text as `MSG`, typing notifications as `TYPING`, anything
/// else (client capabilities, invitations) not at all.
pub(super) fn incoming_message(from: UserHandle, payload: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(payload);
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    let blank = lines.iter().position(|l| l.is_empty());
    let headers = &lines[..blank.unwrap_or(lines.len())];
    let content_type = headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "text/plain".into());
    if content_type.starts_with("text/x-msmsgscontrol") {
        return Some(Event::Typing(from));
    }
    if !content_type.starts_with("text/plain") {
        return None;
    }
    let end_of_header = blank.map_or(lines.len(), |b| b + 1);
    Some(Event::Message {
        from,
        lines,
        end_of_header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> UserHandle {
        "bob@example.com".parse().unwrap()
    }

    #[test]
    fn text_messages_keep_their_lines_and_header_end() {
        let payload = text_payload(&["héllo".into(), "".into(), "two".into()]);
        let Some(Event::Message {
            lines,
            end_of_header,
            ..
        }) = incoming_message(bob(), &payload)
        else {
            panic!("not a message");
        };
        assert_eq!(end_of_header, 3);
        assert_eq!(&lines[end_of_header..], ["héllo", "", "two"]);
        assert_eq!(lines[1], "Content-Type: text/plain; charset=UTF-8");
    }

    #[test]
    fn typing_and_other_payloads() {
        let typing = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: bob@example.com\r\n\r\n\r\n";
        assert_eq!(incoming_message(bob(), typing), Some(Event::Typing(bob())));
        let caps =
            b"MIME-Version: 1.0\r\nContent-Type: text/x-clientcaps\r\n\r\nClient-Name: x\r\n";
        assert_eq!(incoming_message(bob(), caps), None);
    }
}

//! The reversible mapping between Matrix ids (users, rooms) and MSN handles.
//!
//! A user `@local:server` becomes `escape(local)@server`. Escaping keeps ASCII lower-case
//! letters, digits, `.`, `_` and `-`, and writes every other byte as `+hh` (two lower-case
//! hex digits), `+` itself included, so that `@alice:example.org` is plainly
//! `alice@example.org` and `@Bob=1:example.org` is `+42ob+3d1@example.org`.
//!
//! MSN domains can't hold a port, so a server name `host:port` puts `:port` into the escaped
//! local part: `@alice:example.org:8448` is `alice+3a8448@example.org`. A Matrix localpart
//! never contains `:`, so the first escaped `:` always starts the port.
//!
//! A room `!opaque:server` becomes `+room.escape(opaque)@server` (port handled the same way).
//! No user can map to it: escaping writes `+` only as `+hh`, and `+r` is no hex digit. Room ids
//! without a server part (room version 12) use the reserved domain `matrix.invalid`.
//!
//! Limits (such ids get no handle and are ignored): server names with upper-case letters or
//! IPv6 literals, and ids whose handle would exceed 129 bytes.

/// The longest handle msngate accepts (`UserHandle` in the core).
pub const MAX_HANDLE_BYTES: usize = 129;

/// The local-part prefix of every room handle.
const ROOM_PREFIX: &str = "+room.";

/// The domain of rooms whose id names no server (room version 12).
const SERVERLESS_DOMAIN: &str = "matrix.invalid";

fn is_plain(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02x}"));
        }
    }
    out
}

/// The inverse of [`escape`], accepting only its canonical output.
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|h| h.is_ascii_digit() || (b'a'..=b'f').contains(&h))
            {
                return None;
            }
            let value = u8::from_str_radix(hex, 16).ok()?;
            if is_plain(value) {
                return None;
            }
            out.push(value);
            i += 3;
        } else if is_plain(b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// Splits a server name into an MSN domain and an optional port.
fn split_server(server: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (server, None),
    };
    if let Some(port) = port {
        let canonical = port.parse::<u16>().ok().filter(|p| *p > 0)?.to_string();
        if canonical != port {
            return None;
        }
    }
    let domain_ok = !host.is_empty()
        && !host.starts_with('.')
        && !host.ends_with('.')
        && !host.contains("..")
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-".contains(&b));
    domain_ok.then_some((host, port))
}

/// `local` with `:port` appended when there is one, escaped, then `@domain`.
fn join(prefix: &str, local: &str, server: &str) -> Option<String> {
    if local.is_empty() {
        return None;
    }
    let (domain, port) = split_server(server)?;
    let mut raw = local.to_owned();
    if let Some(port) = port {
        raw.push(':');
        raw.push_str(port);
    }
    let handle = format!("{prefix}{}@{domain}", escape(&raw));
    (handle.len() <= MAX_HANDLE_BYTES).then_some(handle)
}

/// Undoes [`join`]: (local part, server name).
fn split(escaped_local: &str, domain: &str) -> Option<(String, String)> {
    let raw = unescape(escaped_local)?;
    let (local, server) = match raw.split_once(':') {
        Some((local, port)) => (local.to_owned(), format!("{domain}:{port}")),
        None => (raw, domain.to_owned()),
    };
    Some((local, server))
}

/// The handle of a Matrix user id (`@alice:example.org` -> `alice@example.org`).
pub fn handle_for_user(user_id: &str) -> Option<String> {
    let rest = user_id.strip_prefix('@')?;
    let (local, server) = rest.split_once(':')?;
    join("", local, server)
}

/// The Matrix user id of a handle, if it is a user's handle.
pub fn user_for_handle(handle: &str) -> Option<String> {
    let (local, domain) = handle.rsplit_once('@')?;
    if local.starts_with(ROOM_PREFIX) {
        return None;
    }
    let (local, server) = split(local, domain)?;
    let user = format!("@{local}:{server}");
    // Only canonical handles map back: this rejects ports like `+3a08448`.
    (handle_for_user(&user).as_deref() == Some(handle)).then_some(user)
}

/// The handle of a Matrix room id (`!abc:example.org` -> `+room.abc@example.org`).
pub fn handle_for_room(room_id: &str) -> Option<String> {
    let rest = room_id.strip_prefix('!')?;
    match rest.split_once(':') {
        Some((opaque, server)) => join(ROOM_PREFIX, opaque, server),
        None if !rest.is_empty() => {
            let handle = format!("{ROOM_PREFIX}{}@{SERVERLESS_DOMAIN}", escape(rest));
            (handle.len() <= MAX_HANDLE_BYTES).then_some(handle)
        }
        None => None,
    }
}

/// The Matrix room id of a handle, if it is a room's handle.
pub fn room_for_handle(handle: &str) -> Option<String> {
    let (local, domain) = handle.rsplit_once('@')?;
    let local = local.strip_prefix(ROOM_PREFIX)?;
    let room = if domain == SERVERLESS_DOMAIN {
        format!("!{}", unescape(local)?)
    } else {
        let (opaque, server) = split(local, domain)?;
        format!("!{opaque}:{server}")
    };
    (handle_for_room(&room).as_deref() == Some(handle)).then_some(room)
}

/// Whether a handle names a room rather than a person.
pub fn is_room_handle(handle: &str) -> bool {
    handle.starts_with(ROOM_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of msngate's `UserHandle`.
    fn valid_msn_handle(h: &str) -> bool {
        let Some((local, domain)) = h.split_once('@') else {
            return false;
        };
        h.len() <= MAX_HANDLE_BYTES
            && h == h.to_ascii_lowercase()
            && !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
    }

    #[test]
    fn plain_users_map_plainly() {
        assert_eq!(
            handle_for_user("@alice:example.org").as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(
            handle_for_user("@bob.smith_1-x:localhost").as_deref(),
            Some("bob.smith_1-x@localhost")
        );
    }

    #[test]
    fn users_round_trip() {
        for user in [
            "@alice:example.org",
            "@Bob=1:example.org",
            "@a/b+c=d:example.org",
            "@alice:example.org:8448",
            "@x:127.0.0.1:8008",
            "@grüße:example.org",
            "@room.x:example.org",
            "@+room.x:example.org",
        ] {
            let handle = handle_for_user(user).unwrap_or_else(|| panic!("{user}"));
            assert!(valid_msn_handle(&handle), "{user} -> {handle}");
            assert!(!is_room_handle(&handle), "{handle}");
            assert_eq!(user_for_handle(&handle).as_deref(), Some(user), "{handle}");
            assert_eq!(room_for_handle(&handle), None, "{handle}");
        }
        assert_eq!(
            handle_for_user("@Bob=1:example.org").as_deref(),
            Some("+42ob+3d1@example.org")
        );
        assert_eq!(
            handle_for_user("@alice:example.org:8448").as_deref(),
            Some("alice+3a8448@example.org")
        );
    }

    #[test]
    fn rooms_round_trip_and_never_look_like_users() {
        for room in [
            "!AbCdEfGh:localhost",
            "!abc:example.org:8448",
            "!OGEhHVWSdvArJzumhm:matrix.org",
            "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",
        ] {
            let handle = handle_for_room(room).unwrap_or_else(|| panic!("{room}"));
            assert!(valid_msn_handle(&handle), "{room} -> {handle}");
            assert!(is_room_handle(&handle));
            assert_eq!(room_for_handle(&handle).as_deref(), Some(room), "{handle}");
            assert_eq!(user_for_handle(&handle), None, "{handle}");
        }
        assert_eq!(
            handle_for_room("!abc:localhost").as_deref(),
            Some("+room.abc@localhost")
        );
    }

    #[test]
    fn invalid_ids_have_no_handle() {
        for id in [
            "",
            "alice:example.org",
            "@alice",
            "@:example.org",
            "@alice:",
            "@alice:Example.org",
            "@alice:[::1]:8448",
            "@alice:example.org:0",
            "@alice:example.org:08448",
            "@alice:example.org:99999",
            "@alice:.example.org",
            "@alice:example..org",
        ] {
            assert_eq!(handle_for_user(id), None, "{id}");
        }
        let long = format!("@{}:example.org", "A".repeat(60));
        assert_eq!(handle_for_user(&long), None);
        assert_eq!(handle_for_room("!:example.org"), None);
        assert_eq!(handle_for_room("!"), None);
        assert_eq!(handle_for_room("@alice:example.org"), None);
    }

    #[test]
    fn invalid_handles_have_no_id() {
        for handle in [
            "",
            "alice",
            "alice@",
            "+61lice@example.org", // 'a' escaped: not canonical
            "+2@example.org",
            "+zz@example.org",
            "+4A@example.org", // upper-case hex
            "Alice@example.org",
            "alice+3a08448@example.org",
            "alice+3a@example.org",
            "+room.abc@example.org@x",
        ] {
            assert_eq!(user_for_handle(handle), None, "{handle}");
        }
        assert_eq!(room_for_handle("alice@example.org"), None);
        assert_eq!(room_for_handle("+room.+61@example.org"), None);
        assert_eq!(room_for_handle("+room.@example.org"), None);
    }
}

//! Reversible mapping between bare JIDs and MSN handles.
//!
//! A bare JID that is already a valid MSN handle (lower-case ASCII `local@domain`, local part
//! of letters, digits and `. _ -`, domain of letters, digits, `.` and `-`, at most 129 bytes)
//! is used as it is. Otherwise every other byte of the local part is written `+hh` (lower-case
//! hex of the UTF-8 byte), so `x%y@example.org` is `x+25y@example.org`; a `+` is
//! itself escaped, which keeps the mapping reversible. JIDs without a local part, with a
//! domain outside that alphabet (internationalized domains), or whose handle would exceed 129
//! bytes have no handle and are not shown (a log line says so).

use tokio_xmpp::jid::BareJid;

const MAX_HANDLE: usize = 129;

fn domain_ok(domain: &str) -> bool {
    !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

fn plain(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
}

/// The MSN handle for a bare JID, if it has one.
pub fn handle_for(jid: &BareJid) -> Option<String> {
    let local = jid.node()?.as_str().to_lowercase();
    escaped(&local, jid.domain().as_str())
}

/// The handle of a group chat occupant, `room/nick` escaped as a local part: `lounge+2fbob@
/// conference.example.org` is Bob in lounge@conference.example.org. No JID has a `/` in its
/// local part, so occupants never collide with people; they are for display only.
pub fn occupant_handle(room: &BareJid, nick: &str) -> Option<String> {
    let local = format!("{}/{}", room.node()?.as_str().to_lowercase(), nick);
    escaped(&local, room.domain().as_str())
}

fn escaped(local: &str, domain: &str) -> Option<String> {
    let domain = domain.to_lowercase();
    if local.is_empty() || !domain_ok(&domain) {
        return None;
    }
    let mut out = String::with_capacity(local.len() + domain.len() + 1);
    for b in local.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02x}"));
        }
    }
    out.push('@');
    out.push_str(&domain);
    (out.len() <= MAX_HANDLE).then_some(out)
}

/// The bare JID an MSN handle stands for, if it is one this mapping produces.
pub fn jid_for(handle: &str) -> Option<BareJid> {
    let (local, domain) = handle.split_once('@')?;
    if local.is_empty() || !domain_ok(domain) {
        return None;
    }
    let mut bytes = Vec::with_capacity(local.len());
    let mut rest = local.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'+' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            if hex.bytes().any(|h| h.is_ascii_uppercase()) {
                return None;
            }
            let decoded = u8::from_str_radix(hex, 16).ok()?;
            if plain(decoded) || decoded.is_ascii_uppercase() {
                return None; // Not produced by `handle_for`: keep the mapping one-to-one.
            }
            bytes.push(decoded);
            rest = &tail[2..];
        } else if plain(b) {
            bytes.push(b);
            rest = tail;
        } else {
            return None;
        }
    }
    let local = String::from_utf8(bytes).ok()?;
    BareJid::new(&format!("{local}@{domain}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    #[test]
    fn plain_jids_are_their_own_handles() {
        assert_eq!(
            handle_for(&jid("bob@example.org")).as_deref(),
            Some("bob@example.org")
        );
        assert_eq!(
            handle_for(&jid("Bob@Example.ORG")).as_deref(),
            Some("bob@example.org")
        );
        assert_eq!(jid_for("bob@example.org"), Some(jid("bob@example.org")));
    }

    #[test]
    fn other_jids_are_escaped_reversibly() {
        for s in [
            "o'brien@example.org",
            "a+b@example.org",
            "jörg@example.org",
            "x%y@e.org",
            "ünïcødé@e.org",
            "a*b@e.org",
        ] {
            let Ok(j) = BareJid::new(s) else {
                continue; // Not a JID at all under the JID profile: nothing to map.
            };
            let h = handle_for(&j).unwrap_or_else(|| panic!("{s}"));
            assert!(h.bytes().all(|b| b.is_ascii() && b != b' '), "{h}");
            assert_eq!(jid_for(&h), Some(j), "{s} -> {h}");
        }
        assert_eq!(
            handle_for(&jid("x%y@e.org")).as_deref(),
            Some("x+25y@e.org")
        );
        assert_eq!(
            handle_for(&jid("a+b@example.org")).as_deref(),
            Some("a+2bb@example.org")
        );
    }

    #[test]
    fn occupants() {
        let room = jid("lounge@conference.example.org");
        assert_eq!(
            occupant_handle(&room, "Bob").as_deref(),
            Some("lounge+2f+42ob@conference.example.org")
        );
        assert_eq!(
            occupant_handle(&room, "bob").as_deref(),
            Some("lounge+2fbob@conference.example.org")
        );
        // Not a person's handle: it maps back to no JID.
        assert_eq!(jid_for("lounge+2fbob@conference.example.org"), None);
    }

    #[test]
    fn jids_and_nicks_of_any_length_map_to_valid_handles_or_none() {
        // Up to the JID limits (1023 bytes per part), plain and escaped, and nicks of any
        // length: a handle is at most 129 bytes of the MSN alphabet, or there is none.
        for n in [1, 50, 100, 119, 120, 121, 129, 200, 1023] {
            for local in ["a".repeat(n), "ü".repeat(n / 2 + 1), "a+".repeat(n / 2 + 1)] {
                let Ok(j) = BareJid::new(&format!("{local}@example.org")) else {
                    continue;
                };
                if let Some(h) = handle_for(&j) {
                    assert!(h.len() <= MAX_HANDLE, "{} bytes", h.len());
                    assert!(h.bytes().all(|b| b.is_ascii_graphic()), "{h}");
                    assert_eq!(jid_for(&h), Some(j));
                }
            }
            let room = jid("lounge@conference.example.org");
            if let Some(h) = occupant_handle(&room, &"Ö".repeat(n)) {
                assert!(h.len() <= MAX_HANDLE, "{} bytes", h.len());
            }
        }
        let longest = format!("{}@example.org", "a".repeat(MAX_HANDLE - 12));
        assert_eq!(
            handle_for(&jid(&longest)).map(|h| h.len()),
            Some(MAX_HANDLE)
        );
        let too_long = format!("{}@example.org", "a".repeat(MAX_HANDLE - 11));
        assert_eq!(handle_for(&jid(&too_long)), None);
        let domain = format!("bob@{}.org", "d".repeat(1000));
        if let Ok(j) = BareJid::new(&domain) {
            assert_eq!(handle_for(&j), None);
        }
        assert_eq!(
            occupant_handle(&jid("r@c.example.org"), &"n".repeat(5000)),
            None
        );
    }

    #[test]
    fn unmappable_jids() {
        assert_eq!(handle_for(&jid("example.org")), None);
        assert_eq!(handle_for(&jid("bob@exämple.org")), None);
        let long = format!("{}@example.org", "a".repeat(120));
        assert_eq!(handle_for(&jid(&long)), None);
        assert_eq!(
            jid_for("a+41@example.org"),
            None,
            "an escaped upper-case byte is not ours"
        );
        assert_eq!(
            jid_for("a+61@example.org"),
            None,
            "an escaped plain byte is not ours"
        );
        assert_eq!(jid_for("a+4@example.org"), None);
        assert_eq!(jid_for("a+ZZ@example.org"), None);
        assert_eq!(jid_for("nodomain"), None);
    }
}

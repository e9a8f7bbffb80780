//! MSN states and XMPP presence, both ways; see docs/bridges/xmpp.md for the table.

use msngate_bridge_api::PresenceState;
use tokio_xmpp::parsers::presence::Show;

/// The show and status text that stand for an MSN state; `None` for HDN and FLN, which are
/// unavailable presence.
pub fn to_xmpp(state: PresenceState) -> Option<(Option<Show>, Option<&'static str>)> {
    Some(match state {
        PresenceState::Online => (None, None),
        PresenceState::Busy => (Some(Show::Dnd), Some("Busy")),
        PresenceState::Idle => (Some(Show::Away), Some("Idle")),
        PresenceState::BeRightBack => (Some(Show::Away), Some("Be Right Back")),
        PresenceState::Away => (Some(Show::Away), Some("Away")),
        PresenceState::OnThePhone => (Some(Show::Away), Some("On the Phone")),
        PresenceState::OutToLunch => (Some(Show::Xa), Some("Out to Lunch")),
        PresenceState::Hidden | PresenceState::Offline => return None,
    })
}

/// The MSN state for an available XMPP presence. The status text picks the MSN sub-state
/// when it is one of ours (so MSN states round-trip), otherwise the show decides.
pub fn from_xmpp(show: Option<&Show>, status: Option<&str>) -> PresenceState {
    let status = status.map(|s| s.trim().to_ascii_lowercase());
    match (show, status.as_deref()) {
        (Some(Show::Away) | Some(Show::Xa) | Some(Show::Dnd), Some("be right back")) => {
            PresenceState::BeRightBack
        }
        (Some(Show::Away) | Some(Show::Xa) | Some(Show::Dnd), Some("on the phone")) => {
            PresenceState::OnThePhone
        }
        (Some(Show::Away) | Some(Show::Xa), Some("out to lunch")) => PresenceState::OutToLunch,
        (Some(Show::Away), Some("idle")) => PresenceState::Idle,
        (None | Some(Show::Chat), _) => PresenceState::Online,
        (Some(Show::Dnd), _) => PresenceState::Busy,
        (Some(Show::Away), _) => PresenceState::Away,
        (Some(Show::Xa), _) => PresenceState::Away,
    }
}

/// How available a state is, to combine several resources of one contact: the
/// highest-priority resource wins, and among equals the most available one.
pub fn availability(state: PresenceState) -> u8 {
    match state {
        PresenceState::Online => 7,
        PresenceState::Idle => 6,
        PresenceState::BeRightBack => 5,
        PresenceState::Away => 4,
        PresenceState::OutToLunch => 3,
        PresenceState::OnThePhone => 2,
        PresenceState::Busy => 1,
        PresenceState::Hidden | PresenceState::Offline => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msn_states_round_trip() {
        for state in PresenceState::VISIBLE {
            let (show, status) = to_xmpp(state).unwrap();
            assert_eq!(from_xmpp(show.as_ref(), status), state, "{state:?}");
        }
        assert_eq!(to_xmpp(PresenceState::Hidden), None);
    }

    #[test]
    fn plain_xmpp_presence() {
        assert_eq!(from_xmpp(None, Some("working")), PresenceState::Online);
        assert_eq!(from_xmpp(Some(&Show::Chat), None), PresenceState::Online);
        assert_eq!(
            from_xmpp(Some(&Show::Dnd), Some("meeting")),
            PresenceState::Busy
        );
        assert_eq!(from_xmpp(Some(&Show::Xa), None), PresenceState::Away);
        assert_eq!(
            from_xmpp(Some(&Show::Away), Some("Be right back")),
            PresenceState::BeRightBack
        );
    }
}

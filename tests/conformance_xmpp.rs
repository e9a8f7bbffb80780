//! The backend conformance suite (tests/conformance) against the XMPP backend, a real Prosody
//! and an independent XMPP client as the contact, and the MSN-level
//! suite (tests/conformance/msn.rs): an MSN client whose account msngate links to the XMPP
//! account. The glue is shared with conformance_ejabberd.rs (tests/xmpp_network).
#![cfg(feature = "xmpp")]

mod common;
mod conformance;
mod support;
mod xmpp_network;

use support::prosody::Prosody;
use xmpp_network::{Xmpp, XmppServed};

conformance_suite!(Xmpp<Prosody>);

msn_conformance_suite!(XmppServed<Prosody>);

//! Wire types of MSNP2-MSNP7: transaction ids, user handles, friendly names, states, lists,
//! dialects, phone numbers and contact groups.
//!
//! Every type parses from its wire form with `FromStr` and prints its wire form with `Display`,
//! so a value read from a client can be written back unchanged.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// The longest user handle the draft allows (section 5.4).
pub const MAX_HANDLE_BYTES: usize = 129;
/// The longest URL-encoded friendly name the draft allows (section 5.5).
pub const MAX_ENCODED_NAME_BYTES: usize = 387;

/// A transaction id: a decimal number between 0 and 2^32-1 (draft section 5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TrId(pub u32);

impl FromStr for TrId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        // `u32::from_str` accepts a leading '+', which is not a decimal number on the wire.
        if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        s.parse().map(TrId).map_err(|_| ())
    }
}

impl fmt::Display for TrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A user handle: an e-mail-like account name, kept in lower case.
///
/// MSN treated handles case-insensitively, so `Alice@Example.com` and `alice@example.com` are
/// the same account; the lower-case form is the one stored and sent.
///
/// Shared, not copied: a logged-in user's handle is held by the hub, the backend session and
/// the connection, and is cloned into every line about the user, so a clone is a reference
/// count rather than an allocation (docs/PERFORMANCE.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserHandle(std::sync::Arc<str>);

/// Why a string is not a valid user handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("a handle is at most {MAX_HANDLE_BYTES} bytes")]
    TooLong,
    #[error("a handle looks like an e-mail address: name@domain")]
    NotEmailLike,
    #[error("a handle may only contain letters, digits and . _ - + characters besides '@'")]
    BadCharacter,
}

impl UserHandle {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserHandle {
    type Err = HandleError;

    fn from_str(s: &str) -> Result<Self, HandleError> {
        if s.len() > MAX_HANDLE_BYTES {
            return Err(HandleError::TooLong);
        }
        let (local, domain) = s.split_once('@').ok_or(HandleError::NotEmailLike)?;
        if local.is_empty()
            || domain.is_empty()
            || domain.contains('@')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(HandleError::NotEmailLike);
        }
        let local_ok = local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
        let domain_ok = domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b));
        if !local_ok || !domain_ok {
            return Err(HandleError::BadCharacter);
        }
        Ok(UserHandle(
            match s.bytes().any(|b| b.is_ascii_uppercase()) {
                true => s.to_ascii_lowercase().into(),
                false => s.into(),
            },
        ))
    }
}

impl fmt::Display for UserHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bytes that are URL-encoded in friendly names: controls, space, '%' and everything outside
/// 7-bit ASCII (the encoder handles the latter by itself).
const NAME_ENCODE_SET: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'\t');

/// A friendly ("custom user") name, kept decoded; URL-encoded only on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FriendlyName(String);

/// Why a wire string is not a valid friendly name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a friendly name is at most {MAX_ENCODED_NAME_BYTES} bytes URL-encoded")]
    TooLong,
    #[error("a friendly name must not be empty")]
    Empty,
    #[error("a friendly name must be URL-encoded UTF-8 without control characters")]
    BadEncoding,
}

impl FriendlyName {
    /// Builds a name from its decoded text, checking the same limits as the wire form.
    pub fn new(text: &str) -> Result<Self, NameError> {
        let name = FriendlyName(text.to_owned());
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if text.chars().any(char::is_control) {
            return Err(NameError::BadEncoding);
        }
        if name.to_string().len() > MAX_ENCODED_NAME_BYTES {
            return Err(NameError::TooLong);
        }
        Ok(name)
    }

    /// A name from another network, made to fit: control characters become spaces and the
    /// text is cut (at a character boundary) until its wire form fits. `None` if nothing is
    /// left.
    pub fn shortened(text: &str) -> Option<Self> {
        let cleaned: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut name = cleaned.trim();
        loop {
            if name.is_empty() {
                return None;
            }
            let candidate = FriendlyName(name.to_owned());
            let encoded = candidate.to_string().len();
            if encoded <= MAX_ENCODED_NAME_BYTES {
                return Some(candidate);
            }
            // Each character takes at most 12 encoded bytes (4 bytes, each %XX): cut by at
            // least the excess over that, and by one character at the very least.
            let excess = (encoded - MAX_ENCODED_NAME_BYTES).div_ceil(12).max(1);
            let keep = name.chars().count().saturating_sub(excess);
            let end = name.char_indices().nth(keep).map_or(0, |(i, _)| i);
            name = &name[..end];
        }
    }

    /// The decoded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name a new account gets when none is given: its handle, as MSN did.
    pub fn from_handle(handle: &UserHandle) -> Self {
        FriendlyName(handle.as_str().to_owned())
    }
}

impl FromStr for FriendlyName {
    type Err = NameError;

    /// Parses the URL-encoded wire form.
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.len() > MAX_ENCODED_NAME_BYTES {
            return Err(NameError::TooLong);
        }
        let decoded = percent_decode_str(s)
            .decode_utf8()
            .map_err(|_| NameError::BadEncoding)?;
        FriendlyName::new(&decoded)
    }
}

impl fmt::Display for FriendlyName {
    /// Writes the URL-encoded wire form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", utf8_percent_encode(&self.0, NAME_ENCODE_SET))
    }
}

/// An MSN online state (draft section 7.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Online,
    Busy,
    Idle,
    BeRightBack,
    Away,
    OnThePhone,
    OutToLunch,
    Hidden,
    Offline,
}

impl Status {
    /// Every state, in the draft's order.
    pub const ALL: [Status; 9] = [
        Status::Online,
        Status::Busy,
        Status::Idle,
        Status::BeRightBack,
        Status::Away,
        Status::OnThePhone,
        Status::OutToLunch,
        Status::Hidden,
        Status::Offline,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Status::Online => "NLN",
            Status::Busy => "BSY",
            Status::Idle => "IDL",
            Status::BeRightBack => "BRB",
            Status::Away => "AWY",
            Status::OnThePhone => "PHN",
            Status::OutToLunch => "LUN",
            Status::Hidden => "HDN",
            Status::Offline => "FLN",
        }
    }

    /// Whether others can see this state at all: FLN and HDN both look offline.
    pub fn is_visible(self) -> bool {
        !matches!(self, Status::Hidden | Status::Offline)
    }
}

impl FromStr for Status {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Status::ALL.into_iter().find(|st| st.code() == s).ok_or(())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One of the four user lists (draft section 5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    Forward,
    Allow,
    Block,
    Reverse,
}

impl ListKind {
    /// The order in which SYN sends the lists (draft section 7.5).
    pub const SYNC_ORDER: [ListKind; 4] = [
        ListKind::Forward,
        ListKind::Allow,
        ListKind::Block,
        ListKind::Reverse,
    ];

    /// The list a contact can't be on at the same time: AL and BL exclude each other.
    pub fn opposite(self) -> Option<ListKind> {
        match self {
            ListKind::Allow => Some(ListKind::Block),
            ListKind::Block => Some(ListKind::Allow),
            ListKind::Forward | ListKind::Reverse => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ListKind::Forward => "FL",
            ListKind::Allow => "AL",
            ListKind::Block => "BL",
            ListKind::Reverse => "RL",
        }
    }
}

impl FromStr for ListKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        ListKind::SYNC_ORDER
            .into_iter()
            .find(|l| l.code() == s)
            .ok_or(())
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The GTC setting: what the client does when someone new appears on the RL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GtcSetting {
    /// Ask the user (the default).
    #[default]
    Ask,
    /// Add them to the AL without asking.
    NoAsk,
}

impl FromStr for GtcSetting {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "A" => Ok(GtcSetting::Ask),
            "N" => Ok(GtcSetting::NoAsk),
            _ => Err(()),
        }
    }
}

impl fmt::Display for GtcSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GtcSetting::Ask => "A",
            GtcSetting::NoAsk => "N",
        })
    }
}

/// The BLP privacy mode: who may see the user and call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BlpSetting {
    /// Everyone not on the BL (the default).
    #[default]
    AllowAll,
    /// Only those on the AL.
    BlockAll,
}

impl FromStr for BlpSetting {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "AL" => Ok(BlpSetting::AllowAll),
            "BL" => Ok(BlpSetting::BlockAll),
            _ => Err(()),
        }
    }
}

impl fmt::Display for BlpSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlpSetting::AllowAll => "AL",
            BlpSetting::BlockAll => "BL",
        })
    }
}

/// The longest phone number value (URL-encoded) `PRP` accepts (MSNP5; the protocol pages
/// give 95 bytes).
pub const MAX_PHONE_BYTES: usize = 95;
/// The longest group name (URL-encoded) `ADG`/`REG` accept; longer ones get 229. MSN 4.x
/// limited names to 61 characters; 61 bytes of the encoded form keeps every reply short.
pub const MAX_GROUP_NAME_BYTES: usize = 61;
/// The most groups one account may have, group 0 included; `ADG` past it gets 223.
pub const MAX_GROUPS: usize = 30;

/// A phone property (`PRP`/`BPR`, MSNP5): home, work and mobile numbers, whether the user
/// accepts pages on the mobile device (`MOB`), and whether one is set up (`MBE`, server-set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PhoneKey {
    Home,
    Work,
    Mobile,
    MobileAllowed,
    MobileEnabled,
}

impl PhoneKey {
    /// Every key in the order `SYN` sends them.
    pub const ALL: [PhoneKey; 5] = [
        PhoneKey::Home,
        PhoneKey::Work,
        PhoneKey::Mobile,
        PhoneKey::MobileAllowed,
        PhoneKey::MobileEnabled,
    ];

    pub fn code(self) -> &'static str {
        match self {
            PhoneKey::Home => "PHH",
            PhoneKey::Work => "PHW",
            PhoneKey::Mobile => "PHM",
            PhoneKey::MobileAllowed => "MOB",
            PhoneKey::MobileEnabled => "MBE",
        }
    }

    /// The value `SYN` shows while the key was never set: the yes/no keys say `N`.
    pub fn default_value(self) -> Option<&'static str> {
        match self {
            PhoneKey::MobileAllowed | PhoneKey::MobileEnabled => Some("N"),
            _ => None,
        }
    }
}

impl FromStr for PhoneKey {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        PhoneKey::ALL.into_iter().find(|k| k.code() == s).ok_or(())
    }
}

impl fmt::Display for PhoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A protocol dialect a connection negotiated with VER. Later dialects compare greater, so
/// "from MSNP5 on" is `dialect >= Dialect::Msnp5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dialect {
    Msnp2,
    Msnp3,
    Msnp4,
    Msnp5,
    Msnp6,
    Msnp7,
}

impl Dialect {
    /// Dialects this server speaks, best first.
    pub const SUPPORTED: [Dialect; 6] = [
        Dialect::Msnp7,
        Dialect::Msnp6,
        Dialect::Msnp5,
        Dialect::Msnp4,
        Dialect::Msnp3,
        Dialect::Msnp2,
    ];
    /// Every dialect, in the order of [`Dialect::index`].
    pub const ALL: [Dialect; 6] = [
        Dialect::Msnp2,
        Dialect::Msnp3,
        Dialect::Msnp4,
        Dialect::Msnp5,
        Dialect::Msnp6,
        Dialect::Msnp7,
    ];

    /// A small number for each dialect: its place in [`Dialect::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The dialect at `index` in [`Dialect::ALL`].
    pub fn from_index(index: usize) -> Option<Dialect> {
        Dialect::ALL.get(index).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Msnp2 => "MSNP2",
            Dialect::Msnp3 => "MSNP3",
            Dialect::Msnp4 => "MSNP4",
            Dialect::Msnp5 => "MSNP5",
            Dialect::Msnp6 => "MSNP6",
            Dialect::Msnp7 => "MSNP7",
        }
    }

    /// Picks the best dialect both sides speak; dialect names are case-insensitive.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str> + Clone) -> Option<Dialect> {
        Dialect::SUPPORTED.into_iter().find(|d| {
            offered
                .clone()
                .into_iter()
                .any(|o| o.eq_ignore_ascii_case(d.name()))
        })
    }

    /// The answer to a `VER` offering `offered`: the best dialect both sides speak, then the
    /// other offered dialects this server speaks in the client's order, and whether the
    /// client offered `CVR0` (gaim 0.63-0.68 looks for `MSNP5` in the answer, aMSN for
    /// `CVR0`). `None` when nothing offered is spoken here.
    pub fn answer<'a>(
        offered: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Option<(Dialect, Vec<Dialect>, bool)> {
        let chosen = Dialect::negotiate(offered.clone())?;
        let mut others = Vec::new();
        let mut cvr0 = false;
        for token in offered {
            if token.eq_ignore_ascii_case("CVR0") {
                cvr0 = true;
            } else if let Some(d) = Dialect::ALL
                .into_iter()
                .find(|d| token.eq_ignore_ascii_case(d.name()))
            {
                if d != chosen && !others.contains(&d) {
                    others.push(d);
                }
            }
        }
        Some((chosen, others, cvr0))
    }

    /// The dialect named exactly `name` (as a server writes it).
    pub fn from_name(name: &str) -> Option<Dialect> {
        Dialect::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a switchboard MSG wants to be acknowledged (draft section 8.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// U: no reply.
    Unacknowledged,
    /// N: NAK on failure only.
    NegativeOnly,
    /// A: ACK on delivery, NAK on failure.
    Acknowledged,
}

impl FromStr for AckMode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "U" => Ok(AckMode::Unacknowledged),
            "N" => Ok(AckMode::NegativeOnly),
            "A" => Ok(AckMode::Acknowledged),
            _ => Err(()),
        }
    }
}

impl fmt::Display for AckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckMode::Unacknowledged => "U",
            AckMode::NegativeOnly => "N",
            AckMode::Acknowledged => "A",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(wire: &str)
    where
        T: FromStr + fmt::Display,
        T::Err: fmt::Debug,
    {
        let value: T = wire.parse().unwrap();
        assert_eq!(value.to_string(), wire);
    }

    #[test]
    fn trid_bounds() {
        round_trip::<TrId>("0");
        round_trip::<TrId>("4294967295");
        assert!("4294967296".parse::<TrId>().is_err());
        assert!("+1".parse::<TrId>().is_err());
        assert!("-1".parse::<TrId>().is_err());
        assert!("".parse::<TrId>().is_err());
        assert!("1a".parse::<TrId>().is_err());
        assert!("00000000001".parse::<TrId>().is_err());
    }

    #[test]
    fn handles() {
        round_trip::<UserHandle>("alice@example.com");
        round_trip::<UserHandle>("first.last+tag@sub-domain.example.org");
        let h: UserHandle = "Alice@Example.COM".parse().unwrap();
        assert_eq!(h.as_str(), "alice@example.com");
        let long = format!("{}@example.com", "a".repeat(MAX_HANDLE_BYTES));
        assert_eq!(long.parse::<UserHandle>(), Err(HandleError::TooLong));
        let fits = format!("{}@e.com", "a".repeat(MAX_HANDLE_BYTES - 6));
        assert!(fits.parse::<UserHandle>().is_ok());
        for bad in [
            "alice",
            "@example.com",
            "alice@",
            "a@b@c",
            "a@.com",
            "a@b..c",
            "a@b.",
        ] {
            assert_eq!(
                bad.parse::<UserHandle>(),
                Err(HandleError::NotEmailLike),
                "{bad}"
            );
        }
        for bad in ["al ice@example.com", "al%ice@example.com", "ä@example.com"] {
            assert_eq!(
                bad.parse::<UserHandle>(),
                Err(HandleError::BadCharacter),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_from_other_networks_are_shortened_to_fit() {
        let long = "ü".repeat(1000);
        let name = FriendlyName::shortened(&long).unwrap();
        assert!(name.to_string().len() <= MAX_ENCODED_NAME_BYTES);
        assert!(long.starts_with(name.as_str()));
        assert_eq!(
            FriendlyName::shortened("a\nb\u{7}").unwrap().as_str(),
            "a b"
        );
        assert_eq!(FriendlyName::shortened(" \t "), None);
        assert_eq!(FriendlyName::shortened("Bob").unwrap().as_str(), "Bob");
    }

    #[test]
    fn friendly_names() {
        round_trip::<FriendlyName>("Alice");
        round_trip::<FriendlyName>("Auntie%20Em");
        round_trip::<FriendlyName>("J%C3%BCrgen%20%E2%98%BA");
        let n: FriendlyName = "Auntie%20Em".parse().unwrap();
        assert_eq!(n.as_str(), "Auntie Em");
        assert_eq!(
            FriendlyName::new("100% sure").unwrap().to_string(),
            "100%25%20sure"
        );
        // Clients that leave safe characters encoded are understood all the same.
        let n: FriendlyName = "%41lice".parse().unwrap();
        assert_eq!(n.as_str(), "Alice");
        assert_eq!("%FF".parse::<FriendlyName>(), Err(NameError::BadEncoding));
        assert_eq!("a%0Ab".parse::<FriendlyName>(), Err(NameError::BadEncoding));
        assert_eq!("".parse::<FriendlyName>(), Err(NameError::Empty));
        let long = "a".repeat(MAX_ENCODED_NAME_BYTES + 1);
        assert_eq!(long.parse::<FriendlyName>(), Err(NameError::TooLong));
        // The bound is on the encoded form: 130 characters of 3-byte UTF-8 encode to 1170.
        assert_eq!(FriendlyName::new(&"☺".repeat(130)), Err(NameError::TooLong));
    }

    #[test]
    fn states_lists_settings() {
        for s in Status::ALL {
            round_trip::<Status>(s.code());
        }
        assert!("nln".parse::<Status>().is_err());
        assert!(!Status::Hidden.is_visible() && !Status::Offline.is_visible());
        assert!(Status::Busy.is_visible());
        for l in ListKind::SYNC_ORDER {
            round_trip::<ListKind>(l.code());
        }
        assert!("XL".parse::<ListKind>().is_err());
        round_trip::<GtcSetting>("A");
        round_trip::<GtcSetting>("N");
        assert!("X".parse::<GtcSetting>().is_err());
        round_trip::<BlpSetting>("AL");
        round_trip::<BlpSetting>("BL");
        assert!("FL".parse::<BlpSetting>().is_err());
        for m in ["U", "N", "A"] {
            round_trip::<AckMode>(m);
        }
        assert!("B".parse::<AckMode>().is_err());
    }

    #[test]
    fn dialect_negotiation() {
        assert_eq!(Dialect::negotiate(["MSNP2", "CVR0"]), Some(Dialect::Msnp2));
        assert_eq!(Dialect::negotiate(["msnp2"]), Some(Dialect::Msnp2));
        assert_eq!(Dialect::negotiate(["MSNP8", "CVR0"]), None);
        let all = ["MSNP7", "MSNP6", "MSNP5", "MSNP4", "CVR0"];
        assert_eq!(Dialect::negotiate(all), Some(Dialect::Msnp7));
        assert_eq!(
            Dialect::answer(all),
            Some((
                Dialect::Msnp7,
                vec![Dialect::Msnp6, Dialect::Msnp5, Dialect::Msnp4],
                true
            ))
        );
        assert_eq!(
            Dialect::answer(["MSNP5"]),
            Some((Dialect::Msnp5, vec![], false))
        );
        assert_eq!(
            Dialect::answer(["MSNP3", "MSNP8", "MSNP2", "CVR0"]),
            Some((Dialect::Msnp3, vec![Dialect::Msnp2], true))
        );
        assert_eq!(Dialect::answer(["MSNP9", "CVR0"]), None);
        for d in Dialect::ALL {
            assert_eq!(Dialect::from_index(d.index()), Some(d));
            assert_eq!(Dialect::from_name(d.name()), Some(d));
        }
        assert_eq!(Dialect::negotiate([] as [&str; 0]), None);
    }
}

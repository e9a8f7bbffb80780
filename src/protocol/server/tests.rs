//! The wire form of each server line, per dialect (the parser's tests reuse these cases).

use super::*;

pub(crate) fn h(s: &str) -> UserHandle {
    s.parse().unwrap()
}

pub(crate) fn n(s: &str) -> FriendlyName {
    FriendlyName::new(s).unwrap()
}

/// One of each variant (two or three where the wire form has shapes), with its line.
pub(crate) fn cases() -> Vec<(ServerCommand, &'static str)> {
    let t = TrId(7);
    vec![
        (
            ServerCommand::Ver {
                trid: t,
                dialect: Some(Dialect::Msnp2),
                others: vec![],
                cvr0: false,
            },
            "VER 7 MSNP2",
        ),
        (
            ServerCommand::Ver {
                trid: t,
                dialect: None,
                others: vec![],
                cvr0: false,
            },
            "VER 7 0",
        ),
        (
            ServerCommand::Cvr {
                trid: t,
                query: false,
                recommended: "1.0.0863".into(),
                minimum: "1.0.0863".into(),
                download_url: "http://x/dl".into(),
                info_url: "http://x/info".into(),
            },
            "CVR 7 1.0.0863 1.0.0863 1.0.0863 http://x/dl http://x/info",
        ),
        (ServerCommand::Inf { trid: t }, "INF 7 MD5"),
        (
            ServerCommand::UsrChallenge {
                trid: t,
                challenge: "123".into(),
            },
            "USR 7 MD5 S 123",
        ),
        (
            ServerCommand::UsrOk {
                trid: t,
                handle: h("a@b.c"),
                name: n("A B"),
                verified: None,
            },
            "USR 7 OK a@b.c A%20B",
        ),
        (
            ServerCommand::XfrNs {
                trid: t,
                address: "127.0.0.1:1863".into(),
                current: String::new(),
            },
            "XFR 7 NS 127.0.0.1:1863",
        ),
        (
            ServerCommand::XfrSb {
                trid: t,
                address: "h:1864".into(),
                cookie: "ck".into(),
            },
            "XFR 7 SB h:1864 CKI ck",
        ),
        (ServerCommand::Syn { trid: t, serial: 3 }, "SYN 7 3"),
        (
            ServerCommand::Gtc {
                trid: t,
                serial: 3,
                setting: GtcSetting::Ask,
            },
            "GTC 7 3 A",
        ),
        (
            ServerCommand::Blp {
                trid: t,
                serial: 3,
                setting: BlpSetting::AllowAll,
            },
            "BLP 7 3 AL",
        ),
        (
            ServerCommand::Lst {
                trid: t,
                list: ListKind::Reverse,
                serial: 3,
                item: None,
            },
            "LST 7 RL 3 0 0",
        ),
        (
            ServerCommand::Lst {
                trid: t,
                list: ListKind::Forward,
                serial: 3,
                item: Some(ListItem {
                    index: 1,
                    total: 2,
                    handle: h("b@c.d"),
                    name: n("Bé"),
                    groups: vec![],
                }),
            },
            "LST 7 FL 3 1 2 b@c.d B%C3%A9",
        ),
        (
            ServerCommand::Add {
                trid: TrId(0),
                list: ListKind::Reverse,
                serial: 4,
                handle: h("a@b.c"),
                name: n("A"),
                group: None,
            },
            "ADD 0 RL 4 a@b.c A",
        ),
        (
            ServerCommand::Rem {
                trid: t,
                list: ListKind::Block,
                serial: 5,
                handle: h("a@b.c"),
                group: None,
            },
            "REM 7 BL 5 a@b.c",
        ),
        (
            ServerCommand::Chg {
                trid: t,
                status: Status::Hidden,
            },
            "CHG 7 HDN",
        ),
        (
            ServerCommand::Iln {
                trid: t,
                status: Status::Away,
                handle: h("a@b.c"),
                name: n("A"),
            },
            "ILN 7 AWY a@b.c A",
        ),
        (
            ServerCommand::Nln {
                status: Status::Busy,
                handle: h("a@b.c"),
                name: n("A"),
            },
            "NLN BSY a@b.c A",
        ),
        (ServerCommand::Fln { handle: h("a@b.c") }, "FLN a@b.c"),
        (
            ServerCommand::Rea {
                trid: t,
                serial: 9,
                handle: h("a@b.c"),
                name: n("New"),
            },
            "REA 7 9 a@b.c New",
        ),
        (
            ServerCommand::Url {
                trid: t,
                redirect: "/inbox".into(),
                login_url: "http://x/".into(),
                site_id: 0,
            },
            "URL 7 /inbox http://x/",
        ),
        (
            ServerCommand::Fnd {
                trid: t,
                index: 0,
                total: 0,
                fields: vec![],
            },
            "FND 7 0 0",
        ),
        (ServerCommand::Snd { trid: t }, "SND 7 OK"),
        (ServerCommand::Qng, "QNG"),
        (ServerCommand::Out { reason: None }, "OUT"),
        (
            ServerCommand::Out {
                reason: Some(OutReason::OtherLogin),
            },
            "OUT OTH",
        ),
        (
            ServerCommand::Out {
                reason: Some(OutReason::ServerShutdown),
            },
            "OUT SSD",
        ),
        (
            ServerCommand::Error {
                code: ErrorCode::NotLoggedIn,
                trid: t,
            },
            "302 7",
        ),
        (
            ServerCommand::Rng {
                session_id: 11,
                address: "h:1864".into(),
                cookie: "ck".into(),
                caller: h("a@b.c"),
                caller_name: n("A"),
            },
            "RNG 11 h:1864 CKI ck a@b.c A",
        ),
        (
            ServerCommand::Cal {
                trid: t,
                session_id: 11,
            },
            "CAL 7 RINGING 11",
        ),
        (
            ServerCommand::Iro {
                trid: t,
                index: 1,
                total: 2,
                handle: h("a@b.c"),
                name: n("A"),
            },
            "IRO 7 1 2 a@b.c A",
        ),
        (ServerCommand::AnsOk { trid: t }, "ANS 7 OK"),
        (
            ServerCommand::Joi {
                handle: h("a@b.c"),
                name: n("A"),
            },
            "JOI a@b.c A",
        ),
        (ServerCommand::Bye { handle: h("a@b.c") }, "BYE a@b.c"),
        (ServerCommand::Ack { trid: t }, "ACK 7"),
        (ServerCommand::Nak { trid: t }, "NAK 7"),
        (
            ServerCommand::Fnd {
                trid: t,
                index: 1,
                total: 2,
                fields: vec!["fname=A".into(), "lname=B".into()],
            },
            "FND 7 1 2 fname=A lname=B",
        ),
    ]
}

/// Lines whose form depends on the dialect, or that only later dialects have, with the
/// dialect they are written in.
pub(crate) fn dialect_cases() -> Vec<(ServerCommand, Dialect, &'static str)> {
    use Dialect::*;
    let t = TrId(7);
    let ver = |dialect, others: Vec<Dialect>, cvr0| ServerCommand::Ver {
        trid: t,
        dialect,
        others,
        cvr0,
    };
    let usr = ServerCommand::UsrOk {
        trid: t,
        handle: h("a@b.c"),
        name: n("A B"),
        verified: Some(true),
    };
    let xfr = ServerCommand::XfrNs {
        trid: t,
        address: "10.0.0.5:1863".into(),
        current: "10.0.0.1:1865".into(),
    };
    let fl = |groups: Vec<u32>| ServerCommand::Lst {
        trid: t,
        list: ListKind::Forward,
        serial: 3,
        item: Some(ListItem {
            index: 1,
            total: 1,
            handle: h("b@c.d"),
            name: n("B"),
            groups,
        }),
    };
    let add = |list, group| ServerCommand::Add {
        trid: t,
        list,
        serial: 4,
        handle: h("b@c.d"),
        name: n("B"),
        group,
    };
    let rem = |list, group| ServerCommand::Rem {
        trid: t,
        list,
        serial: 4,
        handle: h("b@c.d"),
        group,
    };
    let url = ServerCommand::Url {
        trid: t,
        redirect: "/inbox".into(),
        login_url: "http://x/".into(),
        site_id: 2,
    };
    vec![
        (ver(Some(Msnp2), vec![], true), Msnp2, "VER 7 MSNP2"),
        (
            ver(Some(Msnp7), vec![Msnp6, Msnp5, Msnp4], true),
            Msnp7,
            "VER 7 MSNP7 MSNP6 MSNP5 MSNP4 CVR0",
        ),
        (ver(Some(Msnp5), vec![], false), Msnp5, "VER 7 MSNP5"),
        (
            ver(Some(Msnp3), vec![Msnp2], true),
            Msnp3,
            "VER 7 MSNP3 MSNP2 CVR0",
        ),
        (usr.clone(), Msnp5, "USR 7 OK a@b.c A%20B"),
        (usr.clone(), Msnp6, "USR 7 OK a@b.c A%20B 1"),
        (usr, Msnp7, "USR 7 OK a@b.c A%20B 1"),
        (
            ServerCommand::UsrOk {
                trid: t,
                handle: h("a@b.c"),
                name: n("A"),
                verified: None,
            },
            Msnp7,
            "USR 7 OK a@b.c A",
        ),
        (xfr.clone(), Msnp2, "XFR 7 NS 10.0.0.5:1863"),
        (xfr.clone(), Msnp3, "XFR 7 NS 10.0.0.5:1863 0"),
        (xfr.clone(), Msnp6, "XFR 7 NS 10.0.0.5:1863 0"),
        (xfr, Msnp7, "XFR 7 NS 10.0.0.5:1863 0 10.0.0.1:1865"),
        (url.clone(), Msnp2, "URL 7 /inbox http://x/"),
        (url, Msnp3, "URL 7 /inbox http://x/ 2"),
        (fl(vec![]), Msnp6, "LST 7 FL 3 1 1 b@c.d B"),
        (fl(vec![]), Msnp7, "LST 7 FL 3 1 1 b@c.d B 0"),
        (fl(vec![0, 1]), Msnp7, "LST 7 FL 3 1 1 b@c.d B 0,1"),
        (fl(vec![0, 1]), Msnp2, "LST 7 FL 3 1 1 b@c.d B"),
        (
            add(ListKind::Forward, Some(2)),
            Msnp7,
            "ADD 7 FL 4 b@c.d B 2",
        ),
        (add(ListKind::Forward, Some(2)), Msnp2, "ADD 7 FL 4 b@c.d B"),
        (add(ListKind::Reverse, None), Msnp7, "ADD 7 RL 4 b@c.d B"),
        (rem(ListKind::Forward, Some(2)), Msnp7, "REM 7 FL 4 b@c.d 2"),
        (rem(ListKind::Forward, None), Msnp7, "REM 7 FL 4 b@c.d"),
        (rem(ListKind::Forward, Some(2)), Msnp5, "REM 7 FL 4 b@c.d"),
        (
            ServerCommand::Ims { trid: t, on: false },
            Msnp3,
            "IMS 7 0 OFF",
        ),
        (
            ServerCommand::Cvr {
                trid: t,
                query: true,
                recommended: "2.2.1053".into(),
                minimum: "1.0.0863".into(),
                download_url: "http://x/dl".into(),
                info_url: "http://x/info".into(),
            },
            Msnp4,
            "CVQ 7 2.2.1053 2.2.1053 1.0.0863 http://x/dl http://x/info",
        ),
        (
            ServerCommand::Prp {
                trid: t,
                serial: 9,
                key: PhoneKey::Home,
                value: Some(n("123 (4567)")),
            },
            Msnp5,
            "PRP 7 9 PHH 123%20(4567)",
        ),
        (
            ServerCommand::Prp {
                trid: t,
                serial: 9,
                key: PhoneKey::Work,
                value: None,
            },
            Msnp5,
            "PRP 7 9 PHW",
        ),
        (
            ServerCommand::Bpr {
                serial: 9,
                handle: h("b@c.d"),
                key: PhoneKey::MobileAllowed,
                value: Some(n("N")),
            },
            Msnp5,
            "BPR 9 b@c.d MOB N",
        ),
        (
            ServerCommand::Bpr {
                serial: 9,
                handle: h("b@c.d"),
                key: PhoneKey::Mobile,
                value: None,
            },
            Msnp7,
            "BPR 9 b@c.d PHM",
        ),
        (ServerCommand::Sdc { trid: t }, Msnp5, "SDC 7 OK"),
        (
            ServerCommand::Chl {
                challenge: "15570131571988941333".into(),
            },
            Msnp6,
            "CHL 0 15570131571988941333",
        ),
        (ServerCommand::Qry { trid: t }, Msnp6, "QRY 7"),
        (
            ServerCommand::Lsg {
                trid: t,
                serial: 9,
                index: 1,
                total: 2,
                id: 0,
                name: n("~"),
            },
            Msnp7,
            "LSG 7 9 1 2 0 ~ 0",
        ),
        (
            ServerCommand::Adg {
                trid: t,
                serial: 9,
                name: n("New Group"),
                id: 3,
            },
            Msnp7,
            "ADG 7 9 New%20Group 3 0",
        ),
        (
            ServerCommand::Reg {
                trid: t,
                serial: 9,
                id: 3,
                name: n("Friends"),
            },
            Msnp7,
            "REG 7 9 3 Friends 0",
        ),
        (
            ServerCommand::Rmg {
                trid: t,
                serial: 9,
                id: 3,
            },
            Msnp7,
            "RMG 7 9 3",
        ),
    ]
}

#[test]
fn lines_of_later_dialects_are_not_written_to_earlier_ones() {
    let bpr = ServerCommand::Bpr {
        serial: 1,
        handle: h("a@b.c"),
        key: PhoneKey::Home,
        value: None,
    };
    assert!(bpr.to_bytes(Dialect::Msnp2).is_empty());
    assert!(bpr.to_bytes(Dialect::Msnp4).is_empty());
    assert_eq!(bpr.to_bytes(Dialect::Msnp5), &b"BPR 1 a@b.c PHH\r\n"[..]);
}

#[test]
fn dialect_wire_forms() {
    for (cmd, dialect, line) in dialect_cases() {
        assert_eq!(cmd.line(dialect).to_string(), line, "{dialect}");
        assert_eq!(cmd.to_bytes(dialect), format!("{line}\r\n").as_bytes());
    }
}

#[test]
fn msnp2_lines_are_the_same_in_every_later_dialect_but_the_changed_ones() {
    // Every MSNP2 case is written alike in MSNP3-MSNP7, except the commands that changed.
    for (cmd, line) in cases() {
        for dialect in Dialect::ALL {
            let changed = matches!(
                cmd,
                ServerCommand::UsrOk { .. }
                    | ServerCommand::XfrNs { .. }
                    | ServerCommand::Url { .. }
                    | ServerCommand::Lst { .. }
            );
            if !changed || dialect == Dialect::Msnp2 {
                assert_eq!(cmd.line(dialect).to_string(), line, "{dialect}");
            }
        }
    }
}

#[test]
fn wire_forms() {
    for (cmd, line) in cases() {
        assert_eq!(cmd.to_string(), line);
        assert_eq!(
            cmd.to_bytes(Dialect::Msnp2),
            format!("{line}\r\n").as_bytes()
        );
    }
}

#[test]
fn msg_length_counts_bytes() {
    let payload = Bytes::from("MIME-Version: 1.0\r\n\r\nhé");
    let cmd = ServerCommand::Msg {
        sender: "a@b.c".into(),
        sender_name: "A".into(),
        payload: payload.clone(),
    };
    let mut expected = b"MSG a@b.c A 24\r\n".to_vec();
    expected.extend_from_slice(&payload);
    assert_eq!(cmd.to_bytes(Dialect::Msnp2), expected);
}

#[test]
fn a_shared_line_is_written_once_per_dialect() {
    let line = SharedLine::new(ServerCommand::Fln { handle: h("a@b.c") });
    for dialect in Dialect::ALL {
        let first = line.encoded(dialect);
        let again = line.clone().encoded(dialect);
        assert_eq!(first, line.command().to_bytes(dialect));
        // The same bytes, not a second encoding: fan-out costs one encoding per dialect.
        assert_eq!(first.as_ptr(), again.as_ptr());
    }
    assert_eq!(line.encoded(Dialect::Msnp2), &b"FLN a@b.c\r\n"[..]);
}

#[test]
fn dialects_have_distinct_indexes() {
    for (i, dialect) in Dialect::ALL.into_iter().enumerate() {
        assert_eq!(dialect.index(), i);
        assert_eq!(Dialect::from_index(i), Some(dialect));
    }
    assert_eq!(Dialect::from_index(Dialect::ALL.len()), None);
}

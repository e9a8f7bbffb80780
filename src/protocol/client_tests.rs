//! Tests of the client command parser and its written form.

use super::*;
use bytes::BytesMut;

fn parse(line: &str) -> Result<ClientCommand, ParseError> {
    let mut buf = BytesMut::from(format!("{line}\r\n").as_bytes());
    let frame = crate::protocol::frame::decode(&mut buf).unwrap().unwrap();
    ClientCommand::parse(frame)
}

fn round_trip(line: &str) -> ClientCommand {
    let cmd = parse(line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
    assert_eq!(cmd.to_string(), line);
    cmd
}

fn err(line: &str) -> (Option<u32>, u16) {
    let e = parse(line).expect_err(line);
    (e.trid.map(|t| t.0), e.code.code())
}

#[test]
fn every_command_round_trips() {
    for line in [
        "VER 1 MSNP2 CVR0",
        "CVR 2 0x0409 win 4.10 i386 MSMSGS 1.0.0863 MSMSGS",
        "CVR 2",
        "CVQ 2 0x0409 win 4.10 i386 MSMSGS 2.2.1053 MSMSGS",
        "CVR 2 0x0409 win 4.10 i386 MSMSGS 2.2.1053 MSMSGS MSMSGS",
        "INF 3",
        "USR 4 MD5 I alice@example.com",
        "USR 5 MD5 S 0123456789abcdef0123456789abcdef",
        "USR 6 alice@example.com 1234.5678",
        "SYN 7 0",
        "SYN 7 4294967295",
        "LST 8 RL",
        "GTC 9 N",
        "BLP 10 BL",
        "ADD 11 FL bob@example.com Bob%20B",
        "REM 12 AL bob@example.com",
        "CHG 13 BSY",
        "CHG 13 FLN",
        "REA 14 alice@example.com Alice%E2%98%BA",
        "XFR 15 SB",
        "URL 16 INBOX",
        "FND 17 fname=A lname=B city=* state=* country=*",
        "SND 18 friend@example.com",
        "OUT",
        "PNG",
        "CAL 19 bob@example.com",
        "ANS 20 bob@example.com 99.abc 12345",
        "ADD 21 FL bob@example.com Bob 3",
        "REM 22 FL bob@example.com 0",
        "IMS 23 OFF",
        "PRP 24 PHH 1%20(222)%203333",
        "PRP 25 PHW",
        "ADG 26 New%20Group 0",
        "REG 27 3 Friends 0",
        "RMG 28 3",
    ] {
        round_trip(line);
    }
}

#[test]
fn typed_values() {
    let cmd = parse("ADD 11 FL Bob@Example.com Bob").unwrap();
    let expected = ClientCommand::Add {
        trid: TrId(11),
        list: ListKind::Forward,
        handle: "bob@example.com".parse().unwrap(),
        name: FriendlyName::new("Bob").unwrap(),
        group: None,
    };
    assert_eq!(cmd, expected);
    assert_eq!(cmd.since(), Dialect::Msnp2);
    assert_eq!(parse("ADD 1 FL a@b.c A 2").unwrap().since(), Dialect::Msnp7);
    assert_eq!(parse("IMS 1 ON").unwrap().since(), Dialect::Msnp3);
    assert_eq!(parse("PRP 1 MOB Y").unwrap().since(), Dialect::Msnp5);
}

#[test]
fn msg_carries_its_payload() {
    let mut buf = BytesMut::from(&b"MSG 3 A 6\r\nh\xc3\xa9llo"[..]);
    let frame = crate::protocol::frame::decode(&mut buf).unwrap().unwrap();
    let cmd = ClientCommand::parse(frame).unwrap();
    assert_eq!(cmd.to_string(), "MSG 3 A 6");
    match cmd {
        ClientCommand::Msg { mode, payload, .. } => {
            assert_eq!(mode, AckMode::Acknowledged);
            assert_eq!(&payload[..], "héllo".as_bytes());
        }
        other => panic!("{other:?}"),
    }
    let mut buf = BytesMut::from(&b"MSG 3 B 1\r\nx"[..]);
    let frame = crate::protocol::frame::decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        ClientCommand::parse(frame).unwrap_err().code,
        ErrorCode::InvalidParameter
    );
}

#[test]
fn rejections_carry_the_trid_and_a_code() {
    assert_eq!(err("FOO 5 bar"), (Some(5), 200));
    assert_eq!(err("ver 5 MSNP2"), (Some(5), 200)); // verbs are case-sensitive
    assert_eq!(err("VER 6"), (Some(6), 200));
    assert_eq!(err("INF 7 extra"), (Some(7), 200));
    assert_eq!(err("ADD 8 XL bob@example.com Bob"), (Some(8), 201));
    assert_eq!(err("ADD 9 FL bob Bob"), (Some(9), 208));
    assert_eq!(err("ADD 10 FL bob@example.com %FF"), (Some(10), 209));
    assert_eq!(err("ADD 11 FL bob@example.com"), (Some(11), 200));
    assert_eq!(err("CHG 12 XYZ"), (Some(12), 201));
    assert_eq!(err("GTC 13 B"), (Some(13), 201));
    assert_eq!(err("BLP 14 FL"), (Some(14), 201));
    assert_eq!(err("SYN 15 x"), (Some(15), 201));
    assert_eq!(err("CAL 16 nobody"), (Some(16), 208));
    assert_eq!(err("REA 17 alice@example.com a%0Db"), (Some(17), 209));
    assert_eq!(err("ANS 18 a@b.c cookie notanumber"), (Some(18), 201));
    assert_eq!(err("ADD 19 FL a@b.c A x"), (Some(19), 224));
    assert_eq!(err("ADD 19 FL a@b.c A 1 2"), (Some(19), 200));
    assert_eq!(err("PRP 20 XYZ 1"), (Some(20), 715));
    assert_eq!(
        err(&format!("PRP 21 PHH {}", "1".repeat(96))),
        (Some(21), 201)
    );
    assert_eq!(
        err(&format!("ADG 22 {} 0", "g".repeat(62))),
        (Some(22), 229)
    );
    assert_eq!(err("RMG 23 -1"), (Some(23), 224));
    assert_eq!(err("IMS 24 MAYBE"), (Some(24), 200));
}

#[test]
fn unreadable_trids() {
    assert_eq!(err("INF"), (None, 200));
    assert_eq!(err("INF x"), (None, 200));
    assert_eq!(err("INF 4294967296"), (None, 200));
    assert_eq!(err(""), (None, 200));
    let frame = Frame {
        line: Bytes::from_static(b"INF 3 \xff"),
        payload: None,
    };
    assert_eq!(
        ClientCommand::parse(frame).unwrap_err(),
        ParseError {
            trid: Some(TrId(3)),
            code: ErrorCode::SyntaxError
        }
    );
}

#[test]
fn payload_commands_carry_their_payload() {
    for (bytes, line) in [
        (
            &b"QRY 10 msmsgs@msnmsgr.com 32\r\n8f2f5a91b72102cd28355e9fc9000d6e"[..],
            "QRY 10 msmsgs@msnmsgr.com 32",
        ),
        (&b"PAG 5 a@b.c 3\r\nabc"[..], "PAG 5 a@b.c 3"),
        (
            &b"SDC 6 x@y.z 0x0409 MSMSGS MSMSGS X X My%20Name 2\r\nhi"[..],
            "SDC 6 x@y.z 0x0409 MSMSGS MSMSGS X X My%20Name 2",
        ),
    ] {
        let mut buf = BytesMut::from(bytes);
        let frame = crate::protocol::frame::decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(ClientCommand::parse(frame).unwrap().to_string(), line);
    }
}

#[test]
fn whitespace_runs_separate_parameters() {
    assert_eq!(parse("VER  1\tMSNP2").unwrap().to_string(), "VER 1 MSNP2");
}

/// Found by fuzzing: a stray `%` is kept as text and written back as `%25`, so a value
/// within the bound as sent could be over it as written. Bounds are on the written form.
#[test]
fn bounds_hold_for_the_form_written_back() {
    let phone = format!("1%{}", "t".repeat(MAX_PHONE_BYTES - 2));
    assert_eq!(phone.len(), MAX_PHONE_BYTES);
    assert_eq!(
        parse(&format!("PRP 5 PHH {phone}")).map_err(|e| e.code),
        Err(ErrorCode::InvalidParameter)
    );
    let fits = "1%25tt";
    assert!(parse(&format!("PRP 5 PHH {fits}")).is_ok());
    let group = format!("%{}", "g".repeat(MAX_GROUP_NAME_BYTES - 1));
    assert_eq!(
        parse(&format!("ADG 6 {group} 0")).map_err(|e| e.code),
        Err(ErrorCode::GroupNameTooLong)
    );
}

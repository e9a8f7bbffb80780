//! Property tests (proptest): every client and server command, with arbitrary field values,
//! comes back unchanged from its wire form, in every dialect this server speaks; and no input
//! makes framing or parsing panic.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::*;

fn trid() -> impl Strategy<Value = TrId> {
    any::<u32>().prop_map(TrId)
}

fn handle() -> impl Strategy<Value = UserHandle> {
    "[a-z0-9][a-z0-9._+-]{0,20}@[a-z0-9]{1,10}(\\.[a-z0-9-]{0,6}[a-z0-9]){0,2}"
        .prop_filter_map("a valid handle", |s| s.parse().ok())
}

/// Any text a person could choose as a name, spaces, `%` and non-ASCII included.
fn name() -> impl Strategy<Value = FriendlyName> {
    "(\\PC| |%){1,40}".prop_filter_map("a valid name", |s| FriendlyName::new(&s).ok())
}

/// A parameter that is one token on the wire (cookies, addresses, challenges, URLs).
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.:/?=&_-]{1,24}"
}

fn status() -> impl Strategy<Value = Status> {
    select(Status::ALL.to_vec())
}

fn list() -> impl Strategy<Value = ListKind> {
    select(ListKind::SYNC_ORDER.to_vec())
}

fn gtc() -> impl Strategy<Value = GtcSetting> {
    select(vec![GtcSetting::Ask, GtcSetting::NoAsk])
}

fn blp() -> impl Strategy<Value = BlpSetting> {
    select(vec![BlpSetting::AllowAll, BlpSetting::BlockAll])
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn list_item() -> impl Strategy<Value = Option<ListItem>> {
    prop::option::of(
        (
            1usize..50,
            0usize..50,
            handle(),
            name(),
            vec(0u32..30, 0..4),
        )
            .prop_map(|(total, i, handle, name, groups)| ListItem {
                index: i % total + 1,
                total,
                handle,
                name,
                groups,
            }),
    )
}

fn server_command() -> impl Strategy<Value = ServerCommand> {
    use ServerCommand::*;
    let sessions = prop_oneof![
        (
            trid(),
            prop::option::of(select(Dialect::SUPPORTED.to_vec())),
            prop::sample::subsequence(Dialect::SUPPORTED.to_vec(), 0..=Dialect::SUPPORTED.len()),
            any::<bool>()
        )
            .prop_map(|(trid, dialect, others, cvr0)| match dialect {
                Some(d) => Ver {
                    trid,
                    dialect,
                    others: others.into_iter().filter(|o| *o != d).collect(),
                    cvr0,
                },
                None => Ver {
                    trid,
                    dialect,
                    others: Vec::new(),
                    cvr0: false,
                },
            }),
        (trid(), any::<bool>(), token(), token(), token(), token()).prop_map(
            |(trid, query, r, m, d, i)| Cvr {
                trid,
                query,
                recommended: r,
                minimum: m,
                download_url: d,
                info_url: i,
            }
        ),
        trid().prop_map(|trid| Inf { trid }),
        (trid(), token()).prop_map(|(trid, challenge)| UsrChallenge { trid, challenge }),
        (trid(), handle(), name(), prop::option::of(any::<bool>())).prop_map(
            |(trid, handle, name, verified)| UsrOk {
                trid,
                handle,
                name,
                verified
            }
        ),
        (trid(), token(), token()).prop_map(|(trid, address, current)| XfrNs {
            trid,
            address,
            current
        }),
        (trid(), token(), token()).prop_map(|(trid, address, cookie)| XfrSb {
            trid,
            address,
            cookie
        }),
        (trid(), token(), token(), any::<u32>()).prop_map(
            |(trid, redirect, login_url, site_id)| Url {
                trid,
                redirect,
                login_url,
                site_id
            }
        ),
        Just(Qng),
        (trid(), 0usize..20, vec(token(), 0..6)).prop_map(|(trid, total, fields)| Fnd {
            trid,
            index: total.min(1),
            total,
            fields,
        }),
        trid().prop_map(|trid| Snd { trid }),
        prop::option::of(select(vec![
            OutReason::OtherLogin,
            OutReason::ServerShutdown
        ]))
        .prop_map(|reason| Out { reason }),
        (select(ErrorCode::ALL.to_vec()), trid()).prop_map(|(code, trid)| Error { code, trid }),
    ];
    let lists = prop_oneof![
        (trid(), any::<u32>()).prop_map(|(trid, serial)| Syn { trid, serial }),
        (trid(), any::<u32>(), gtc()).prop_map(|(trid, serial, setting)| Gtc {
            trid,
            serial,
            setting
        }),
        (trid(), any::<u32>(), blp()).prop_map(|(trid, serial, setting)| Blp {
            trid,
            serial,
            setting
        }),
        (trid(), list(), any::<u32>(), list_item()).prop_map(|(trid, list, serial, item)| Lst {
            trid,
            list,
            serial,
            item: item.map(|item| ListItem {
                // An FL entry without groups is written as in group 0.
                groups: only_on_fl(
                    list,
                    if item.groups.is_empty() {
                        vec![0]
                    } else {
                        item.groups.clone()
                    }
                ),
                ..item
            })
        }),
        (trid(), list(), any::<u32>(), handle(), name(), group()).prop_map(
            |(trid, list, serial, handle, name, group)| Add {
                trid,
                list,
                serial,
                handle,
                name,
                group: fl_group(list, group)
            }
        ),
        (trid(), list(), any::<u32>(), handle(), group()).prop_map(
            |(trid, list, serial, handle, group)| Rem {
                trid,
                list,
                serial,
                handle,
                group: fl_group(list, group)
            }
        ),
        (trid(), any::<u32>(), handle(), name()).prop_map(|(trid, serial, handle, name)| Rea {
            trid,
            serial,
            handle,
            name
        }),
    ];
    let presence = prop_oneof![
        (trid(), status()).prop_map(|(trid, status)| Chg { trid, status }),
        (trid(), status(), handle(), name()).prop_map(|(trid, status, handle, name)| Iln {
            trid,
            status,
            handle,
            name
        }),
        (status(), handle(), name()).prop_map(|(status, handle, name)| Nln {
            status,
            handle,
            name
        }),
        handle().prop_map(|handle| Fln { handle }),
    ];
    let switchboard = prop_oneof![
        (any::<u32>(), token(), token(), handle(), name()).prop_map(
            |(session_id, address, cookie, caller, caller_name)| Rng {
                session_id,
                address,
                cookie,
                caller,
                caller_name
            }
        ),
        (trid(), any::<u32>()).prop_map(|(trid, session_id)| Cal { trid, session_id }),
        (trid(), 1usize..40, 0usize..40, handle(), name()).prop_map(
            |(trid, total, i, handle, name)| Iro {
                trid,
                index: i % total + 1,
                total,
                handle,
                name
            }
        ),
        trid().prop_map(|trid| AnsOk { trid }),
        (handle(), name()).prop_map(|(handle, name)| Joi { handle, name }),
        handle().prop_map(|handle| Bye { handle }),
        (handle(), name(), payload()).prop_map(|(sender, name, payload)| Msg {
            sender: sender.to_string(),
            sender_name: name.to_string(),
            payload
        }),
        trid().prop_map(|trid| Ack { trid }),
        trid().prop_map(|trid| Nak { trid }),
    ];
    let later = prop_oneof![
        (trid(), any::<bool>()).prop_map(|(trid, on)| Ims { trid, on }),
        (trid(), any::<u32>(), phone_key(), phone()).prop_map(|(trid, serial, key, value)| Prp {
            trid,
            serial,
            key,
            value
        }),
        (any::<u32>(), handle(), phone_key(), phone()).prop_map(|(serial, handle, key, value)| {
            Bpr {
                serial,
                handle,
                key,
                value,
            }
        }),
        trid().prop_map(|trid| Sdc { trid }),
        "[0-9]{1,20}".prop_map(|challenge| Chl { challenge }),
        trid().prop_map(|trid| Qry { trid }),
        (
            trid(),
            any::<u32>(),
            1usize..30,
            0usize..30,
            0u32..30,
            name()
        )
            .prop_map(|(trid, serial, total, i, id, name)| Lsg {
                trid,
                serial,
                index: i % total + 1,
                total,
                id,
                name
            }),
        (trid(), any::<u32>(), group_name(), 0u32..30).prop_map(|(trid, serial, name, id)| Adg {
            trid,
            serial,
            name,
            id
        }),
        (trid(), any::<u32>(), 0u32..30, group_name()).prop_map(|(trid, serial, id, name)| Reg {
            trid,
            serial,
            id,
            name
        }),
        (trid(), any::<u32>(), 0u32..30).prop_map(|(trid, serial, id)| Rmg { trid, serial, id }),
    ];
    prop_oneof![sessions, lists, presence, switchboard, later]
}

fn group() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(0u32..30)
}

/// A group's name: a name, within the group name bound.
fn group_name() -> impl Strategy<Value = FriendlyName> {
    name().prop_filter("short enough for a group", |n| {
        n.to_string().len() <= MAX_GROUP_NAME_BYTES
    })
}

/// An FL line of the server always names a group (0 when none is given); other lists none.
fn fl_group(list: ListKind, group: Option<u32>) -> Option<u32> {
    only_on_fl(list, Some(group.unwrap_or(0)))
}

/// Groups belong to the FL only: the command as a client or server of any dialect has it.
fn only_on_fl<T>(list: ListKind, value: T) -> T
where
    T: Default,
{
    if list == ListKind::Forward {
        value
    } else {
        T::default()
    }
}

fn phone_key() -> impl Strategy<Value = PhoneKey> {
    select(PhoneKey::ALL.to_vec())
}

fn phone() -> impl Strategy<Value = Option<FriendlyName>> {
    prop::option::of(
        "[0-9 ()+-]{1,20}".prop_filter_map("a valid value", |s| FriendlyName::new(&s).ok()),
    )
}

fn client_command() -> impl Strategy<Value = ClientCommand> {
    use ClientCommand::*;
    let words = || vec("[A-Za-z0-9=*.]{1,12}", 1..6);
    prop_oneof![
        (trid(), vec("(MSNP[0-9]{1,2}|CVR[0-9])", 1..6))
            .prop_map(|(trid, dialects)| Ver { trid, dialects }),
        (trid(), words(), any::<bool>()).prop_map(|(trid, info, query)| Cvr { trid, info, query }),
        trid().prop_map(|trid| Inf { trid }),
        (trid(), handle()).prop_map(|(trid, h)| UsrAuth {
            trid,
            package: "MD5".into(),
            stage: AuthStage::Initial(h),
        }),
        (trid(), "[0-9a-f]{32}").prop_map(|(trid, r)| UsrAuth {
            trid,
            package: "MD5".into(),
            stage: AuthStage::Subsequent(r),
        }),
        (trid(), handle(), token()).prop_map(|(trid, handle, cookie)| UsrCookie {
            trid,
            handle,
            cookie
        }),
        (trid(), any::<u32>()).prop_map(|(trid, serial)| Syn { trid, serial }),
        (trid(), list()).prop_map(|(trid, list)| Lst { trid, list }),
        (trid(), gtc()).prop_map(|(trid, setting)| Gtc { trid, setting }),
        (trid(), blp()).prop_map(|(trid, setting)| Blp { trid, setting }),
        (trid(), list(), handle(), name(), group()).prop_map(
            |(trid, list, handle, name, group)| {
                Add {
                    trid,
                    list,
                    handle,
                    name,
                    group: only_on_fl(list, group),
                }
            }
        ),
        (trid(), list(), handle(), group()).prop_map(|(trid, list, handle, group)| Rem {
            trid,
            list,
            handle,
            group: only_on_fl(list, group)
        }),
        (trid(), status()).prop_map(|(trid, status)| Chg { trid, status }),
        (trid(), handle(), name()).prop_map(|(trid, handle, name)| Rea { trid, handle, name }),
        (trid(), "[A-Z]{2}").prop_map(|(trid, kind)| Xfr { trid, kind }),
        (trid(), words()).prop_map(|(trid, args)| Url { trid, args }),
        (trid(), words()).prop_map(|(trid, args)| Fnd { trid, args }),
        (trid(), words()).prop_map(|(trid, args)| Snd { trid, args }),
        Just(Out),
        Just(Png),
        (trid(), handle()).prop_map(|(trid, handle)| Cal { trid, handle }),
        (trid(), handle(), token(), any::<u32>()).prop_map(|(trid, handle, cookie, session_id)| {
            Ans {
                trid,
                handle,
                cookie,
                session_id,
            }
        }),
        (
            trid(),
            select(vec![
                AckMode::Unacknowledged,
                AckMode::NegativeOnly,
                AckMode::Acknowledged
            ]),
            payload()
        )
            .prop_map(|(trid, mode, payload)| Msg {
                trid,
                mode,
                payload
            }),
        (trid(), any::<bool>()).prop_map(|(trid, on)| Ims { trid, on }),
        (trid(), phone_key(), phone()).prop_map(|(trid, key, value)| Prp { trid, key, value }),
        (trid(), words(), payload()).prop_map(|(trid, args, payload)| Sdc {
            trid,
            args,
            payload
        }),
        (trid(), handle(), payload()).prop_map(|(trid, handle, payload)| Pag {
            trid,
            handle,
            payload
        }),
        (trid(), token(), "[0-9a-f]{32}").prop_map(|(trid, client_id, answer)| Qry {
            trid,
            client_id,
            payload: Bytes::from(answer)
        }),
        (trid(), group_name()).prop_map(|(trid, name)| Adg { trid, name }),
        (trid(), 0u32..30, group_name()).prop_map(|(trid, id, name)| Reg { trid, id, name }),
        (trid(), 0u32..30).prop_map(|(trid, id)| Rmg { trid, id }),
    ]
}

/// A client command's payload, for those that carry one.
fn client_payload(cmd: &ClientCommand) -> Option<&Bytes> {
    use ClientCommand::*;
    match cmd {
        Msg { payload, .. } | Sdc { payload, .. } | Pag { payload, .. } | Qry { payload, .. } => {
            Some(payload)
        }
        _ => None,
    }
}

/// The one frame in `bytes`, which must hold exactly one.
fn one_frame(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = decode(&mut buf).expect("frames").expect("a whole frame");
    assert!(buf.is_empty(), "exactly one frame in {bytes:?}");
    frame
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// In every dialect that has the line, what is read back is written the same way again;
    /// in the newest dialect, which writes every field, it is the same command.
    #[test]
    fn server_commands_come_back_from_their_wire_form(cmd in server_command()) {
        let newest = Dialect::SUPPORTED.into_iter().max_by_key(|d| d.index()).unwrap();
        for dialect in Dialect::SUPPORTED.into_iter().filter(|d| d.index() >= cmd.since().index()) {
            let wire = cmd.to_bytes(dialect);
            let shown = String::from_utf8_lossy(&wire).into_owned();
            let parsed = ServerCommand::parse(one_frame(&wire));
            let parsed = parsed.map_err(|e| TestCaseError::fail(format!("{shown:?}: {e:?}")))?;
            prop_assert_eq!(parsed.to_bytes(dialect), wire, "{:?} in {}", shown, dialect);
            if dialect == newest {
                prop_assert_eq!(&parsed, &cmd, "{:?}", shown);
            }
        }
    }

    #[test]
    fn client_commands_come_back_from_their_wire_form(cmd in client_command()) {
        let mut wire = format!("{cmd}\r\n").into_bytes();
        if let Some(payload) = client_payload(&cmd) {
            wire.extend_from_slice(payload);
        }
        let parsed = ClientCommand::parse(one_frame(&wire));
        prop_assert_eq!(parsed.as_ref(), Ok(&cmd), "{:?}", String::from_utf8_lossy(&wire));
    }

    /// Whatever arrives, framing and both parsers answer without panicking, and a refused
    /// client line always carries an MSN error code.
    #[test]
    fn no_input_panics(input in vec(any::<u8>(), 0..600)) {
        let mut buf = BytesMut::from(&input[..]);
        while let Ok(Some(frame)) = decode(&mut buf) {
            if let Err(e) = ClientCommand::parse(frame.clone()) {
                prop_assert!(e.code.code() >= 200);
            }
            let _ = ServerCommand::parse(frame);
        }
    }
}

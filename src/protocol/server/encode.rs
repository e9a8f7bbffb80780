//! The wire form of every server line, in every dialect: the one place where dialects differ
//! in what the server writes.

use std::fmt;

use super::{Line, ListItem, OutReason, ServerCommand};
use crate::protocol::types::{Dialect, ListKind};

impl fmt::Display for ServerCommand {
    /// The line in MSNP2, without its CRLF or payload (for logs and MSNP2 clients).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.line(Dialect::Msnp2).fmt(f)
    }
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ServerCommand::*;
        let d = self.dialect;
        match self.command {
            Ver {
                trid,
                dialect: Some(chosen),
                others,
                cvr0,
            } => {
                write!(f, "VER {trid} {chosen}")?;
                // MSNP2 (MSN 1.0) was answered with the chosen dialect alone.
                if d >= Dialect::Msnp3 {
                    others.iter().try_for_each(|o| write!(f, " {o}"))?;
                    if *cvr0 {
                        f.write_str(" CVR0")?;
                    }
                }
                Ok(())
            }
            Ver {
                trid,
                dialect: None,
                ..
            } => write!(f, "VER {trid} 0"),
            Cvr {
                trid,
                query,
                recommended,
                minimum,
                download_url,
                info_url,
            } => {
                let verb = if *query { "CVQ" } else { "CVR" };
                write!(
                    f,
                    "{verb} {trid} {recommended} {recommended} {minimum} {download_url} {info_url}"
                )
            }
            Inf { trid } => write!(f, "INF {trid} MD5"),
            UsrChallenge { trid, challenge } => write!(f, "USR {trid} MD5 S {challenge}"),
            UsrOk {
                trid,
                handle,
                name,
                verified,
            } => {
                write!(f, "USR {trid} OK {handle} {name}")?;
                // The verified bit: 0 makes MSN 3.6 mark the name as unverified.
                if let (true, Some(v)) = (d >= Dialect::Msnp6, verified) {
                    write!(f, " {}", u8::from(*v))?;
                }
                Ok(())
            }
            XfrNs {
                trid,
                address,
                current,
            } => {
                write!(f, "XFR {trid} NS {address}")?;
                if d >= Dialect::Msnp3 {
                    f.write_str(" 0")?;
                }
                if d >= Dialect::Msnp7 {
                    write!(f, " {current}")?;
                }
                Ok(())
            }
            XfrSb {
                trid,
                address,
                cookie,
            } => write!(f, "XFR {trid} SB {address} CKI {cookie}"),
            Syn { trid, serial } => write!(f, "SYN {trid} {serial}"),
            Gtc {
                trid,
                serial,
                setting,
            } => write!(f, "GTC {trid} {serial} {setting}"),
            Blp {
                trid,
                serial,
                setting,
            } => write!(f, "BLP {trid} {serial} {setting}"),
            Lst {
                trid,
                list,
                serial,
                item: None,
            } => write!(f, "LST {trid} {list} {serial} 0 0"),
            Lst {
                trid,
                list,
                serial,
                item:
                    Some(ListItem {
                        index,
                        total,
                        handle,
                        name,
                        groups,
                    }),
            } => {
                write!(
                    f,
                    "LST {trid} {list} {serial} {index} {total} {handle} {name}"
                )?;
                if d >= Dialect::Msnp7 && *list == ListKind::Forward {
                    f.write_str(" ")?;
                    write_groups(f, groups)?;
                }
                Ok(())
            }
            Add {
                trid,
                list,
                serial,
                handle,
                name,
                group,
            } => {
                write!(f, "ADD {trid} {list} {serial} {handle} {name}")?;
                if d >= Dialect::Msnp7 && *list == ListKind::Forward {
                    write!(f, " {}", group.unwrap_or(0))?;
                }
                Ok(())
            }
            Rem {
                trid,
                list,
                serial,
                handle,
                group,
            } => {
                write!(f, "REM {trid} {list} {serial} {handle}")?;
                if let (true, ListKind::Forward, Some(g)) = (d >= Dialect::Msnp7, list, group) {
                    write!(f, " {g}")?;
                }
                Ok(())
            }
            Chg { trid, status } => write!(f, "CHG {trid} {status}"),
            Iln {
                trid,
                status,
                handle,
                name,
            } => write!(f, "ILN {trid} {status} {handle} {name}"),
            Nln {
                status,
                handle,
                name,
            } => write!(f, "NLN {status} {handle} {name}"),
            Fln { handle } => write!(f, "FLN {handle}"),
            Rea {
                trid,
                serial,
                handle,
                name,
            } => write!(f, "REA {trid} {serial} {handle} {name}"),
            Url {
                trid,
                redirect,
                login_url,
                site_id,
            } => {
                write!(f, "URL {trid} {redirect} {login_url}")?;
                if d >= Dialect::Msnp3 {
                    write!(f, " {site_id}")?;
                }
                Ok(())
            }
            Qng => f.write_str("QNG"),
            Fnd {
                trid,
                index,
                total,
                fields,
            } => {
                write!(f, "FND {trid} {index} {total}")?;
                fields.iter().try_for_each(|x| write!(f, " {x}"))
            }
            Snd { trid } => write!(f, "SND {trid} OK"),
            Out { reason: None } => f.write_str("OUT"),
            Out {
                reason: Some(OutReason::OtherLogin),
            } => f.write_str("OUT OTH"),
            Out {
                reason: Some(OutReason::ServerShutdown),
            } => f.write_str("OUT SSD"),
            Error { code, trid } => write!(f, "{code} {trid}"),
            Rng {
                session_id,
                address,
                cookie,
                caller,
                caller_name,
            } => {
                write!(
                    f,
                    "RNG {session_id} {address} CKI {cookie} {caller} {caller_name}"
                )
            }
            Cal { trid, session_id } => write!(f, "CAL {trid} RINGING {session_id}"),
            Iro {
                trid,
                index,
                total,
                handle,
                name,
            } => {
                write!(f, "IRO {trid} {index} {total} {handle} {name}")
            }
            AnsOk { trid } => write!(f, "ANS {trid} OK"),
            Joi { handle, name } => write!(f, "JOI {handle} {name}"),
            Bye { handle } => write!(f, "BYE {handle}"),
            Msg {
                sender,
                sender_name,
                payload,
            } => {
                write!(f, "MSG {sender} {sender_name} {}", payload.len())
            }
            Ack { trid } => write!(f, "ACK {trid}"),
            Nak { trid } => write!(f, "NAK {trid}"),
            Ims { trid, on } => write!(f, "IMS {trid} 0 {}", if *on { "ON" } else { "OFF" }),
            Prp {
                trid,
                serial,
                key,
                value,
            } => {
                write!(f, "PRP {trid} {serial} {key}")?;
                value.iter().try_for_each(|v| write!(f, " {v}"))
            }
            Bpr {
                serial,
                handle,
                key,
                value,
            } => {
                write!(f, "BPR {serial} {handle} {key}")?;
                value.iter().try_for_each(|v| write!(f, " {v}"))
            }
            Sdc { trid } => write!(f, "SDC {trid} OK"),
            Chl { challenge } => write!(f, "CHL 0 {challenge}"),
            Qry { trid } => write!(f, "QRY {trid}"),
            Lsg {
                trid,
                serial,
                index,
                total,
                id,
                name,
            } => write!(f, "LSG {trid} {serial} {index} {total} {id} {name} 0"),
            Adg {
                trid,
                serial,
                name,
                id,
            } => write!(f, "ADG {trid} {serial} {name} {id} 0"),
            Reg {
                trid,
                serial,
                id,
                name,
            } => write!(f, "REG {trid} {serial} {id} {name} 0"),
            Rmg { trid, serial, id } => write!(f, "RMG {trid} {serial} {id}"),
        }
    }
}

/// A contact's groups, comma-separated; a contact in none is shown in group 0.
fn write_groups(f: &mut fmt::Formatter<'_>, groups: &[u32]) -> fmt::Result {
    if groups.is_empty() {
        return f.write_str("0");
    }
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{g}")?;
    }
    Ok(())
}

//! Whatever a client sends: framing and parsing never panic or hang, a refused line always
//! has an MSN error code, and a parsed command written back parses to the same command.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use msngate::protocol::{decode, ClientCommand, ServerCommand};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode(&mut buf) {
        let _ = ServerCommand::parse(frame.clone());
        match ClientCommand::parse(frame) {
            Ok(command) => {
                let mut wire = format!("{command}\r\n").into_bytes();
                if let Some(payload) = payload(&command) {
                    wire.extend_from_slice(payload);
                }
                let mut again = BytesMut::from(&wire[..]);
                let frame = decode(&mut again)
                    .expect("a written command frames")
                    .expect("whole");
                assert_eq!(ClientCommand::parse(frame).as_ref(), Ok(&command));
            }
            Err(e) => assert!(e.code.code() >= 200),
        }
    }
});

fn payload(command: &ClientCommand) -> Option<&bytes::Bytes> {
    match command {
        ClientCommand::Msg { payload, .. }
        | ClientCommand::Sdc { payload, .. }
        | ClientCommand::Pag { payload, .. }
        | ClientCommand::Qry { payload, .. } => Some(payload),
        _ => None,
    }
}

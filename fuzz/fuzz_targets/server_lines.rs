//! What msncd's client, the load generator and the test client read: a server line that
//! parses can be written in every dialect that has it without panicking, and what reads back
//! from that is written the same way again. (A line parsed from an older dialect's form lacks
//! what a newer one adds, so it need not read back from every newer form.)
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use msngate::protocol::{decode, Dialect, ServerCommand};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode(&mut buf) {
        let Ok(command) = ServerCommand::parse(frame) else {
            continue;
        };
        for dialect in Dialect::SUPPORTED {
            if dialect.index() < command.since().index() {
                continue;
            }
            let wire = command.to_bytes(dialect);
            let mut again = BytesMut::from(&wire[..]);
            let Ok(Some(frame)) = decode(&mut again) else {
                continue;
            };
            if let Ok(parsed) = ServerCommand::parse(frame) {
                assert_eq!(parsed.to_bytes(dialect), wire);
            }
        }
    }
});

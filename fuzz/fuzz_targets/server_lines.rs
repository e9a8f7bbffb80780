//! What msncd's client, the load generator and the test client read: a server line that
//! parses is written back the same way, in every dialect that has it.
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
            let frame = decode(&mut again).expect("frames").expect("whole");
            let parsed = ServerCommand::parse(frame).expect("a written line parses");
            assert_eq!(parsed.to_bytes(dialect), wire);
        }
    }
});

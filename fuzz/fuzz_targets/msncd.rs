//! A whole msncd connection driven by the fuzz input, as a script would write it: the first
//! byte says whether to log in first, the rest is sent as the script's bytes. The server must
//! close the connection soon after the script does, whatever it sent.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

const HANDLES: &[&str] = &["erin@fuzz.test", "dave@fuzz.test"];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let h = common::harness(HANDLES);
    let address = h.running.msncd.tcp.expect("msncd listens");
    h.rt.block_on(async {
        let Some(lines) = common::Lines::connect(address).await else {
            return;
        };
        let mut input = Vec::new();
        if first & 0x80 != 0 {
            input.extend(format!("LOGIN {} {}\n", HANDLES[0], common::PASSWORD).into_bytes());
        }
        input.extend_from_slice(rest);
        lines.play_checking(&input, false).await;
    });
});

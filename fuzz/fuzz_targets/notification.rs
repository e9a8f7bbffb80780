//! A whole notification server connection driven by the fuzz input: the first byte says
//! whether to log in first (and in which dialect), the rest is sent as the client's bytes.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

const HANDLES: &[&str] = &["carol@fuzz.test", "dave@fuzz.test"];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let h = common::harness(HANDLES);
    let ns = h.running.notification_address;
    h.rt.block_on(async {
        let lines = if first & 0x80 != 0 {
            common::Lines::login(ns, HANDLES[0], common::dialect(first)).await
        } else {
            common::Lines::connect(ns).await
        };
        if let Some(lines) = lines {
            lines.play(rest).await;
        }
    });
});

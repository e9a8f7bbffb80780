//! A whole switchboard connection driven by the fuzz input. Alice and Bob stay logged in on
//! the notification server, online and on each other's lists; for each input Alice asks for a
//! switchboard (XFR SB) and joins it with her cookie, and when the first byte says so she calls
//! Bob and he answers, so the session has someone to deliver to. The rest of the input is then
//! sent as Alice's switchboard bytes.
#![no_main]

mod common;

use std::sync::Mutex;

use common::Lines;
use libfuzzer_sys::fuzz_target;

const ALICE: &str = "alice@fuzz.test";
const BOB: &str = "bob@fuzz.test";

/// Alice's and Bob's notification connections, kept between inputs.
struct Online {
    alice: Lines,
    bob: Lines,
    trid: u32,
}

static ONLINE: Mutex<Option<Online>> = Mutex::new(None);

async fn come_online(ns: std::net::SocketAddr) -> Option<Online> {
    let mut alice = Lines::login(ns, ALICE, "MSNP2").await?;
    let mut bob = Lines::login(ns, BOB, "MSNP2").await?;
    for (me, other) in [(&mut alice, BOB), (&mut bob, ALICE)] {
        for (t, list) in [(10, "FL"), (11, "AL")] {
            me.send(&format!("ADD {t} {list} {other} {other}")).await?;
            me.reply(t).await?;
        }
        me.send("SYN 12 0").await?;
        me.send("CHG 13 NLN").await?;
        me.reply(13).await?;
    }
    Some(Online {
        alice,
        bob,
        trid: 100,
    })
}

/// Alice's way into a new switchboard session, with Bob in it when `call` is set.
async fn open_session(
    online: &mut Online,
    call: bool,
) -> Option<(Lines, Option<Lines>)> {
    online.trid += 1;
    let t = online.trid;
    online.alice.send(&format!("XFR {t} SB")).await?;
    // Its answer, whatever it is: a refusal (`600` while her unanswered rings are at their
    // bound) ends this input at once instead of after a wait for a line that won't come.
    let xfr = online.alice.reply(t).await?;
    let fields: Vec<&str> = xfr.split(' ').collect();
    let address = fields.get(3)?.parse().ok()?;
    let cookie = fields.get(5)?;
    let mut sb = Lines::connect(address).await?;
    sb.send(&format!("USR 1 {ALICE} {cookie}")).await?;
    sb.until("USR 1 OK").await?;
    if !call {
        return Some((sb, None));
    }
    sb.send(&format!("CAL 2 {BOB}")).await?;
    let ring = online.bob.until("RNG ").await?;
    let fields: Vec<&str> = ring.split(' ').collect();
    let (session, address, cookie) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
    let mut bob = Lines::connect(address.parse().ok()?).await?;
    bob.send(&format!("ANS 1 {BOB} {cookie} {session}")).await?;
    bob.until("ANS 1 OK").await?;
    sb.until("JOI ").await?;
    Some((sb, Some(bob)))
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let h = common::harness(&[ALICE, BOB]);
    let ns = h.running.notification_address;
    let mut online = ONLINE.lock().unwrap();
    h.rt.block_on(async {
        if online.is_none() {
            *online = come_online(ns).await;
        }
        let Some(state) = online.as_mut() else {
            return;
        };
        let Some((alice, bob)) = open_session(state, first & 0x80 != 0).await else {
            // Something went wrong on the way in: start again from the logins next time.
            *online = None;
            return;
        };
        alice.play(rest).await;
        // Bob reads only now (a slow reader meanwhile), then leaves.
        if let Some(bob) = bob {
            bob.play(b"OUT\r\n").await;
        }
    });
});

//! Runs the transcript files in tests/transcripts/ against a real server over TCP.

mod common;

macro_rules! transcripts {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/transcripts")
                .join(concat!(stringify!($name), ".txt"));
            common::run_transcript(&path).await;
        }
    )*};
}

transcripts!(
    logon,
    url,
    msg_bad_length,
    ver,
    cvr,
    inf,
    usr,
    not_logged_in,
    syn,
    lst,
    gtc,
    blp,
    add_rem,
    chg,
    privacy,
    privacy_live,
    rea,
    fnd,
    snd,
    out,
    shutdown,
    errors,
    framing,
    dispatch,
    xfr_sb,
    sb_usr,
    cal,
    ans,
    msg,
    sb_out,
    cookie_expiry,
    login_timeout,
    persistence,
    msnp3_msn20,
    msnp4_msn22,
    msnp5_msn30,
    msnp6_msn36,
    chl_off,
    msnp7_msn46,
    gaim,
    amsn,
    kopete,
    adium,
    mixed,
);

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

transcripts!(logon);

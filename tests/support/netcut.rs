//! A TCP proxy in front of a test server whose link can be cut and restored: an outage as one
//! client (the bridge) sees it, while other clients reach the server directly.
//!
//! While cut, every connection it accepts is closed at once with a reset (as a port nobody
//! listens on refuses), and the connections it was relaying are cut too. It counts the
//! connections it accepts, so a test can see how often a client tries to reconnect.

// Each test binary uses some of these helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct State {
    cut: AtomicBool,
    accepted: AtomicUsize,
    relaying: Mutex<Vec<AbortHandle>>,
}

pub struct NetCut {
    port: u16,
    state: Arc<State>,
    acceptor: AbortHandle,
}

impl Drop for NetCut {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut_connections();
    }
}

impl NetCut {
    /// A proxy on a free loopback port relaying to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> NetCut {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                if shared.cut.load(Ordering::SeqCst) {
                    let _ = inbound.set_zero_linger();
                    drop(inbound);
                    continue;
                }
                let relay = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let mut relaying = shared.relaying.lock().expect("proxy lock");
                relaying.retain(|r| !r.is_finished());
                relaying.push(relay.abort_handle());
            }
        });
        NetCut {
            port,
            state,
            acceptor: acceptor.abort_handle(),
        }
    }

    /// The URL of an HTTP server behind the proxy.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts the link: open connections are closed, new ones refused.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.cut_connections();
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// How many connections the proxy has accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    fn cut_connections(&self) {
        let relaying = std::mem::take(&mut *self.state.relaying.lock().expect("proxy lock"));
        for relay in relaying {
            relay.abort();
        }
    }
}

//! A private nats-server for the cluster tests: installed from Debian when missing, on a free
//! loopback port, tied to the test process (it dies with it) and killed by its pid on drop.

// Only the cluster tests use it.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{apt_install, free_port, spawn_tied_to_process};

/// How long nats-server may take to answer after launch (about 55 ms here).
const READY_WITHIN: Duration = Duration::from_secs(10);

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
}

impl NatsServer {
    /// Installs nats-server if needed (failing with apt-get's output if it cannot be) and
    /// starts it on a free loopback port, returning once it greets clients.
    pub async fn start() -> NatsServer {
        apt_install("nats-server", &["nats-server"]).await;
        let mut server = NatsServer {
            child: None,
            port: free_port(),
        };
        server.start_again().await;
        server
    }

    /// Starts the server (again) on its port.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "nats-server is running already");
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied_to_process(cmd)
            .unwrap_or_else(|e| panic!("nats-server is installed but does not start: {e}"));
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Kills the server (SIGKILL, by its pid) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the server's `INFO` greeting.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("nats-server exited at start ({status}); port {}", self.port);
                }
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut greeting = [0u8; 4];
                if stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not answer on port {} within {READY_WITHIN:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The URL for `[cluster] nats`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

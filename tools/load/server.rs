//! The server under test: a separate process with its own config (self-contained runs), and
//! what /proc says about a server process (memory, CPU of the process and of its database
//! thread), ours or one given by `--server-pid`.

use std::fs::File;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Raises the soft open-file limit to the hard limit; the server process inherits it.
pub fn raise_fd_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a properly initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

pub fn free_port() -> Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server process to measure through /proc.
#[derive(Clone, Copy, Debug)]
pub struct Proc {
    pub pid: u32,
}

/// The server process under test, started by the tool.
pub struct Server {
    child: Option<Child>,
    pub proc: Proc,
    pub ns: SocketAddr,
}

impl Server {
    /// Starts `bin` with a config in `dir` (free loopback ports).
    pub fn start(
        bin: &Path,
        dir: &Path,
        db_path: &Path,
        log_level: &str,
        max_connections: usize,
    ) -> Result<Server> {
        let (ns_port, sb_port) = (free_port()?, free_port()?);
        let config = dir.join("msngate.toml");
        let db = db_path
            .to_str()
            .ok_or_else(|| anyhow!("the temporary path is not UTF-8"))?;
        // Not used by `serve` today; kept in the temporary directory all the same.
        let key_file = format!("{}/msngate.key", dir.display());
        std::fs::write(
            &config,
            format!(
                "[server]\nnotification_listen = \"127.0.0.1:{ns_port}\"\n\
                 switchboard_listen = \"127.0.0.1:{sb_port}\"\npublic_host = \"127.0.0.1\"\n\
                 max_connections = {max_connections}\n[storage]\ndatabase = {db:?}\n\
                 [log]\nlevel = {log_level:?}\n[secrets]\nkey_file = {key_file:?}\n"
            ),
        )?;
        let log = File::create(dir.join("server.log"))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_remove("RUST_LOG")
            .env_remove("MSNGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let mut server = Server {
            child: Some(child),
            proc: Proc { pid },
            ns: SocketAddr::from(([127, 0, 0, 1], ns_port)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                bail!("the server exited at start ({status}): {}", log.trim());
            }
            if std::net::TcpStream::connect(server.ns).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the server did not listen on {} within 30 s", server.ns);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let the probe connection end before anything is measured.
        std::thread::sleep(Duration::from_millis(300));
        Ok(server)
    }

    /// SIGTERM, then waits for the graceful shutdown; returns how long it took in ms.
    pub fn stop(mut self) -> Result<u128> {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        // SAFETY: sends a signal to our own child process.
        unsafe {
            libc::kill(self.proc.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = started + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("the server exited with {status}");
                }
                return Ok(started.elapsed().as_millis());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the server did not stop within 20 s of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Proc {
    /// A `/proc/PID/status` value in KiB, e.g. `VmRSS`.
    pub fn status_kib(&self, key: &str) -> Result<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no {key} in /proc/{}/status", self.pid))
    }

    pub fn rss_kib(&self) -> Result<u64> {
        self.status_kib("VmRSS")
    }

    pub fn cpu_s(&self) -> Result<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// CPU seconds of the server's database thread, which every store call goes through.
    pub fn store_cpu_s(&self) -> Result<f64> {
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let path = task?.path();
            if std::fs::read_to_string(path.join("comm"))?.trim() == "msngate-store" {
                return cpu_seconds(&path.join("stat").to_string_lossy());
            }
        }
        bail!("no msngate-store thread in the server process")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// User + system CPU seconds from a `/proc/.../stat` file.
pub fn cpu_seconds(stat_path: &str) -> Result<f64> {
    let text = std::fs::read_to_string(stat_path)?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')').ok_or_else(|| anyhow!("bad {stat_path}"))? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

pub fn own_cpu_s() -> Result<f64> {
    cpu_seconds("/proc/self/stat")
}

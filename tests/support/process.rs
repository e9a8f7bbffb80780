//! Processes for the test servers: installing them from Debian, spawning them tied to the test
//! process, stopping and starting them again, running short commands with a time limit, free
//! ports, and cleaning up after test processes that died.

// Each test binary uses some of these helpers.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Runs a short command to completion off the async threads, killing it after `timeout`.
pub async fn run_with_timeout(
    mut cmd: Command,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let name = format!("{cmd:?}");
    let mut child = cmd.spawn().map_err(|e| format!("{name}: {e}"))?;
    let pid = child.id();
    // Drain the pipes on threads so a chatty command can't block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{name} (pid {pid}) timed out after {timeout:?}"));
            }
            Err(e) => return Err(format!("{name}: {e}")),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// Spawns `cmd` so that it gets SIGKILL when this process dies (PR_SET_PDEATHSIG).
///
/// The kernel sends that signal when the *thread* that forked the child exits, not the
/// process, so all such children are forked by one thread that lives as long as the process.
pub fn spawn_tied_to_process(cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("prosody-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let parent = std::process::id();
                    // SAFETY: only async-signal-safe calls between fork and exec.
                    unsafe {
                        cmd.pre_exec(move || {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            // The parent may have died before prctl: then go now.
                            if libc::getppid() as u32 != parent {
                                libc::_exit(1);
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .expect("spawner lock")
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

/// Sends `sig` to a child that has not been reaped yet.
pub fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Stops a server as an administrator would (SIGTERM) and waits for it to exit, with SIGKILL
/// once `timeout` has passed.
pub async fn stop_gracefully(mut child: Child, timeout: Duration) {
    signal(&child, libc::SIGTERM);
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

/// A test server run as a child process that can be stopped and started again on the same
/// ports and data: Prosody, ejabberd, Synapse. Each implements how to launch; stopping, killing
/// and starting again are [`stop`], [`kill`] and [`start_again`], the same for all.
pub trait ServerProcess {
    /// The server's name, for messages.
    const NAME: &'static str;
    /// How long SIGTERM may take before SIGKILL.
    const STOP_TIMEOUT: Duration;
    /// How long [`start_again`] keeps retrying a launch whose failure is worth retrying.
    const RESTART_PATIENCE: Duration;

    /// The running process, if any.
    fn child(&mut self) -> &mut Option<Child>;
    /// Writes the config, spawns the server into [`child`](Self::child) and waits until it
    /// serves.
    fn launch(&mut self) -> impl std::future::Future<Output = Result<(), String>>;
    /// Whether a failed launch may succeed if tried again soon (a port still held briefly by
    /// the process that just exited).
    fn worth_retrying(error: &str) -> bool;
}

/// Kills the server at once (SIGKILL) and reaps it.
pub fn kill<S: ServerProcess>(server: &mut S) {
    if let Some(mut child) = server.child().take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Stops the server as an administrator would (see [`stop_gracefully`]). Data is kept.
pub async fn stop<S: ServerProcess>(server: &mut S) {
    if let Some(child) = server.child().take() {
        stop_gracefully(child, S::STOP_TIMEOUT).await;
    }
}

/// Starts a stopped server again, on the same ports with the same data, retrying for up to
/// [`ServerProcess::RESTART_PATIENCE`] while its launch fails in a way worth retrying.
pub async fn start_again<S: ServerProcess>(server: &mut S) {
    assert!(server.child().is_none(), "{} is already running", S::NAME);
    let deadline = Instant::now() + S::RESTART_PATIENCE;
    loop {
        match server.launch().await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline && S::worth_retrying(&e) => {
                eprintln!("{} did not start again yet: {e}", S::NAME);
                kill(server);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                kill(server);
                panic!("{} did not start again: {e}", S::NAME);
            }
        }
    }
}

/// One lock for every apt-get the harnesses run: dpkg takes one install at a time, and test
/// binaries may start servers in parallel.
const APT_LOCK: &str = "/tmp/msngate-apt-install.lock";
/// apt-get update + install; 10-30 s on a fresh machine.
const APT_TIMEOUT: Duration = Duration::from_secs(600);

/// Installs the Debian `package` with apt-get unless all of `programs` are on the PATH. Holds
/// an flock on [`APT_LOCK`] meanwhile and looks again under the lock, so that parallel test
/// binaries install it once. Panics with apt-get's output if it fails.
///
/// Packages of servers start a system-wide instance of their own when installed (on the default
/// ports, as another user); the test instances need none. Unless the machine already has a
/// policy, a `policy-rc.d` that denies every service action (Debian's documented way, honoured
/// by invoke-rc.d and deb-systemd-invoke) is in place for the duration of the install.
pub async fn apt_install(package: &str, programs: &[&str]) {
    if programs.iter().all(|p| on_path(p)) {
        return;
    }
    let check = programs
        .iter()
        .map(|p| format!("command -v {p} >/dev/null 2>&1"))
        .collect::<Vec<_>>()
        .join(" && ");
    let script = format!(
        "{check} && exit 0
        policy=/usr/sbin/policy-rc.d
        if [ ! -e $policy ]; then
            printf '#!/bin/sh\\nexit 101\\n' > $policy && chmod 755 $policy
            trap 'rm -f $policy' EXIT
        fi
        apt-get update && DEBIAN_FRONTEND=noninteractive \\
            apt-get install -y -o DPkg::Lock::Timeout=300 {package}"
    );
    let mut cmd = Command::new("flock");
    cmd.args([APT_LOCK, "sh", "-c", &script]);
    let started = Instant::now();
    let out = run_with_timeout(cmd, APT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("installing {package}: {e}"));
    assert!(
        out.status.success() && programs.iter().all(|p| on_path(p)),
        "installing {package} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{package} was missing: installed (or waited for another test binary installing it) \
         in {:.1?}",
        started.elapsed()
    );
}

/// Whether `program` is a file in one of the PATH's directories.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Deletes the instance directories (`$TMPDIR/<prefix>XXXXXX`, each with an `owner` file
/// holding the test process's pid) of test processes that died without cleaning up (killed
/// with SIGKILL, say; their servers died with them thanks to PR_SET_PDEATHSIG).
pub fn remove_abandoned_dirs(prefix: &str) {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_instance = entry.file_name().to_string_lossy().starts_with(prefix)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_instance {
            continue;
        }
        let owner = fs::read_to_string(path.join("owner"))
            .ok()
            .and_then(|s| s.trim().parse::<libc::pid_t>().ok());
        let abandoned = match owner {
            // SAFETY: kill(2) with signal 0 only checks whether the process exists.
            Some(pid) => {
                (unsafe { libc::kill(pid, 0) }) != 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
            }
            // Being created right now, or very old: judge by age.
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(600)),
        };
        if abandoned {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

//! `msngate-load` works: each scenario at `--quick` sizes against a running msngate (accounts
//! made with `msngate user add`, logons directly or through the dispatch server, several
//! dialects, challenges on), and the self-contained mode that starts the server itself. The
//! figures are not judged, only that the runs are complete: every logon, every message,
//! every watcher.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

mod common;

use common::free_port;

const MSNGATE: &str = env!("CARGO_BIN_EXE_msngate");
const LOAD: &str = env!("CARGO_BIN_EXE_msngate-load");

/// `msngate serve` on free loopback ports, with a dispatch listener and MSNP6 challenges.
struct Served {
    _dir: tempfile::TempDir,
    config: PathBuf,
    ns: u16,
    ds: u16,
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let (ns, sb, ds) = (free_port(), free_port(), free_port());
    let config = dir.path().join("msngate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nnotification_listen = \"127.0.0.1:{ns}\"\n\
             switchboard_listen = \"127.0.0.1:{sb}\"\ndispatch_listen = \"127.0.0.1:{ds}\"\n\
             public_host = \"127.0.0.1\"\n[storage]\ndatabase = \"{}\"\n\
             [secrets]\nkey_file = \"{}\"\n[client]\nchallenges = true\n",
            dir.path().join("msngate.db").display(),
            dir.path().join("msngate.key").display(),
        ),
    )
    .unwrap();
    let child = Command::new(MSNGATE)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("RUST_LOG")
        .env_remove("MSNGATE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_listening(("127.0.0.1", ns));
    Served {
        _dir: dir,
        config,
        ns,
        ds,
        child,
    }
}

/// Runs `msngate-load ARGS`, asserts it succeeded, and returns the fields of its line that
/// starts with `scenario:`.
fn load(args: &[&str], scenario: &str) -> HashMap<String, String> {
    fields(&run_load(args), scenario)
}

/// Runs `msngate-load ARGS`, asserts it succeeded, and returns what it printed.
fn run_load(args: &[&str]) -> String {
    let out = Command::new(LOAD)
        .args(args)
        .env_remove("MSNGATE_LOAD_PASSWORD")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "msngate-load {args:?}: {}\n{stdout}\n{stderr}",
        out.status
    );
    stdout.into_owned()
}

/// The fields of the line of `stdout` that starts with `scenario:`.
fn fields(stdout: &str, scenario: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{scenario}: ")))
        .unwrap_or_else(|| panic!("no `{scenario}:` line in\n{stdout}"));
    line.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `--ns` (or `--dispatch`) at `served`, accounts made with `msngate user add`.
fn external(served: &Served, via_dispatch: bool, rest: &[&str]) -> Vec<String> {
    let mut args = vec![
        if via_dispatch { "--dispatch" } else { "--ns" }.to_string(),
        format!(
            "127.0.0.1:{}",
            if via_dispatch { served.ds } else { served.ns }
        ),
        "--msngate".to_string(),
        MSNGATE.to_string(),
        "--config".to_string(),
        served.config.display().to_string(),
        "--server-pid".to_string(),
        served.child.id().to_string(),
        "--quick".to_string(),
    ];
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

fn run_external(served: &Served, via_dispatch: bool, rest: &[&str], scenario: &str) -> Fields {
    let args = external(served, via_dispatch, rest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Fields(load(&args, scenario))
}

struct Fields(HashMap<String, String>);

impl Fields {
    fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.0))
    }

    fn number(&self, key: &str) -> f64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key}={} is not a number", self.get(key)))
    }
}

fn check_logon(f: &Fields) {
    assert_eq!(f.get("seq_logons"), "5");
    assert_eq!(f.get("conc_logons"), "20");
    assert!(f.number("seq_logons_per_s") > 0.0);
    assert!(f.number("conc_logons_per_s") > 0.0);
    // The server's pid is known: its CPU is a number, not `na`.
    assert!(f.number("conc_server_cpu_ms_per_logon") >= 0.0);
}

fn check_chat(f: &Fields) {
    assert_eq!(f.get("received"), "100/100");
    assert_eq!(f.get("naks"), "0");
    assert_eq!(f.get("relay_received"), "100/100");
    assert!(f.number("msgs_per_s") > 0.0 && f.number("relay_msgs_per_s") > 0.0);
    assert!(f.number("ratio_msngate_to_relay").is_finite());
    assert!(f.number("ack_p99_ms") >= f.number("ack_p50_ms"));
}

fn check_fanout(f: &Fields) {
    assert_eq!(f.get("watchers_seen"), "5/5");
    assert_eq!(
        f.get("last_ms").split(',').count(),
        3,
        "one figure per round"
    );
    assert!(f.number("last_median_ms") >= f.number("p50_median_ms"));
}

#[test]
fn every_scenario_runs_against_a_running_server() {
    let served = serve();
    // A prefix per scenario, so that each one's lists are its own.
    let f = run_external(&served, false, &["--accounts", "lg", "logon"], "logon");
    check_logon(&f);
    let f = run_external(&served, false, &["--accounts", "id", "idle"], "idle");
    assert_eq!(f.get("contacts_seen"), "40/40");
    assert_eq!(f.get("closed_early"), "0");
    assert!(f.number("per_session_kib").is_finite());
    let f = run_external(&served, false, &["--accounts", "ch", "chat"], "chat");
    check_chat(&f);
    let f = run_external(&served, false, &["--accounts", "fo", "fanout"], "fanout");
    check_fanout(&f);
    // A second run finds the accounts and list entries there and keeps them.
    let f = run_external(&served, false, &["--accounts", "fo", "fanout"], "fanout");
    check_fanout(&f);
}

#[test]
fn later_dialects_and_the_dispatch_server() {
    let served = serve();
    let msnp7 = ["--dialect", "MSNP7", "--accounts", "seven"];
    check_logon(&run_external(
        &served,
        true,
        &[&msnp7[..], &["logon"]].concat(),
        "logon",
    ));
    check_fanout(&run_external(
        &served,
        true,
        &[&msnp7[..], &["fanout"]].concat(),
        "fanout",
    ));
    // Two notification servers given (the same one twice): watchers are spread round-robin.
    let ns = format!("127.0.0.1:{}", served.ns);
    let two = ["--ns", &ns, "--accounts", "two", "fanout"];
    let f = run_external(&served, false, &two, "fanout");
    check_fanout(&f);
    assert_eq!(f.get("nodes"), "2");
    let msnp5 = ["--dialect", "5", "--accounts", "five"];
    check_chat(&run_external(
        &served,
        false,
        &[&msnp5[..], &["chat"]].concat(),
        "chat",
    ));
}

#[test]
fn self_contained_mode_starts_the_server_and_reads_its_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path().to_str().unwrap();
    let f = Fields(load(
        &["--server", MSNGATE, "--tmp", tmp, "--quick", "idle"],
        "idle",
    ));
    assert_eq!(f.get("contacts_seen"), "40/40");
    assert!(f.number("rss_after_kib") > 0.0);
    let f = Fields(load(
        &["--server", MSNGATE, "--tmp", tmp, "--quick", "chat"],
        "chat",
    ));
    check_chat(&f);
    // The temporary directory is removed after a successful run.
    assert_eq!(std::fs::read_dir(Path::new(tmp)).unwrap().count(), 0);
}

/// `--hold` keeps sessions online through a scenario, which runs as it does without them.
#[test]
fn held_sessions_stay_online_through_the_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path().to_str().unwrap();
    let args = [
        "--server", MSNGATE, "--tmp", tmp, "--quick", "--hold", "30", "fanout",
    ];
    let stdout = run_load(&args);
    let held = Fields(fields(&stdout, "hold"));
    assert_eq!(held.get("sessions"), "30");
    assert!(held.number("server_rss_kib") > 0.0);
    check_fanout(&Fields(fields(&stdout, "fanout")));
    // The held sessions are online before the scenario starts.
    let (hold, fanout) = (
        stdout.find("hold: ").unwrap(),
        stdout.find("fanout: ").unwrap(),
    );
    assert!(hold < fanout, "{stdout}");
}

/// `floor` serves a logon's lines with fixed answers, and `logon` runs against it: the floor
/// under the logon's server CPU is measured the way msngate's is.
#[test]
fn the_logon_floor_answers_the_load_tools_logons() {
    let port = free_port();
    let mut floor = Command::new(LOAD)
        .args(["floor", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_listening(("127.0.0.1", port));
    let pid = floor.id().to_string();
    let address = format!("127.0.0.1:{port}");
    let args = [
        "--ns",
        &address,
        "--server-pid",
        &pid,
        "--quick",
        "logon",
        "--contacts",
        "0",
    ];
    let f = Fields(load(&args, "logon"));
    let _ = floor.kill();
    let _ = floor.wait();
    check_logon(&f);
}

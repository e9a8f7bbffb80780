//! A headless Chromium driven over WebDriver (chromedriver) with fantoccini, for the
//! self-service page's end-to-end tests.
//!
//! `Browser::start` installs Debian's `chromium` and `chromium-driver` if the machine lacks
//! them (like Prosody, see `process::apt_install`), starts chromedriver on a free loopback port
//! in a process group of its own, tied to the test process, and opens a session with a phone-
//! sized window. Dropping the value kills the whole group, so no browser outlives its test.

// Each test binary uses some of these helpers.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use super::process::{apt_install, free_port, spawn_tied_to_process};

/// How long chromedriver may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where screenshots go: the test's temporary directory.
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start(shots: &Path) -> Browser {
        apt_install("chromium chromium-driver", &["chromium", "chromedriver"]).await;
        let port = free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let driver = spawn_tied_to_process(cmd).expect("start chromedriver");
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=412,915",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Browser {
            client,
            driver,
            shots: shots.to_owned(),
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("load the page");
    }

    /// The visible text of the page; empty while a new page is replacing it (its elements
    /// are then gone or not there yet).
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Saves a screenshot as NAME.png in the test's directory and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Types `value` into the field with this CSS selector.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field {css}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Clicks the button with this text and waits for the next page.
    pub async fn click_button(&self, label: &str) {
        let xpath = format!("//button[normalize-space()='{label}']");
        let button = self
            .client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button {label:?}: {e}"));
        button.click().await.unwrap();
        // WebDriver's click returns once the navigation it started has loaded.
    }

    /// Waits until the page's text contains `needle`, and returns the text.
    pub async fn wait_for_text(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.text().await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {needle:?}; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own group: kill it and the browsers it started.
        if let Ok(pid) = libc::pid_t::try_from(self.driver.id()) {
            // SAFETY: kill(2) on the process group of a child we have not reaped.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.driver.wait();
    }
}

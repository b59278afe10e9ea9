//! Headless Chromium, driven over WebDriver: `chromedriver` on a free loopback port and the
//! `fantoccini` client. Debian's `chromium` and `chromium-driver` packages provide both
//! (`.ci/run` installs them). The driver is stopped by PID when the [`Browser`] is dropped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::free_port;

/// How long a condition on the page may take to hold: generous, for a loaded 2-core box.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Flags that work as root on a machine without network or GPU, with a fresh profile.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// The first of `names` found on `PATH`.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session with a `width` × `height`
    /// window.
    pub fn start(width: u32, height: u32) -> Browser {
        let chromium = which(&["chromium", "chromium-browser"]).expect(
            "chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)",
        );
        let chromedriver = which(&["chromedriver"]).expect(
            "chromedriver is not installed: apt-get install chromium-driver (.ci/run does)",
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn chromedriver");
            if !wait_listening(&mut driver, port) {
                let _ = driver.kill();
                let _ = driver.wait();
                last = format!("chromedriver did not listen on {port}");
                continue;
            }
            let profile = tempfile::tempdir().unwrap();
            let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
            args.push(format!("--user-data-dir={}", profile.path().display()));
            args.push(format!("--window-size={width},{height}"));
            let caps = json!({
                "goog:chromeOptions": {"binary": chromium, "args": args},
            });
            let serde_json::Value::Object(caps) = caps else {
                unreachable!()
            };
            let connected = rt.block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            );
            match connected {
                Ok(client) => {
                    return Browser {
                        rt,
                        client: Some(client),
                        driver,
                        _profile: profile,
                    }
                }
                Err(e) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    last = format!("no WebDriver session: {e}");
                }
            }
        }
        panic!("headless Chromium did not start: {last}");
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open session")
    }

    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` in the page (`arguments` are `args`) and returns its value.
    pub fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt
            .block_on(self.client().execute(script, args))
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// The text of the element with this id, as rendered (empty when hidden); `None` when
    /// there is no such element.
    pub fn text(&self, id: &str) -> Option<String> {
        self.eval(
            "const e = document.getElementById(arguments[0]); return e ? e.innerText : null;",
            vec![json!(id)],
        )
        .as_str()
        .map(str::to_owned)
    }

    /// Whether the element with this id is on the page and shown.
    pub fn shown(&self, id: &str) -> bool {
        self.eval(
            "const e = document.getElementById(arguments[0]); \
             return !!e && e.offsetParent !== null && !e.closest('[hidden]');",
            vec![json!(id)],
        )
        .as_bool()
        .unwrap_or(false)
    }

    /// Polls `check` until it returns a value or [`DEADLINE`] passes; then fails naming
    /// `what` and showing the page's text.
    pub fn wait_for<T>(&self, what: &str, check: impl Fn(&Browser) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.eval("return document.body.innerText;", vec![]);
                panic!(
                    "the page did not show {what} within {DEADLINE:?}; it shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types `text` into the element matched by the CSS selector.
    pub fn type_into(&self, css: &str, text: &str) {
        self.rt.block_on(async {
            let el = self.client().find(Locator::Css(css)).await.unwrap();
            el.send_keys(text).await.unwrap();
        });
    }

    pub fn click(&self, css: &str) {
        self.rt.block_on(async {
            let el = self.client().find(Locator::Css(css)).await.unwrap();
            el.click().await.unwrap();
        });
    }

    /// Sets the window's size.
    pub fn resize(&self, width: u32, height: u32) {
        self.rt
            .block_on(self.client().set_window_size(width, height))
            .expect("resize");
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        self.rt
            .block_on(self.client().screenshot())
            .expect("screenshot")
    }
}

/// Waits for the driver to accept connections (or to exit).
fn wait_listening(driver: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if driver.try_wait().ok().flatten().is_some() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver stop its Chromium; then the driver goes.
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

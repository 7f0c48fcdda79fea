//! A WebDriver session with chromedriver driving Debian's headless Chromium, for the
//! tests of the web page: go to a URL, find elements, run a script, wait for text, click,
//! type, and save screenshots under `target/browser/`.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::bins::{secs, Proc};
use crate::wait;

/// A WebDriver session with chromedriver driving Debian's headless Chromium.
pub struct Browser {
    _driver: Proc,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(std::path::Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (scripts/test-all.sh does)");
        }
        // Port 0: chromedriver picks a free port and says which (no race for one).
        let mut cmd = Command::new("/usr/bin/chromedriver");
        cmd.arg("--port=0");
        let driver = Proc::spawn("chromedriver", cmd);
        let port: u16 = wait::until("chromedriver's port", secs(20), || {
            driver
                .output()
                .lines()
                .find_map(|l| l.split("started successfully on port ").nth(1))
                .and_then(|p| p.trim().trim_end_matches('.').parse().ok())
        });
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().expect("tempdir");
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(secs(60))
            .build()
            .expect("building a reqwest client");
        let base = format!("http://{addr}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .expect("chromedriver answers")
            .json()
            .expect("chromedriver answers JSON");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            _driver: driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    pub fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = req
            .send()
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"))
            .json()
            .unwrap_or_else(|e| panic!("webdriver {path}: not JSON: {e}"));
        assert!(v["value"].get("error").is_none(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url}));
    }

    pub fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element for {css}: {v}"))
            .to_string()
    }

    pub fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    pub fn wait_text(&self, css: &str, needle: &str) -> String {
        let mut last = String::new();
        let found = (0..200).any(|_| {
            last = self
                .js(&format!(
                    "const e = document.querySelector({css:?}); return e ? e.innerText : '';"
                ))
                .as_str()
                .unwrap_or("")
                .to_string();
            if last.contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
            false
        });
        assert!(found, "{css} never showed {needle:?}; last text: {last:?}");
        last
    }

    pub fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let b64 = self.cmd("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("the screenshot is base64");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "screenshot {name} is not a real PNG"
        );
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser");
        std::fs::create_dir_all(&dir).expect("creating target/browser");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
    }
}

impl Browser {
    /// Click the element `css` selects.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), json!({}));
    }

    /// Replace the text of the input `css` selects.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({"text": text}),
        );
    }

    /// The page's current URL.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Run `script` (a function body returning a value) until it returns something
    /// other than `null`/`false`, up to 20 s; panics with `what` otherwise.
    pub fn wait_js(&self, what: &str, script: &str) -> Value {
        wait::until(what, secs(20), || {
            let v = self.js(script);
            (!v.is_null() && v != Value::Bool(false)).then_some(v)
        })
    }
}

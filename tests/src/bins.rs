//! The real binaries, as child processes that are killed when the test drops them.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Path of a workspace binary in the same target profile as the running test.
pub fn bin_path(name: &str) -> PathBuf {
    // The test executable is target/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("current_exe is always available in tests");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first with `cargo build --workspace --bins`",
        p.display()
    );
    p
}

/// A free TCP port on `ip`, bound and released: another process may take it before the
/// child binds it. Prefer binaries that bind port 0 and report the address (the sidecar
/// does); this is for the few servers that cannot.
pub fn free_addr(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("binding port 0 on loopback");
    l.local_addr().expect("bound listener has an address")
}

/// A running child process; killed (SIGKILL) on drop unless already waited for.
/// Its stderr and stdout lines are captured for diagnostics; stdout lines also on their
/// own, for [`Proc::wait_line`].
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub output: Arc<Mutex<Vec<String>>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Start `cmd` with piped output.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        for (pipe, own) in [
            (
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                Some(stdout.clone()),
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                None,
            ),
        ] {
            let Some(pipe) = pipe else { continue };
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if std::env::var_os("WHOUSES_TEST_ECHO").is_some() {
                        eprintln!("{line}");
                    }
                    if let Some(own) = &own {
                        own.lock().map(|mut o| o.push(line.clone())).ok();
                    }
                    out.lock().map(|mut o| o.push(line)).ok();
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            output,
            stdout,
        }
    }

    /// Wait for a stdout line that `matches`, up to `timeout`; panics with the output if
    /// the process exits first or the time runs out.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let found = self
                .stdout
                .lock()
                .ok()
                .and_then(|o| o.iter().find(|l| matches(l)).cloned());
            if let Some(line) = found {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} exited ({status}) before printing {what}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            if std::time::Instant::now() >= deadline {
                panic!(
                    "{} did not print {what} within {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.join("\n")).unwrap_or_default()
    }

    /// Send a signal by name (`TERM`, `KILL`, `INT`, `STOP`, `CONT`) with `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {} ({}) failed", self.pid(), self.name);
    }

    /// Wait for exit, up to `timeout`; returns the exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => panic!(
                    "{} did not exit within {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                ),
            }
        }
    }

    /// Peak resident set size (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Current resident set size (VmRSS) in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- output of {} ----\n{}", self.name, self.output());
        }
    }
}

/// `Duration` helper for readability in tests.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

//! The real `intake` binary in child processes, for crash, scale and chaos tests.
//!
//! [`Intake`] describes one process (subcommand, config, environment, log file) and
//! [`Intake::spawn`] starts it. A thread copies its stderr (the tracing log) line by line to
//! the log file (appended, so a restarted process can share its predecessor's file) and keeps
//! every line in memory, so a test can wait for a log line ([`Proc::wait_for`]), ask whether
//! one was seen ([`Proc::saw`]) or count them ([`Proc::count`]). [`Proc::kill`] delivers a
//! SIGKILL and reaps the process; [`Proc::terminate`] a SIGTERM (graceful stop). A [`Proc`]
//! still running when dropped is SIGKILLed, so a failing test leaves no process behind.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How an `intake` child process is started.
#[derive(Debug, Clone)]
pub struct Intake {
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    log: PathBuf,
    stdout: bool,
}

/// `intake <args…>`, logging to `log` (appended). `RUST_LOG` is `info,rdkafka=warn` and
/// `NO_COLOR=1` unless [`Intake::env`] says otherwise.
pub fn intake(args: &[&str], log: impl Into<PathBuf>) -> Intake {
    Intake {
        args: args.iter().map(OsString::from).collect(),
        env: vec![
            ("RUST_LOG".into(), "info,rdkafka=warn".into()),
            ("NO_COLOR".into(), "1".into()),
        ],
        log: log.into(),
        stdout: false,
    }
}

impl Intake {
    /// Adds `--config <path>`.
    pub fn config(mut self, path: &Path) -> Self {
        self.args.push("--config".into());
        self.args.push(path.into());
        self
    }

    /// Adds one more argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Sets an environment variable (replacing a default of the same name).
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.retain(|(n, _)| n != k);
        self.env.push((k.to_owned(), v.into()));
        self
    }

    /// Captures stdout (read it with [`Proc::wait_output`]); by default it is discarded.
    pub fn capture_stdout(mut self) -> Self {
        self.stdout = true;
        self
    }

    /// Starts the process with its stdout captured and waits up to `timeout` for it to exit by
    /// itself ([`Proc::wait_output`]): its status and its stdout.
    pub fn run_output(self, timeout: Duration) -> (ExitStatus, String) {
        self.capture_stdout().spawn().wait_output(timeout)
    }

    /// Starts the process.
    pub fn spawn(&self) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_intake"));
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(if self.stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn intake {:?}: {e}", self.args));
        let stderr = child.stderr.take().unwrap();
        let lines: Arc<Lines> = Arc::default();
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", self.log.display()));
        let seen = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(out, "{line}");
                seen.push(line);
            }
            seen.close();
        });
        Proc {
            child: Some(child),
            pid: 0,
            log: self.log.clone(),
            lines,
            reader: Some(reader),
        }
        .with_pid()
    }
}

/// Every stderr line of one process, and a signal for waiters.
#[derive(Default)]
struct Lines {
    state: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn push(&self, line: String) {
        self.state.lock().unwrap().0.push(line);
        self.changed.notify_all();
    }
    fn close(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

/// A running (or finished) `intake` child process.
pub struct Proc {
    child: Option<Child>,
    pid: u32,
    /// Its log file.
    pub log: PathBuf,
    lines: Arc<Lines>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn with_pid(mut self) -> Self {
        self.pid = self.child.as_ref().unwrap().id();
        self
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether a stderr line so far contains `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        self.count(needle) > 0
    }

    /// How many stderr lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        let st = self.lines.state.lock().unwrap();
        st.0.iter().filter(|l| l.contains(needle)).count()
    }

    /// Whether a stderr line so far satisfies `pred`.
    pub fn any_line(&self, pred: impl Fn(&str) -> bool) -> bool {
        let st = self.lines.state.lock().unwrap();
        st.0.iter().any(|l| pred(l))
    }

    /// Waits until at least `n` stderr lines contain `needle`; false at the timeout or when
    /// the process closed its stderr (ended) first.
    pub fn wait_for(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lines.state.lock().unwrap();
        loop {
            if st.0.iter().filter(|l| l.contains(needle)).count() >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if st.1 || left.is_zero() {
                return false;
            }
            st = self.lines.changed.wait_timeout(st, left).unwrap().0;
        }
    }

    /// The exit status if the process has ended (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().unwrap()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// SIGKILLs the process and reaps it. Panics (with the log's tail) unless it was running
    /// and died of the SIGKILL: a stage that ended by itself is a finding, not a kill.
    pub fn kill(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("the process was already reaped");
        if let Some(status) = c.try_wait().unwrap() {
            self.child = Some(c);
            panic!(
                "{} ended by itself ({status}) before its SIGKILL\n{}",
                self.log.display(),
                self.tail(30)
            );
        }
        c.kill().expect("SIGKILL");
        let status = c.wait().unwrap();
        self.join_reader();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{}: died of the SIGKILL",
            self.log.display()
        );
        status
    }

    /// SIGTERMs the process (graceful stop) and waits up to `timeout` for it to exit; then
    /// SIGKILLs it and panics.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let c = self.child.as_mut().expect("the process was already reaped");
        // SAFETY: a plain kill(2) of our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(self.pid as i32, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                self.join_reader();
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                self.child = None;
                panic!(
                    "{} did not stop within {timeout:?} of a SIGTERM\n{}",
                    self.log.display(),
                    self.tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; returns its status and its
    /// stdout (empty unless captured). A process that failed prints its log's last lines to
    /// the test's output (the caller's assertion shows stdout only). At the timeout it is
    /// SIGKILLed and the test panics.
    pub fn wait_output(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let mut c = self.child.take().expect("the process was already reaped");
        let mut stdout = c.stdout.take();
        // Read stdout concurrently so a full pipe cannot stall the child.
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = stdout.as_mut() {
                let _ = o.read_to_string(&mut s);
            }
            s
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = c.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{} did not finish in {timeout:?}\n{}",
                    self.log.display(),
                    self.tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.join_reader();
        if !status.success() {
            // The caller's assertion shows stdout; the reason is in the log (stderr).
            eprintln!(
                "{} exited with {status}; its log ends:\n{}",
                self.log.display(),
                self.tail(30)
            );
        }
        (status, out.join().unwrap())
    }

    /// The last `n` lines of the log file (all lives that shared it).
    pub fn tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last `n` lines of a log file.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a log line carries `field` = `value` (JSON or key=value logs).
pub fn has_field(line: &str, field: &str, value: &str) -> bool {
    line.contains(&format!("\"{field}\":{value}"))
        || line.contains(&format!("\"{field}\":\"{value}\""))
        || line.contains(&format!("{field}={value}"))
}

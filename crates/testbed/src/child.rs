//! A child-process guard: whatever happens to the test, the process is stopped and reaped, and
//! its output is kept for the failure message.

use std::fmt;
use std::io::{self, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a process gets to act on SIGTERM (ustack prints its counters then) before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for the pipe readers after the process is gone. They only outlive it when a
/// grandchild inherited the pipes; then we keep what was read so far rather than hang.
const READER_GRACE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(10);

/// What a finished (or stopped) process left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// True when the process did not exit by itself within the time it was given.
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, or None when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Everything a reader needs to diagnose a failure: command, how it ended, both streams.
impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        write!(f, "[{}", self.status)?;
        if self.timed_out {
            write!(f, ", killed after timing out")?;
        }
        writeln!(f, "]")?;
        writeln!(f, "--- stdout ---")?;
        writeln!(f, "{}", self.stdout.trim_end())?;
        writeln!(f, "--- stderr ---")?;
        write!(f, "{}", self.stderr.trim_end())
    }
}

/// A running process whose stdout and stderr are drained on threads (so a chatty process never
/// blocks on a full pipe) and which is terminated when dropped: SIGTERM, then SIGKILL after 3 s.
pub struct Child {
    command: String,
    process: Option<std::process::Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Child {
    /// Spawns `cmd` with stdin from /dev/null (nothing here is interactive, and CI has no stdin)
    /// and both output streams captured.
    pub fn spawn(mut cmd: Command) -> io::Result<Child> {
        let command = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {command}: {e}")))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = process.stdout.take() {
            readers.push(drain(pipe, Arc::clone(&stdout)));
        }
        if let Some(pipe) = process.stderr.take() {
            readers.push(drain(pipe, Arc::clone(&stderr)));
        }
        Ok(Child {
            command,
            process: Some(process),
            stdout,
            stderr,
            readers,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, |p| p.id())
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// Whether the process has exited, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.process.as_mut() {
            Some(p) => p.try_wait(),
            None => Ok(None),
        }
    }

    /// What the process has written to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        lossy(&self.stdout)
    }

    /// What the process has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        lossy(&self.stderr)
    }

    /// Waits for the process to exit by itself; past `timeout` it is terminated and the output
    /// is marked `timed_out`.
    pub fn wait_timeout(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut process = self.process.take().expect("process present until consumed");
        let status = loop {
            match process.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                // Timed out, or try_wait failed (which leaves terminate as the only way out).
                _ => break None,
            }
        };
        let (status, timed_out) = match status {
            Some(status) => (status, false),
            None => (terminate(&mut process), true),
        };
        self.finish(status, timed_out)
    }

    /// Asks the process to stop (SIGTERM, then SIGKILL after 3 s) and collects its output.
    /// ustack exits 0 on SIGTERM after printing its counters, so this is how tests read them.
    pub fn stop(mut self) -> Output {
        let mut process = self.process.take().expect("process present until consumed");
        let status = terminate(&mut process);
        self.finish(status, false)
    }

    fn finish(&mut self, status: ExitStatus, timed_out: bool) -> Output {
        let deadline = Instant::now() + READER_GRACE;
        for reader in std::mem::take(&mut self.readers) {
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        Output {
            command: self.command.clone(),
            status,
            stdout: lossy(&self.stdout),
            stderr: lossy(&self.stderr),
            timed_out,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            terminate(&mut process);
        }
    }
}

/// SIGTERM, wait up to `TERM_GRACE`, then SIGKILL; always reaps, so no zombie is left.
fn terminate(process: &mut std::process::Child) -> ExitStatus {
    if let Ok(Some(status)) = process.try_wait() {
        return status;
    }
    if let Ok(pid) = libc::pid_t::try_from(process.id()) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child, so it
        // cannot have been recycled for another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        match process.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => std::thread::sleep(POLL),
            Err(_) => break,
        }
    }
    let _ = process.kill();
    loop {
        match process.wait() {
            Ok(status) => return status,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("cannot reap child {}: {e}", process.id()),
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    })
}

fn lossy(buf: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// `program arg arg` for messages, quoting only what needs it.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| {
            let s = s.to_string_lossy();
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("{s:?}")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion (or until `timeout`, then terminates it) and returns its output.
pub fn run(cmd: Command, timeout: Duration) -> io::Result<Output> {
    Ok(Child::spawn(cmd)?.wait_timeout(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn run_collects_both_streams_and_status() {
        let out = run(
            sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.code(), Some(3));
        assert!(!out.timed_out);
        let shown = out.to_string();
        assert!(
            shown.contains("$ sh -c \"echo out; echo err >&2; exit 3\""),
            "{shown}"
        );
    }

    #[test]
    fn large_output_does_not_block_the_child() {
        // 1 MiB is far past a pipe's 64 KiB buffer: without the reader threads this would hang.
        let out = run(sh("head -c 1048576 /dev/zero"), Duration::from_secs(20)).unwrap();
        assert!(out.success(), "{out}");
        assert_eq!(out.stdout.len(), 1 << 20);
    }

    #[test]
    fn stop_sends_sigterm_and_keeps_output() {
        let child = Child::spawn(sh(
            "trap 'echo bye; exit 0' TERM; echo hi; while :; do sleep 0.05; done",
        ))
        .unwrap();
        assert!(crate::wait_until(
            Duration::from_secs(5),
            Duration::from_millis(10),
            || child.stdout_so_far().contains("hi")
        ));
        let out = child.stop();
        assert_eq!(out.code(), Some(0), "{out}");
        assert_eq!(out.stdout, "hi\nbye\n");
    }

    #[test]
    fn a_process_ignoring_sigterm_is_killed() {
        // An ignored signal stays ignored across exec, so `sleep` itself ignores SIGTERM.
        let child = Child::spawn(sh("trap '' TERM; echo ready; exec sleep 100")).unwrap();
        // Signal only once the trap is set, or SIGTERM would win the race.
        assert!(crate::wait_until(
            Duration::from_secs(5),
            Duration::from_millis(10),
            || child.stdout_so_far().contains("ready")
        ));
        let start = Instant::now();
        let out = child.stop();
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out}");
        assert!(start.elapsed() >= TERM_GRACE);
        assert!(start.elapsed() < TERM_GRACE + Duration::from_secs(5));
    }

    #[test]
    fn wait_timeout_terminates_a_hung_process() {
        let out = Child::spawn(sh("exec sleep 100"))
            .unwrap()
            .wait_timeout(Duration::from_millis(100));
        assert!(out.timed_out);
        assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{out}");
    }

    #[test]
    fn drop_terminates_the_process() {
        let child = Child::spawn(sh("exec sleep 100")).unwrap();
        let pid = child.pid() as libc::pid_t;
        drop(child);
        // Reaped by Drop, so the pid no longer names our child.
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "child {pid} survived its guard");
    }
}

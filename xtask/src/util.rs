//! What every task shares: the interrupt flag, running cargo, finding the built binary.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub type Result<T = ()> = std::result::Result<T, String>;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the flag instead of killing us. A plain sigaction rather than
/// the ctrlc crate: ctrlc runs the handler on a thread woken later, so after Ctrl-C a child
/// (ping) could exit and be seen by the main thread before the flag was set, and the task
/// would carry on as if nothing happened. Here the flag is set before the signal-interrupted
/// wait for the child returns.
pub fn catch_interrupts() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler is
        // async-signal-safe (one atomic store) and has the signature sa_handler expects.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An Err once Ctrl-C was pressed, so a task can `?` out between steps and unwind its guards.
pub fn check_interrupt() -> Result {
    if interrupted() {
        Err("interrupted: cleaning up".to_string())
    } else {
        Ok(())
    }
}

/// Sleeps, waking early on Ctrl-C.
pub fn sleep(d: Duration) {
    let step = Duration::from_millis(20);
    let mut left = d;
    while !left.is_zero() && !interrupted() {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

pub fn workspace_root() -> PathBuf {
    testbed::workspace_root()
}

/// The cargo that runs us (cargo sets CARGO), so the same toolchain builds everything.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs a command with its output going straight to ours, so CI logs show cargo as it works.
pub fn run_inherited(mut cmd: Command) -> Result<ExitStatus> {
    let shown = show(&cmd);
    println!("xtask: $ {shown}");
    flush();
    cmd.stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))
}

/// Runs a command, printing each stdout line as it comes (a demo should be watched live) and
/// returning stdout for parsing; stderr goes straight through.
pub fn run_tee(mut cmd: Command) -> Result<(ExitStatus, String)> {
    let shown = show(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let mut text = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            println!("    {line}");
            text.push_str(&line);
            text.push('\n');
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for {shown}: {e}"))?;
    Ok((status, text))
}

/// `program args` for log lines.
pub fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn flush() {
    let _ = std::io::stdout().flush();
}

/// `cargo build` of the ustack binary (debug or release); returns its path. `USTACK_BIN`, as for
/// the netns tests, names a binary to use instead, unbuilt: to demo or bench a given build.
pub fn build_ustack(release: bool) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("USTACK_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        println!("xtask: using USTACK_BIN={} (not building)", bin.display());
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("USTACK_BIN={} does not exist", bin.display()))
        };
    }
    let mut cmd = cargo();
    cmd.args(["build", "-p", "ustack"]);
    if release {
        cmd.arg("--release");
    }
    let status = run_inherited(cmd)?;
    check_interrupt()?;
    if !status.success() {
        return Err(format!("cargo build -p ustack failed ({status})"));
    }
    let bin = built_bin(if release { "release" } else { "debug" }, "ustack");
    if !bin.is_file() {
        return Err(format!(
            "cargo built ustack but {} is missing",
            bin.display()
        ));
    }
    Ok(bin)
}

pub fn built_bin(profile: &str, name: &str) -> PathBuf {
    testbed::target_dir().join(profile).join(name)
}

pub fn require_root() -> Result {
    testbed::require_root()
}

/// Prints a step header, so the demo and bench read as a story.
pub fn step(what: &str) {
    println!("\n==> {what}");
    flush();
}

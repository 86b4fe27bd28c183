//! The Debian packages the tasks run (ip, ping, scapy, ...). A fresh CI machine has none of
//! them, so the tasks install what is missing themselves; a machine that has them all is not
//! touched (no apt-get update on every run).

use std::process::Command;

use crate::util::{run_inherited, Result};

/// Installs whichever of `packages` dpkg does not report as installed.
pub fn ensure_packages(packages: &[&str]) -> Result {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "xtask: installing missing Debian packages: {}",
        missing.join(" ")
    );
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    apt(update)?;
    let mut install = Command::new("apt-get");
    // No recommends: python3-scapy would otherwise pull in IPython, matplotlib and more, none of
    // which sendp needs.
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing);
    apt(install)?;
    let still: Vec<&str> = missing.into_iter().filter(|p| !installed(p)).collect();
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!("apt-get did not install: {}", still.join(" ")))
    }
}

fn apt(mut cmd: Command) -> Result {
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    let status = run_inherited(cmd)?;
    crate::util::check_interrupt()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("apt-get failed ({status})"))
    }
}

/// `dpkg -s` exits 0 for packages that were removed but left config files, so read the status.
fn installed(package: &str) -> bool {
    Command::new("dpkg")
        .args(["-s", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.trim() == "Status: install ok installed")
        })
        .unwrap_or(false)
}

//! Processes and ports for the load bench: free listener ports, CPU
//! pinning, readiness and stopping by PID.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::measure;

/// Three consecutive free ports (proxy, admin, and a peer's h2c port),
/// searched below the kernel's ephemeral range: the memory figure leaves
/// tens of thousands of client ports in TIME_WAIT there, which made a
/// random pick with free neighbours fail after a few rounds.
pub(crate) fn free_port_triple() -> anyhow::Result<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let lowest = 20_000.min(ephemeral_start.saturating_sub(3_000));
    let mut port = lowest;
    while port.saturating_add(2) < ephemeral_start {
        if free(port) && free(port + 1) && free(port + 2) {
            return Ok(port);
        }
        port += 3;
    }
    anyhow::bail!("no three consecutive free ports between {lowest} and {ephemeral_start}")
}

pub(crate) fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn wait_ready(listen: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if measure::probe(listen) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub(crate) fn pinned(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("taskset");
    command
        .args(["-c", "1"])
        .arg(program)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

pub(crate) fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn pinned_to_cpu0() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim() == "0")
            })
        })
        .unwrap_or(false)
}

pub(crate) fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("switchyard-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

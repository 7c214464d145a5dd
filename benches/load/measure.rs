//! Running wrk, reading a process tree's CPU time, and summarising runs.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

/// One measured run of one target.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) requests_per_second: f64,
    pub(crate) cpu_us_per_request: Option<f64>,
    /// The part of `cpu_us_per_request` spent in user space (utime): the
    /// rest is the kernel's socket work, about the same for every proxy.
    pub(crate) user_us_per_request: Option<f64>,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
}

/// Medians and spreads of one target's runs.
#[derive(Debug)]
pub(crate) struct Summary {
    name: &'static str,
    rps: (f64, f64, f64),
    cpu: Option<(f64, f64, f64)>,
    user: Option<f64>,
    p50: f64,
    p99: f64,
    /// CPU per request over the best peer's in the same round: median and
    /// spread over the rounds (see [`per_round_ratios`]).
    paired: Option<(f64, f64, f64)>,
}

/// Runs wrk against `target`; with `pid`, also measures that process tree's
/// CPU time over the run.
pub(crate) fn wrk(
    target: &str,
    pid: Option<u32>,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<Run> {
    let before = pid.map(tree_cpu_ticks);
    let output = Command::new("taskset")
        .args(["-c", "0", "wrk", "-t1", "--latency"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg(format!("http://{target}/"))
        .output()?;
    let after = pid.map(tree_cpu_ticks);
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    anyhow::ensure!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "failed requests during the run: {text}"
    );
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no request count in wrk output: {text}"))?;
    let rps =
        field(&text, "Requests/sec:").ok_or_else(|| anyhow::anyhow!("no Requests/sec: {text}"))?;
    let per_request = |ticks: u64| ticks as f64 / clock_ticks() * 1e6 / requests;
    let used = before.zip(after).map(|(before, after)| after.since(before));
    Ok(Run {
        requests_per_second: rps,
        cpu_us_per_request: used.map(|t| per_request(t.total())),
        user_us_per_request: used.map(|t| per_request(t.user)),
        p50_us: latency_us(&text, "50%").unwrap_or(f64::NAN),
        p99_us: latency_us(&text, "99%").unwrap_or(f64::NAN),
    })
}

/// Whether a GET through `target` answers 200.
pub(crate) fn probe(target: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(target) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

fn field(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

fn latency_us(text: &str, percentile: &str) -> Option<f64> {
    let value = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(percentile))?
        .trim();
    let (number, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic())?);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number,
        "ms" => number * 1e3,
        "s" => number * 1e6,
        _ => return None,
    })
}

/// CPU time of a process tree, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuTicks {
    /// utime: in the process's own code and libraries.
    pub(crate) user: u64,
    /// stime: in the kernel on its behalf (syscalls, and the loopback
    /// delivery they trigger).
    pub(crate) system: u64,
}

impl CpuTicks {
    pub(crate) fn total(self) -> u64 {
        self.user + self.system
    }

    /// The ticks used between `earlier` and this reading.
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

impl std::ops::AddAssign for CpuTicks {
    fn add_assign(&mut self, other: Self) {
        self.user += other.user;
        self.system += other.system;
    }
}

/// utime and stime of `pid` and its direct children (nginx's worker).
pub(crate) fn tree_cpu_ticks(pid: u32) -> CpuTicks {
    let mut total = process_ticks(pid).unwrap_or_default();
    // The pid is `taskset`'s, which execs the proxy in place: same pid.
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if parent_of(child) == Some(pid) {
                total += process_ticks(child).unwrap_or_default();
            }
        }
    }
    total
}

/// Resident memory of `pid` and its direct children, in KiB.
pub(crate) fn tree_rss_kib(pid: u32) -> u64 {
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    };
    let mut total = rss(pid);
    for child in children(pid) {
        total += rss(child);
    }
    total
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|child| parent_of(*child) == Some(pid))
        .collect()
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn process_ticks(pid: u32) -> Option<CpuTicks> {
    let fields = stat_fields(pid)?;
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    Some(CpuTicks {
        user: fields.get(11)?.parse().ok()?,
        system: fields.get(12)?.parse().ok()?,
    })
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn median_min_max(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = if values.is_empty() {
        f64::NAN
    } else if values.len() % 2 == 1 {
        values[values.len() / 2]
    } else {
        (values[values.len() / 2 - 1] + values[values.len() / 2]) / 2.0
    };
    (
        median,
        values.first().copied().unwrap_or(f64::NAN),
        values.last().copied().unwrap_or(f64::NAN),
    )
}

// === impl Summary ===

impl Summary {
    pub(crate) fn of(name: &'static str, runs: &[Run]) -> Self {
        let cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_us_per_request).collect();
        let user: Vec<f64> = runs.iter().filter_map(|r| r.user_us_per_request).collect();
        Self {
            name,
            rps: median_min_max(runs.iter().map(|r| r.requests_per_second).collect()),
            cpu: (!cpu.is_empty()).then(|| median_min_max(cpu)),
            user: (!user.is_empty()).then(|| median_min_max(user).0),
            p50: median_min_max(runs.iter().map(|r| r.p50_us).collect()).0,
            p99: median_min_max(runs.iter().map(|r| r.p99_us).collect()).0,
            paired: None,
        }
    }

    /// With the ratios of [`per_round_ratios`] for this target.
    pub(crate) fn with_paired(mut self, paired: Option<(f64, f64, f64)>) -> Self {
        self.paired = paired;
        self
    }
}

/// Whether a target is a peer proxy (nginx, HAProxy): not the direct run,
/// not a Switchyard variant.
pub(crate) fn is_peer(name: &str) -> bool {
    name != "direct" && !name.starts_with("switchyard")
}

/// For each target (`figures[t][round]`: a figure per round, smaller is
/// better), its figure divided by the best peer's in the same round, then
/// the median and min-max of those ratios. Every proxy's figure drifts
/// between rounds on a shared box (20-40 % has been seen); a ratio taken
/// within a round, where the targets ran a minute apart, cancels most of
/// that drift, which a ratio of medians taken over different rounds does
/// not. A round where no peer has the figure counts for no target.
pub(crate) fn per_round_ratios(
    names: &[&str],
    figures: &[Vec<Option<f64>>],
) -> Vec<Option<(f64, f64, f64)>> {
    let rounds = figures.iter().map(Vec::len).max().unwrap_or(0);
    let best: Vec<Option<f64>> = (0..rounds)
        .map(|round| {
            names
                .iter()
                .zip(figures)
                .filter(|(name, _)| is_peer(name))
                .filter_map(|(_, target)| *target.get(round)?)
                .reduce(f64::min)
        })
        .collect();
    figures
        .iter()
        .map(|target| {
            let ratios: Vec<f64> = target
                .iter()
                .zip(&best)
                .filter_map(|(figure, best)| Some((*figure)? / (*best)?))
                .collect();
            (!ratios.is_empty()).then(|| median_min_max(ratios))
        })
        .collect()
}

/// A cell for the ratios of [`per_round_ratios`]: "median x (min-max)".
pub(crate) fn ratio_cell(ratios: Option<(f64, f64, f64)>) -> String {
    ratios.map_or("-".to_owned(), |(m, lo, hi)| {
        format!("{m:.2}x ({lo:.2}-{hi:.2})")
    })
}

/// The results as one markdown table, with CPU ratios against the best peer.
pub(crate) fn markdown(summaries: &[Summary], setup: &str) -> String {
    let best_peer_cpu = summaries
        .iter()
        .filter(|s| is_peer(s.name))
        .filter_map(|s| s.cpu.map(|c| c.0))
        .fold(f64::INFINITY, f64::min);
    let mut out = format!(
        "{setup}\n\n| target | req/s median (min-max) | proxy CPU us/req median (min-max) | of which user space | CPU vs best peer | CPU vs the round's best peer, per round: median (min-max) | p50 / p99 latency (us) |\n|---|---|---|---|---|---|---|\n"
    );
    for s in summaries {
        let cpu = s.cpu.map_or("-".to_owned(), |(m, lo, hi)| {
            format!("{m:.1} ({lo:.1}-{hi:.1})")
        });
        let ratio = match s.cpu {
            Some((m, _, _)) if best_peer_cpu.is_finite() => format!("{:.2}x", m / best_peer_cpu),
            _ => "-".to_owned(),
        };
        let user = s.user.map_or("-".to_owned(), |u| format!("{u:.1}"));
        let paired = ratio_cell(s.paired);
        out.push_str(&format!(
            "| {} | {:.0} ({:.0}-{:.0}) | {cpu} | {user} | {ratio} | {paired} | {:.0} / {:.0} |\n",
            s.name, s.rps.0, s.rps.1, s.rps.2, s.p50, s.p99
        ));
    }
    let rps = |name: &str| summaries.iter().find(|s| s.name == name).map(|s| s.rps.0);
    if let (Some(plain), Some(swapping)) = (rps("switchyard"), rps("switchyard+swaps")) {
        out.push_str(&format!(
            "\nTable swapped every 10 ms: {:+.1} % throughput against the same proxy without swaps (medians).\n",
            (swapping / plain - 1.0) * 100.0
        ));
    }
    let cpu = |name: &str| {
        summaries
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.cpu.map(|c| c.0))
    };
    if let (Some(off), Some(on)) = (cpu("switchyard-metrics"), cpu("switchyard")) {
        out.push_str(&format!(
            "Request metrics: {:+.1} % CPU per request against the proxy without them (medians).\n",
            (on / off - 1.0) * 100.0
        ));
        if let Some(logging) = cpu("switchyard+accesslog") {
            out.push_str(&format!(
                "Metrics and the access log at sampling 1.0: {:+.1} % CPU per request against neither.\n",
                (logging / off - 1.0) * 100.0
            ));
        }
    }
    if let (Some(off), Some(on)) = (cpu("switchyard-protections"), cpu("switchyard")) {
        out.push_str(&format!(
            "Protections at their defaults: {:+.1} % CPU per request against all of them off (medians).\n",
            (on / off - 1.0) * 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_divide_by_the_best_peer_of_the_same_round() {
        let names = ["direct", "switchyard", "nginx", "haproxy"];
        // Round 2 is twice as slow for everyone: its ratios are the same.
        let figures = vec![
            vec![None, None, None],
            vec![Some(9.0), Some(18.0), Some(11.0)],
            vec![Some(10.0), Some(24.0), Some(10.0)],
            vec![Some(12.0), Some(20.0), None],
        ];
        let paired = per_round_ratios(&names, &figures);
        assert_eq!(paired[0], None, "direct has no CPU figure");
        // switchyard: 9/10, 18/20, 11/10.
        let (median, lo, hi) = paired[1].unwrap();
        assert!(
            (median - 0.9).abs() < 1e-9 && (lo - 0.9).abs() < 1e-9,
            "{median} {lo}"
        );
        assert!((hi - 1.1).abs() < 1e-9, "{hi}");
        // nginx: 1.0, 24/20, 1.0 (round 3's best is nginx itself).
        let (median, _, hi) = paired[2].unwrap();
        assert!((median - 1.0).abs() < 1e-9 && (hi - 1.2).abs() < 1e-9);
        // haproxy: 12/10, 20/20, and no figure in round 3.
        let (median, lo, hi) = paired[3].unwrap();
        assert!((median - 1.1).abs() < 1e-9 && (lo - 1.0).abs() < 1e-9 && (hi - 1.2).abs() < 1e-9);
    }
}

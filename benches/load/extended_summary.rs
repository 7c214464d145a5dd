//! The extended figures over interleaved rounds: medians with their min-max
//! spread, and ratios against the best peer (nginx or HAProxy, whichever is
//! better on that figure), as one markdown table.

use crate::measure::{is_peer, median_min_max, per_round_ratios, ratio_cell};

/// One target's h2c, fixed-rate and memory figures from one round.
#[derive(Debug)]
pub(crate) struct ExtendedRun {
    pub(crate) h2_rps: f64,
    pub(crate) h2_cpu: Option<f64>,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    /// RSS of a fresh process of the target (started for this figure).
    pub(crate) rss_fresh_kib: Option<f64>,
    /// Per idle connection in that fresh process.
    pub(crate) per_idle_fresh_kib: Option<f64>,
    /// Per idle connection in the process that just served the h2c and
    /// fixed-rate phases: what the allocator kept from them counts too.
    pub(crate) per_idle_connection_kib: Option<f64>,
}

/// Median, min, max of one figure over the rounds; `None` when no round has it.
type Spread = Option<(f64, f64, f64)>;

struct Row<'a> {
    name: &'a str,
    h2_rps: Spread,
    h2_cpu: Spread,
    p50: Spread,
    p99: Spread,
    rss_fresh: Spread,
    idle_fresh: Spread,
    idle: Spread,
}

fn spread(values: impl Iterator<Item = Option<f64>>) -> Spread {
    let values: Vec<f64> = values.flatten().collect();
    (!values.is_empty()).then(|| median_min_max(values))
}

fn row<'a>(name: &'a str, runs: &[ExtendedRun]) -> Row<'a> {
    Row {
        name,
        h2_rps: spread(runs.iter().map(|r| Some(r.h2_rps))),
        h2_cpu: spread(runs.iter().map(|r| r.h2_cpu)),
        p50: spread(runs.iter().map(|r| Some(r.p50))),
        p99: spread(runs.iter().map(|r| Some(r.p99))),
        rss_fresh: spread(runs.iter().map(|r| r.rss_fresh_kib)),
        idle_fresh: spread(runs.iter().map(|r| r.per_idle_fresh_kib)),
        idle: spread(runs.iter().map(|r| r.per_idle_connection_kib)),
    }
}

fn cell(value: Spread, decimals: usize) -> String {
    value.map_or("-".to_owned(), |(m, lo, hi)| {
        format!("{m:.decimals$} ({lo:.decimals$}-{hi:.decimals$})")
    })
}

/// The best (smallest) peer median of a figure, when a peer has it.
fn best_peer(rows: &[Row<'_>], figure: impl Fn(&Row<'_>) -> Option<f64>) -> Option<f64> {
    rows.iter()
        .filter(|r| is_peer(r.name))
        .filter_map(figure)
        .reduce(f64::min)
}

fn ratio(value: Option<f64>, best: Option<f64>) -> String {
    match (value, best) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "-".to_owned(),
    }
}

/// The table: one row per target, figures as medians (min-max) over
/// `rounds` interleaved rounds.
pub(crate) fn markdown(targets: &[(&str, Vec<ExtendedRun>)], rate: u32, idle: usize) -> String {
    let rows: Vec<Row<'_>> = targets.iter().map(|(name, runs)| row(name, runs)).collect();
    // The h2c CPU ratio within each round, as in the HTTP/1.1 table.
    let names: Vec<&str> = targets.iter().map(|(name, _)| *name).collect();
    let h2_cpu: Vec<Vec<Option<f64>>> = targets
        .iter()
        .map(|(_, runs)| runs.iter().map(|run| run.h2_cpu).collect())
        .collect();
    let paired = per_round_ratios(&names, &h2_cpu);
    let rounds = targets.first().map_or(0, |(_, runs)| runs.len());
    let direct_p99 = rows
        .iter()
        .find(|r| r.name == "direct")
        .and_then(|r| r.p99.map(|s| s.0));
    let added = |r: &Row<'_>| Some(r.p99?.0 - direct_p99?);
    let best_cpu = best_peer(&rows, |r| r.h2_cpu.map(|s| s.0));
    let best_added = best_peer(&rows, added);
    let best_idle_fresh = best_peer(&rows, |r| r.idle_fresh.map(|s| s.0));
    let best_idle = best_peer(&rows, |r| r.idle.map(|s| s.0));
    let mut out = format!(
        "\n{rounds} interleaved round(s), medians (min-max): h2c by `h2load -t1 -c16 -m10`, latency at {rate} req/s (open loop, 16 HTTP/1.1 connections), memory with {idle} idle keep-alive connections in a fresh process and in the one that ran the phases before\n\n| target | h2c req/s | h2c proxy CPU us/req | h2c CPU vs best peer | h2c CPU vs the round's best peer, per round | p50 at {rate} req/s (us) | p99 at {rate} req/s (us) | p99 over direct vs best peer | RSS fresh (KiB) | KiB per idle connection, fresh | vs best peer | KiB per idle connection, after load | vs best peer |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for (r, paired) in rows.iter().zip(paired) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            cell(r.h2_rps, 0),
            cell(r.h2_cpu, 1),
            ratio(r.h2_cpu.map(|s| s.0), best_cpu),
            ratio_cell(paired),
            cell(r.p50, 0),
            cell(r.p99, 0),
            if r.name == "direct" {
                "-".to_owned()
            } else {
                ratio(added(r), best_added)
            },
            cell(r.rss_fresh, 0),
            cell(r.idle_fresh, 2),
            ratio(r.idle_fresh.map(|s| s.0), best_idle_fresh),
            cell(r.idle, 2),
            ratio(r.idle.map(|s| s.0), best_idle),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(h2_cpu: f64, p99: f64, idle: f64) -> ExtendedRun {
        ExtendedRun {
            h2_rps: 1000.0,
            h2_cpu: Some(h2_cpu),
            p50: 100.0,
            p99,
            rss_fresh_kib: Some(1000.0),
            per_idle_fresh_kib: Some(idle / 2.0),
            per_idle_connection_kib: Some(idle),
        }
    }

    #[test]
    fn ratios_are_against_the_best_peer_median_and_p99_counts_over_direct() {
        let direct = ExtendedRun {
            h2_cpu: None,
            rss_fresh_kib: None,
            per_idle_fresh_kib: None,
            per_idle_connection_kib: None,
            ..run(0.0, 200.0, 0.0)
        };
        let table = markdown(
            &[
                ("direct", vec![direct]),
                (
                    "switchyard",
                    vec![
                        run(12.0, 300.0, 20.0),
                        run(14.0, 320.0, 22.0),
                        run(13.0, 310.0, 21.0),
                    ],
                ),
                ("nginx", vec![run(16.0, 250.0, 0.5)]),
                ("haproxy", vec![run(8.0, 260.0, 1.0)]),
            ],
            5000,
            9000,
        );
        let switchyard = table
            .lines()
            .find(|l| l.starts_with("| switchyard"))
            .unwrap();
        // CPU 13 (median) against HAProxy's 8; 110 us over direct against
        // nginx's 50; 21 KiB against nginx's 0.5 (fresh: 10.5 against
        // 0.25).
        // Only round 1 has peers: 12 against HAProxy's 8 in that round.
        assert!(
            switchyard.contains("| 13.0 (12.0-14.0) | 1.62x | 1.50x (1.50-1.50) |"),
            "{switchyard}"
        );
        assert!(
            switchyard.contains("| 310 (300-320) | 2.20x |"),
            "{switchyard}"
        );
        assert!(
            switchyard.ends_with("| 10.50 (10.00-11.00) | 42.00x | 21.00 (20.00-22.00) | 42.00x |"),
            "{switchyard}"
        );
    }
}

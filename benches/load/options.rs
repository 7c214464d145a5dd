//! The bench's command line: its flags, their defaults and the line that
//! describes a run's setup in its output.

use std::path::PathBuf;
use std::time::Duration;

/// What a run measures, from its flags.
pub(crate) struct Options {
    pub(crate) rounds: usize,
    pub(crate) duration: Duration,
    pub(crate) connections: usize,
    pub(crate) proxy_bin: PathBuf,
    /// A second proxy binary measured beside `proxy_bin` (`--baseline-bin`).
    pub(crate) baseline_bin: Option<PathBuf>,
}

pub(crate) fn options_line(o: &Options) -> String {
    // Which build is which, so that a run's output describes itself.
    let baseline = o
        .baseline_bin
        .as_ref()
        .map(|path| format!(", switchyard-baseline {}", path.display()))
        .unwrap_or_default();
    format!(
        "{} rounds of {}s, wrk -t1 -c{}, proxies pinned to CPU 1, wrk and backends to CPU 0; switchyard {}{baseline}",
        o.rounds,
        o.duration.as_secs(),
        o.connections,
        o.proxy_bin.display()
    )
}

const USAGE: &str = "usage: taskset -c 0 switchyard-load [--rounds N (5)] [--duration SECONDS (10)] [--connections N (64)] [--proxy-bin PATH (target/release/switchyard-proxy)] [--baseline-bin PATH (another build, measured beside it as switchyard-baseline)] [--quick (1 round of 5 s)]";

/// A flag's whole-number value, or an error that names the flag.
fn number<T: std::str::FromStr>(flag: &str, text: &str) -> anyhow::Result<T> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{flag} takes a whole number, not {text:?}"))
}

pub(crate) fn parse_args() -> anyhow::Result<Options> {
    let mut options = Options {
        rounds: 5,
        duration: Duration::from_secs(10),
        connections: 64,
        proxy_bin: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/release/switchyard-proxy"),
        baseline_bin: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs {what}\n{USAGE}"))
        };
        match flag.as_str() {
            "--rounds" => options.rounds = number(&flag, &value("a count")?)?,
            "--duration" => {
                options.duration = Duration::from_secs(number(&flag, &value("seconds")?)?);
            }
            "--connections" => options.connections = number(&flag, &value("a count")?)?,
            "--proxy-bin" => options.proxy_bin = PathBuf::from(value("a path")?),
            "--baseline-bin" => options.baseline_bin = Some(PathBuf::from(value("a path")?)),
            "--quick" => {
                options.rounds = 1;
                options.duration = Duration::from_secs(5);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    anyhow::ensure!(
        options.rounds > 0 && options.connections > 0,
        "--rounds and --connections must be at least 1"
    );
    Ok(options)
}

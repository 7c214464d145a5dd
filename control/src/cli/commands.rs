//! Client commands: each is one or a few API calls and a rendering.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_config::GwDuration;
use switchyard_control::client::{Answer, Client};

use super::output;
use super::{Command, Common, Mode};

/// The call failed or was refused (exit 1), or the input on this side was
/// bad (exit 64).
enum Failure {
    Refused(String),
    Usage(String),
}

impl From<anyhow::Error> for Failure {
    fn from(failure: anyhow::Error) -> Self {
        Self::Refused(format!("{failure:#}"))
    }
}

type Outcome = Result<ExitCode, Failure>;

pub(super) async fn run(command: Command) -> ExitCode {
    let outcome = match command {
        Command::Serve(_) => Err(Failure::Usage("serve is not a client command".into())),
        Command::Apply {
            file,
            message,
            dry_run,
            common,
        } => apply(&common, &file, &message, dry_run).await,
        Command::Diff { file, common } => diff(&common, &file).await,
        Command::SetWeights {
            route,
            weights,
            message,
            common,
        } => set_weights(&common, &route, &weights, &message).await,
        Command::Drain {
            backend,
            deadline,
            mode,
            message,
            common,
        } => drain(&common, &backend, &deadline, mode, &message).await,
        Command::Undrain {
            backend,
            message,
            common,
        } => {
            let body = json!({ "backend": backend, "message": message });
            change(&common, "undrain", &body).await
        }
        Command::Status {
            watch,
            timeout,
            common,
        } => status(&common, watch, &timeout).await,
        Command::History { limit, common } => history(&common, limit).await,
        Command::Rollback {
            version,
            message,
            common,
        } => {
            let body = json!({ "version": version, "message": message });
            change(&common, "rollback", &body).await
        }
    };
    match outcome {
        Ok(code) => code,
        Err(Failure::Refused(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(64)
        }
    }
}

fn client(common: &Common) -> Result<Client, Failure> {
    let token = match &common.token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?
                .trim()
                .to_owned();
            Some(token)
        }
        None => None,
    };
    let identity = common
        .client_cert
        .as_deref()
        .zip(common.client_key.as_deref());
    let tls = if common.ca_file.is_some() || identity.is_some() {
        Some(
            switchyard_control::tls::client_config(common.ca_file.as_deref(), identity)
                .map_err(|e| Failure::Usage(format!("{e:#}")))?,
        )
    } else {
        None
    };
    Client::with_tls(&common.server, token, tls).map_err(|e| Failure::Usage(format!("{e:#}")))
}

fn group_path(common: &Common, action: &str) -> String {
    format!("/v1/groups/{}/{action}", common.group)
}

fn read_table(file: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))
}

async fn apply(common: &Common, file: &std::path::Path, message: &str, dry_run: bool) -> Outcome {
    let table = read_table(file)?;
    let message = if message.is_empty() {
        format!("apply -f {}", file.display())
    } else {
        message.to_owned()
    };
    let body = json!({ "table": table, "message": message, "dry_run": dry_run });
    change(common, "apply", &body).await
}

async fn diff(common: &Common, file: &std::path::Path) -> Outcome {
    let table = read_table(file)?;
    let body = json!({ "table": table, "dry_run": true });
    let answer = client(common)?
        .post(&group_path(common, "apply"), &body)
        .await?;
    let value = accepted(&answer)?;
    let differs = value["previous"] != value["version"];
    output::print_change(common.output, &value, "diff")?;
    // Like `kubectl diff` and `diff`: 1 means "there are differences".
    Ok(if differs {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn set_weights(common: &Common, route: &str, pairs: &[String], message: &str) -> Outcome {
    let mut weights = serde_json::Map::new();
    for pair in pairs {
        let (backend, weight) = pair
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("{pair:?} is not BACKEND=WEIGHT")))?;
        let weight: u32 = weight
            .parse()
            .map_err(|_| Failure::Usage(format!("the weight in {pair:?} is not a whole number")))?;
        weights.insert(backend.to_owned(), json!(weight));
    }
    let body = json!({ "route": route, "weights": weights, "message": message });
    change(common, "weights", &body).await
}

async fn drain(
    common: &Common,
    backend: &str,
    deadline: &str,
    mode: Mode,
    message: &str,
) -> Outcome {
    deadline
        .parse::<GwDuration>()
        .map_err(|e| Failure::Usage(format!("--deadline: {e}")))?;
    let mode = match mode {
        Mode::Hard => "hard",
        Mode::Soft => "soft",
    };
    let body =
        json!({ "backend": backend, "deadline": deadline, "mode": mode, "message": message });
    change(common, "drain", &body).await
}

async fn change(common: &Common, action: &str, body: &Value) -> Outcome {
    let answer = client(common)?
        .post(&group_path(common, action), body)
        .await?;
    let value = accepted(&answer)?;
    output::print_change(common.output, &value, action)?;
    Ok(ExitCode::SUCCESS)
}

async fn status(common: &Common, watch: bool, timeout: &str) -> Outcome {
    let timeout = timeout
        .parse::<GwDuration>()
        .map_err(|e| Failure::Usage(format!("--timeout: {e}")))?
        .get();
    let client = client(common)?;
    let path = format!("/v1/status?group={}", common.group);
    let started = Instant::now();
    let mut last_progress = String::new();
    loop {
        let answer = client.get(&path).await?;
        let value = accepted(&answer)?;
        let live = value["live"].as_bool().unwrap_or(false);
        if !watch || live {
            output::print_status(common.output, &value)?;
            return Ok(ExitCode::SUCCESS);
        }
        let progress = output::progress_line(&value);
        if progress != last_progress {
            eprintln!("{progress}");
            last_progress = progress;
        }
        if started.elapsed() >= timeout {
            output::print_status(common.output, &value)?;
            return Err(Failure::Refused(format!(
                "not live after {}: {last_progress}",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn history(common: &Common, limit: u32) -> Outcome {
    let path = format!("/v1/history?group={}&limit={limit}", common.group);
    let answer = client(common)?.get(&path).await?;
    let value = accepted(&answer)?;
    output::print_history(common.output, &value)?;
    Ok(ExitCode::SUCCESS)
}

fn accepted(answer: &Answer) -> Result<Value, Failure> {
    if answer.status.is_success() {
        Ok(answer.json()?)
    } else {
        Err(Failure::Refused(answer.refusal()))
    }
}

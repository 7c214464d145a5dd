//! Rendering answers as aligned columns, JSON or YAML.

use serde_json::Value;

use super::Output;

/// Prints a change outcome.
pub(super) fn print_change(output: Output, value: &Value, action: &str) -> anyhow::Result<()> {
    if output != Output::Table {
        return print_document(output, value);
    }
    let diff = value["diff"].as_str().unwrap_or("");
    if !diff.is_empty() {
        print!("{diff}");
    }
    for warning in value["warnings"].as_array().into_iter().flatten() {
        println!("warning: {}", warning.as_str().unwrap_or(""));
    }
    let group = value["group"].as_str().unwrap_or("");
    let version = value["version"].as_str().unwrap_or("");
    let previous = value["previous"].as_str().unwrap_or("(none)");
    if value["dry_run"].as_bool() == Some(true) {
        if version == previous {
            println!("{group}: no change, {version} is already desired");
        } else {
            println!("{group}: {action} would make {version} desired (now {previous})");
        }
    } else if value["changed"].as_bool() == Some(true) {
        println!("{group}: {action} recorded; desired {version} (was {previous})");
    } else {
        println!("{group}: unchanged; {version} is already desired");
    }
    Ok(())
}

/// Prints a group's status.
pub(super) fn print_status(output: Output, value: &Value) -> anyhow::Result<()> {
    if output != Output::Table {
        return print_document(output, value);
    }
    let live = if value["live"].as_bool() == Some(true) {
        "LIVE"
    } else {
        "NOT LIVE"
    };
    println!(
        "group {}  desired {}  since {}  {live} ({}/{} connected proxies in sync)",
        text(&value["group"]),
        text(&value["desired"]),
        text(&value["desired_since"]),
        value["in_sync"],
        value["connected"],
    );
    let mut rows = vec![vec![
        "NODE".to_owned(),
        "CONNECTED".to_owned(),
        "APPLIED".to_owned(),
        "IN SYNC".to_owned(),
        "SOURCE".to_owned(),
        "LAST SEEN".to_owned(),
        "NACK".to_owned(),
    ]];
    for proxy in list(&value["proxies"]) {
        let in_sync = match (proxy["in_sync"].as_bool(), proxy["drift"].as_bool()) {
            (Some(true), _) => "yes",
            (_, Some(true)) => "DRIFT",
            _ => "no",
        };
        let nack = proxy["nack"]
            .as_object()
            .map(|n| {
                format!(
                    "{}: {}",
                    short(n.get("version").unwrap_or(&Value::Null)),
                    text(n.get("reason").unwrap_or(&Value::Null)).replace('\n', "; ")
                )
            })
            .unwrap_or_default();
        rows.push(vec![
            text(&proxy["node"]),
            yes_no(&proxy["connected"]),
            short(&proxy["applied"]),
            in_sync.to_owned(),
            text(&proxy["source"]),
            text(&proxy["last_seen"]),
            nack,
        ]);
    }
    print_rows(&rows);
    let mut rows = vec![vec![
        "BACKEND".to_owned(),
        "ACTIVE".to_owned(),
        "DRAINING".to_owned(),
        "DRAINED".to_owned(),
        "IN FLIGHT".to_owned(),
    ]];
    for backend in list(&value["backends"]) {
        rows.push(vec![
            text(&backend["name"]),
            backend["active"].to_string(),
            backend["draining"].to_string(),
            backend["drained"].to_string(),
            backend["in_flight"].to_string(),
        ]);
    }
    println!();
    print_rows(&rows);
    let mut rows = vec![vec![
        "ROUTE".to_owned(),
        "BACKEND".to_owned(),
        "DESIRED".to_owned(),
        "OBSERVED".to_owned(),
        "REQUESTS (60s)".to_owned(),
    ]];
    for route in list(&value["traffic"]) {
        for backend in list(&route["backends"]) {
            rows.push(vec![
                text(&route["route"]),
                text(&backend["backend"]),
                percent(&backend["desired"]),
                percent(&backend["observed"]),
                backend["requests"].to_string(),
            ]);
        }
    }
    println!();
    print_rows(&rows);
    Ok(())
}

/// One line saying how far a change has got.
pub(super) fn progress_line(value: &Value) -> String {
    let waiting: Vec<String> = list(&value["proxies"])
        .filter(|p| p["connected"].as_bool() == Some(true) && p["in_sync"].as_bool() != Some(true))
        .map(|p| match p["nack"].as_object() {
            Some(nack) => format!(
                "{} (NACK: {})",
                text(&p["node"]),
                text(nack.get("reason").unwrap_or(&Value::Null)).replace('\n', "; ")
            ),
            None => format!("{} (on {})", text(&p["node"]), short(&p["applied"])),
        })
        .collect();
    let mut line = format!(
        "{}: {}/{} connected proxies on {}",
        text(&value["group"]),
        value["in_sync"],
        value["connected"],
        short(&value["desired"])
    );
    if !waiting.is_empty() {
        line.push_str("; waiting for ");
        line.push_str(&waiting.join(", "));
    }
    line
}

/// Prints history.
pub(super) fn print_history(output: Output, value: &Value) -> anyhow::Result<()> {
    if output != Output::Table {
        return print_document(output, value);
    }
    let mut rows = vec![vec![
        "ID".to_owned(),
        "AT".to_owned(),
        "ACTOR".to_owned(),
        "KIND".to_owned(),
        "VERSION".to_owned(),
        "PREVIOUS".to_owned(),
        "MESSAGE".to_owned(),
    ]];
    for change in list(&value["changes"]) {
        rows.push(vec![
            change["id"].to_string(),
            text(&change["at"]),
            text(&change["actor"]),
            text(&change["kind"]),
            short(&change["version"]),
            short(&change["previous"]),
            text(&change["message"]),
        ]);
    }
    print_rows(&rows);
    Ok(())
}

fn print_document(output: Output, value: &Value) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!(
            "{}",
            switchyard_config::table::to_yaml_value(value)
                .ok_or_else(|| anyhow::anyhow!("the answer does not render as YAML"))?
        ),
        _ => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

fn print_rows(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        println!("{}", line.trim_end());
    }
}

fn list(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn yes_no(value: &Value) -> String {
    if value.as_bool() == Some(true) {
        "yes".to_owned()
    } else {
        "no".to_owned()
    }
}

/// `sha256:` and the first 12 hex digits: enough to tell versions apart
/// and to pass to `rollback`.
fn short(value: &Value) -> String {
    match value.as_str() {
        Some(version) => version.chars().take(19).collect(),
        None => "-".to_owned(),
    }
}

fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |share| format!("{:.1}%", share * 100.0))
}

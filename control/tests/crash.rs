//! `kill -9` of the daemon in the middle of a burst of applies: every apply
//! that was answered with success is in the history after a restart.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::{ADMIN_SECRET, Daemon, Workspace, eventually};

const APPLIES: usize = 200;
const CLIENTS: usize = 4;
/// Kill once this many applies have succeeded: well inside the burst.
const KILL_AFTER: usize = 60;

fn table(i: usize) -> String {
    format!(
        "backends:\n  blue: {{ endpoints: [\"127.0.0.1:9001\"] }}\n  green: {{ endpoints: [\"127.0.0.1:9002\"] }}\nroutes:\n- name: web\n  rules:\n  - split: {{ weights: {{ blue: {i}, green: {} }} }}\n",
        APPLIES - i
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_of_applies_loses_no_acknowledged_change() {
    let work = Workspace::new();
    let daemon = Daemon::start(&work, "127.0.0.1:0", &[]).await;
    let client = daemon.client(Some(ADMIN_SECRET));
    let next = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (client, next, acknowledged) = (client.clone(), next.clone(), acknowledged.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= APPLIES {
                    return;
                }
                let body =
                    serde_json::json!({ "table": table(i), "message": format!("burst {i}") });
                match client.post("/v1/groups/edge/apply", &body).await {
                    Ok(answer) if answer.status == 200 => {
                        let version = answer.json().unwrap()["version"]
                            .as_str()
                            .unwrap()
                            .to_owned();
                        acknowledged.lock().unwrap().push(version);
                    }
                    // Refused connections and cut answers after the kill.
                    Ok(_) | Err(_) => return,
                }
            }
        }));
    }
    eventually("enough applies succeeded to kill mid-burst", || async {
        acknowledged.lock().unwrap().len() >= KILL_AFTER
    })
    .await;
    daemon.kill().await;
    for worker in workers {
        worker.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() < APPLIES,
        "the kill landed inside the burst"
    );

    let daemon = Daemon::start(&work, "127.0.0.1:0", &[]).await;
    let history = daemon.history("edge").await;
    let recorded: HashSet<&str> = history
        .iter()
        .map(|c| c["version"].as_str().unwrap())
        .collect();
    for version in &acknowledged {
        assert!(
            recorded.contains(version.as_str()),
            "acknowledged {version} was lost"
        );
    }
    // At most the applies in flight at the kill may have committed unanswered.
    assert!(
        history.len() <= acknowledged.len() + CLIENTS,
        "{} recorded",
        history.len()
    );
    // The desired version is the newest recorded change, whole.
    let status = daemon.status("edge").await;
    assert_eq!(status["desired"], history[0]["version"]);
    let stored = daemon
        .client(Some(ADMIN_SECRET))
        .get(&format!(
            "/v1/tables/{}",
            history[0]["version"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(stored.status, 200);
    let table = switchyard_config::parse_table(&stored.body).unwrap();
    assert_eq!(table.version().as_str(), history[0]["version"]);
}

//! The release workflow end to end: the real daemon, the real CLI, real
//! proxies following it, real backends. (Refused changes are in
//! refusals.rs.)
#![allow(clippy::unwrap_used)]

mod support;

use support::{
    ADMIN_SECRET, Daemon, FollowingProxy, GROUP, Workspace, admin, apply_live, backend, eventually,
    split_table, tally,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reaches_three_proxies_and_traffic_follows_the_new_weights() {
    let work = Workspace::new();
    let daemon = Daemon::start(&work, "127.0.0.1:0", &[]).await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    let proxies = [
        FollowingProxy::start(&daemon.url(), GROUP, "p1").await,
        FollowingProxy::start(&daemon.url(), GROUP, "p2").await,
        FollowingProxy::start(&daemon.url(), GROUP, "p3").await,
    ];
    eventually("three proxies connected", || async {
        daemon.status(GROUP).await["connected"] == 3
    })
    .await;

    let first = apply_live(
        &work,
        &daemon,
        "all-blue.yaml",
        &split_table(blue, green, 100, 0),
    )
    .await;
    for proxy in &proxies {
        assert_eq!(proxy.version().as_deref(), Some(first.as_str()));
        assert_eq!(tally(proxy.addr, 10).await.get("blue"), Some(&10));
    }

    let second = apply_live(
        &work,
        &daemon,
        "half.yaml",
        &split_table(blue, green, 50, 50),
    )
    .await;
    assert_ne!(first, second);
    // `status -w` returned, so every proxy ACKed: each one already splits.
    for proxy in &proxies {
        assert_eq!(proxy.version().as_deref(), Some(second.as_str()));
        let counts = tally(proxy.addr, 100).await;
        // Sequence mode is exact to within one request over any run.
        let blue_count = counts.get("blue").copied().unwrap_or(0);
        assert!((49..=51).contains(&blue_count), "{counts:?}");
        assert_eq!(counts.values().sum::<usize>(), 100);
    }

    // The proxies' reports show the observed share next to the desired one.
    eventually("observed shares reported", || async {
        let status = daemon.status(GROUP).await;
        let web = &status["traffic"][0];
        web["requests"].as_u64().unwrap_or(0) >= 300
            && web["backends"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["desired"] == 0.5 && b["observed"].as_f64().is_some())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_serving_without_the_control_plane_and_converge_after_its_restart() {
    let work = Workspace::new();
    let daemon = Daemon::start(&work, "127.0.0.1:0", &[]).await;
    let address = daemon.addr.to_string();
    let (blue, green) = (backend("blue").await, backend("green").await);
    let cache = work.path("p1-cache.json");
    let cache_for_proxy = cache.clone();
    let proxies = [
        FollowingProxy::start_with(&daemon.url(), GROUP, "p1", |plane| {
            plane.cache = Some(cache_for_proxy);
        })
        .await,
        FollowingProxy::start(&daemon.url(), GROUP, "p2").await,
        FollowingProxy::start(&daemon.url(), GROUP, "p3").await,
    ];
    eventually("three proxies connected", || async {
        daemon.status(GROUP).await["connected"] == 3
    })
    .await;
    apply_live(
        &work,
        &daemon,
        "blue.yaml",
        &split_table(blue, green, 100, 0),
    )
    .await;
    let desired = apply_live(
        &work,
        &daemon,
        "green.yaml",
        &split_table(blue, green, 0, 100),
    )
    .await;
    let history_before = daemon.history(GROUP).await;
    assert_eq!(history_before.len(), 2);

    daemon.kill().await;
    for proxy in &proxies {
        assert_eq!(tally(proxy.addr, 5).await.get("green"), Some(&5));
    }
    // A proxy restarted while the control plane is down starts from its cache.
    let restarted =
        FollowingProxy::start_with(&format!("http://{address}"), GROUP, "p1b", |plane| {
            plane.cache = Some(cache.clone());
        })
        .await;
    assert_eq!(restarted.version().as_deref(), Some(desired.as_str()));
    assert_eq!(tally(restarted.addr, 3).await.get("green"), Some(&3));
    drop(restarted);

    let daemon = Daemon::start(&work, &address, &[]).await;
    assert_eq!(daemon.history(GROUP).await, history_before);
    assert_eq!(daemon.status(GROUP).await["desired"], desired.as_str());
    eventually("the proxies reconnected and are live", || async {
        let status = daemon.status(GROUP).await;
        status["connected"] == 3 && status["live"] == true
    })
    .await;
    // And they follow new changes again.
    let run = admin(
        &work,
        &daemon,
        &["set-weights", "web", "blue=1", "green=1", "-g", GROUP],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let after = daemon.status(GROUP).await["desired"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the proxies run the new weights", || async {
        proxies
            .iter()
            .all(|p| p.version().as_deref() == Some(after.as_str()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_a_version_from_three_changes_ago_byte_for_byte() {
    let work = Workspace::new();
    let daemon = Daemon::start(&work, "127.0.0.1:0", &[]).await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    let proxy = FollowingProxy::start(&daemon.url(), GROUP, "p1").await;
    let mut versions = Vec::new();
    for (i, weights) in [(100, 0), (75, 25), (50, 50), (0, 100)].iter().enumerate() {
        let table = split_table(blue, green, weights.0, weights.1);
        versions.push(apply_live(&work, &daemon, &format!("t{i}.yaml"), &table).await);
    }
    let target = &versions[0];
    let stored = daemon
        .client(Some(ADMIN_SECRET))
        .get(&format!("/v1/tables/{target}"))
        .await
        .unwrap();
    assert_eq!(stored.status, 200);

    // A unique prefix is enough, like git.
    let prefix = &target["sha256:".len().."sha256:".len() + 12];
    let run = admin(
        &work,
        &daemon,
        &["rollback", prefix, "-g", GROUP, "-o", "json"],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let outcome: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(outcome["version"], target.as_str());
    assert_eq!(outcome["previous"], versions[3].as_str());
    eventually("the proxy runs the old version again", || async {
        proxy.version().as_deref() == Some(target.as_str())
    })
    .await;
    let again = daemon
        .client(Some(ADMIN_SECRET))
        .get(&format!("/v1/tables/{target}"))
        .await
        .unwrap();
    assert_eq!(again.body, stored.body);
    assert_eq!(tally(proxy.addr, 5).await.get("blue"), Some(&5));
    let history = daemon.history(GROUP).await;
    assert_eq!(history.len(), 5);
    assert_eq!(history[0]["kind"], "rollback");
    assert_eq!(history[0]["actor"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_via_the_cli_shows_progress_then_drained() {
    let work = Workspace::new();
    let daemon = Daemon::start(&work, "127.0.0.1:0", &[]).await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    let proxies = [
        FollowingProxy::start(&daemon.url(), GROUP, "p1").await,
        FollowingProxy::start(&daemon.url(), GROUP, "p2").await,
    ];
    apply_live(&work, &daemon, "t.yaml", &split_table(blue, green, 1, 1)).await;
    let run = admin(
        &work,
        &daemon,
        &["drain", "green", "--deadline", "10s", "-g", GROUP],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("+    drain:"),
        "the diff shows the drain: {}",
        run.stdout
    );
    eventually("green drained on both proxies", || async {
        let status = daemon.status(GROUP).await;
        let green = status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "green")
            .cloned()
            .unwrap();
        status["live"] == true && green["drained"] == 2
    })
    .await;
    for proxy in &proxies {
        assert_eq!(tally(proxy.addr, 10).await.get("blue"), Some(&10));
    }
    let run = admin(&work, &daemon, &["status", "-g", GROUP]).await;
    assert_eq!(run.code, 0);
    let green_row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("green "))
        .unwrap_or_default()
        .to_owned();
    let columns: Vec<&str> = green_row.split_whitespace().collect();
    assert_eq!(columns, ["green", "0", "0", "2", "0"], "{}", run.stdout);

    let run = admin(&work, &daemon, &["undrain", "green", "-g", GROUP]).await;
    assert_eq!(run.code, 0, "{run:?}");
    eventually("green active again", || async {
        let status = daemon.status(GROUP).await;
        status["live"] == true
            && status["backends"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["name"] == "green" && b["active"] == 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_applies_each_group_file_and_records_its_path() {
    let work = Workspace::new();
    let watched = work.path("tables");
    let daemon = Daemon::start_watching(&work, &watched).await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    let file = watched.join("edge.yaml");
    std::fs::write(&file, split_table(blue, green, 3, 1)).unwrap();
    eventually("the file is applied", || async {
        daemon.history(GROUP).await.len() == 1
    })
    .await;
    let history = daemon.history(GROUP).await;
    assert_eq!(history[0]["actor"], "gitops");
    assert!(
        history[0]["message"]
            .as_str()
            .unwrap()
            .contains(file.to_str().unwrap())
    );
    // An invalid edit changes nothing; fixing the file applies it.
    std::fs::write(
        &file,
        "routes: [{ name: web, rules: [{ backend: nope }] }]\n",
    )
    .unwrap();
    std::fs::write(watched.join("other.yaml"), split_table(blue, green, 1, 0)).unwrap();
    eventually("the other group's file is applied", || async {
        daemon.history("other").await.len() == 1
    })
    .await;
    assert_eq!(
        daemon.history(GROUP).await.len(),
        1,
        "the invalid file changed nothing"
    );
    std::fs::write(&file, split_table(blue, green, 1, 3)).unwrap();
    eventually("the fixed file is applied", || async {
        daemon.history(GROUP).await.len() == 2
    })
    .await;
}

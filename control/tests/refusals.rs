//! Changes the control plane refuses, end to end with the real daemon,
//! CLI and proxies: an invalid table (every error by field path), a table
//! a proxy NACKs, and missing, wrong or proxy tokens; none of them changes
//! what is served.
#![allow(clippy::unwrap_used)]

mod support;

use support::{
    ADMIN_SECRET, Daemon, FollowingProxy, GROUP, PROXY_SECRET, Workspace, admin, apply_live,
    backend, cli, eventually, split_table,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_table_lists_every_error_and_changes_nothing() {
    let work = Workspace::new();
    let daemon = Daemon::start(&work, "127.0.0.1:0", &[]).await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    let proxy = FollowingProxy::start(&daemon.url(), GROUP, "p1").await;
    let good = apply_live(&work, &daemon, "good.yaml", &split_table(blue, green, 1, 1)).await;

    let bad = work.write(
        "bad.yaml",
        &format!(
            "backends:\n  blue: {{ endpoints: [\"{blue}\"] }}\nroutes:\n- name: web\n  rules:\n  - split: {{ weights: {{ blue: 1, gren: 1 }} }}\n- name: web\n  rules:\n  - backend: blue\n"
        ),
    );
    let run = admin(
        &work,
        &daemon,
        &["apply", "-f", bad.to_str().unwrap(), "-g", GROUP],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("422"), "{}", run.stderr);
    assert!(
        run.stderr.contains("routes[0].rules[0].split.weights.gren"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("routes[1].name"), "{}", run.stderr);
    assert_eq!(daemon.history(GROUP).await.len(), 1);
    assert_eq!(daemon.status(GROUP).await["desired"], good.as_str());
    assert_eq!(proxy.version().as_deref(), Some(good.as_str()));

    // `diff` and `apply --dry-run` show the change and change nothing.
    let next = work.write("next.yaml", &split_table(blue, green, 9, 1));
    let run = admin(
        &work,
        &daemon,
        &["diff", "-f", next.to_str().unwrap(), "-g", GROUP],
    )
    .await;
    assert_eq!(
        run.code, 1,
        "diff exits 1 when there is a difference: {run:?}"
    );
    assert!(
        run.stdout.contains("-        blue: 1\n") && run.stdout.contains("+        blue: 9\n"),
        "{}",
        run.stdout
    );
    let run = admin(
        &work,
        &daemon,
        &[
            "apply",
            "--dry-run",
            "-f",
            next.to_str().unwrap(),
            "-g",
            GROUP,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("would make"), "{}", run.stdout);
    let same = work.write("same.yaml", &split_table(blue, green, 1, 1));
    let run = admin(
        &work,
        &daemon,
        &["diff", "-f", same.to_str().unwrap(), "-g", GROUP],
    )
    .await;
    assert_eq!(run.code, 0, "no difference: {run:?}");
    let run = admin(&work, &daemon, &["history", "-g", GROUP, "-o", "yaml"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.matches("actor: alice").count(),
        1,
        "{}",
        run.stdout
    );
    assert_eq!(daemon.status(GROUP).await["desired"], good.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_shows_in_status_and_the_proxy_keeps_its_table() {
    let work = Workspace::new();
    let daemon = Daemon::start(&work, "127.0.0.1:0", &["--drift-threshold", "100ms"]).await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    let small = split_table(blue, green, 1, 1);
    let limit = small.len() * 2;
    let strict = FollowingProxy::start_with(&daemon.url(), GROUP, "strict", |plane| {
        plane.max_table_bytes = limit;
    })
    .await;
    let relaxed = FollowingProxy::start(&daemon.url(), GROUP, "relaxed").await;
    let first = apply_live(&work, &daemon, "small.yaml", &small).await;

    // Same table with many extra (unused) backends: valid, but too big for
    // the strict proxy's limit.
    let mut big = small.clone();
    let extra: String = (0..40)
        .map(|i| {
            format!(
                "  spare{i}: {{ endpoints: [\"127.0.0.1:{}\"] }}\n",
                1000 + i
            )
        })
        .collect();
    big = big.replacen("backends:\n", &format!("backends:\n{extra}"), 1);
    let file = work.write("big.yaml", &big);
    let run = admin(
        &work,
        &daemon,
        &["apply", "-f", file.to_str().unwrap(), "-g", GROUP],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let second = daemon.status(GROUP).await["desired"]
        .as_str()
        .unwrap()
        .to_owned();

    eventually("the NACK is in status", || async {
        let status = daemon.status(GROUP).await;
        let strict = status["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node"] == "strict")
            .cloned()
            .unwrap();
        strict["nack"]["version"] == second.as_str()
            && strict["nack"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("--max-table-bytes"))
            && strict["applied"] == first.as_str()
            && strict["drift"] == true
    })
    .await;
    assert_eq!(strict.version().as_deref(), Some(first.as_str()));
    assert_eq!(relaxed.version().as_deref(), Some(second.as_str()));
    let status = daemon.status(GROUP).await;
    assert_eq!(status["live"], false, "one proxy did not ACK");

    let run = admin(
        &work,
        &daemon,
        &["status", "-w", "--timeout", "1s", "-g", GROUP],
    )
    .await;
    assert_ne!(run.code, 0, "status -w must fail while a proxy refuses");
    assert!(run.stderr.contains("NACK"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wrong_and_proxy_tokens_are_refused_and_change_nothing() {
    let work = Workspace::new();
    let daemon = Daemon::start(&work, "127.0.0.1:0", &[]).await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    let file = work.write("t.yaml", &split_table(blue, green, 1, 1));
    let args = ["apply", "-f", file.to_str().unwrap(), "-g", GROUP];
    for (token, expected) in [
        (None, "401"),
        (Some("wrong.token"), "401"),
        (Some("proxy.token"), "403"),
    ] {
        let run = cli(&work, &daemon, token, &args).await;
        assert_eq!(run.code, 1, "{token:?}: {run:?}");
        assert!(run.stderr.contains(expected), "{token:?}: {}", run.stderr);
    }
    // Subscribing and reading need a token too.
    for path in [
        "/v1/subscribe?group=edge&node=x",
        "/v1/status",
        "/v1/history",
    ] {
        let answer = daemon.client(None).get(path).await.unwrap();
        assert_eq!(answer.status, 401, "{path}");
    }
    let answer = daemon
        .client(Some(PROXY_SECRET))
        .post(
            "/v1/groups/edge/rollback",
            &serde_json::json!({ "version": null }),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 403);
    assert!(daemon.history(GROUP).await.is_empty());
    assert_eq!(
        daemon.status(GROUP).await["desired"],
        serde_json::Value::Null
    );

    // A body over the limit is refused before it is read whole.
    let huge = "x".repeat(switchyard_control::api::MAX_BODY_BYTES + 1);
    let answer = daemon
        .client(Some(ADMIN_SECRET))
        .post(
            "/v1/groups/edge/apply",
            &serde_json::json!({ "table": huge }),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 413);
}

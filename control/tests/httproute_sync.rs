//! `deploy/kubernetes/base/httproute-sync/httproute-sync.sh`, the bridge
//! from HTTPRoutes in a cluster to the control plane's watched directory:
//! the real script and the real daemon, with a stand-in `kubectl` that
//! answers the script's calls from files (there is no cluster here). What
//! it prints for `get -o yaml` is an HTTPRoute as the API server returns it:
//! status, owner references, server fields and all.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Daemon, FollowingProxy, Workspace, backend, eventually, tally};

const GROUP: &str = "storefront";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/base/httproute-sync/httproute-sync.sh"
);

/// Answers the calls the script makes from `$CLUSTER`: `backends/GROUP.yaml`
/// and `routes/GROUP/NAMESPACE_NAME.yaml`; fails every call while
/// `$CLUSTER/down` exists.
const KUBECTL: &str = r#"#!/bin/sh
[ -e "$CLUSTER/down" ] && { echo "The connection to the server was refused" >&2; exit 1; }
args="$*"
group_of() { g=${args##*switchyard.io/group=}; echo "${g%% *}"; }
case "$args" in
    "get configmaps "*"switchyard.io/group="*)
        cat "$CLUSTER/backends/$(group_of).yaml" ;;
    "get httproutes."*"-l switchyard.io/group="*)
        for f in "$CLUSTER/routes/$(group_of)"/*.yaml; do
            [ -e "$f" ] || continue
            b=$(basename "$f" .yaml); echo "${b%%_*}/${b#*_}"
        done ;;
    "get httproutes."*"-l switchyard.io/group -o"*)
        ls "$CLUSTER/routes" ;;
    "get httproutes."*" -n "*)
        set -- $args; cat "$CLUSTER"/routes/*/"$4_$5.yaml" ;;
    *) echo "stand-in kubectl: unexpected call: $args" >&2; exit 1 ;;
esac
"#;

/// The HTTPRoute as `kubectl get -o yaml` prints it after Argo Rollouts set
/// the weights: server fields, an owner, status from a controller.
fn route_as_served(blue: u32, green: u32, resource_version: u32) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute"}}
  creationTimestamp: "2026-11-20T10:00:00Z"
  generation: {resource_version}
  labels:
    switchyard.io/group: storefront
  name: web
  namespace: shop
  ownerReferences:
  - apiVersion: argoproj.io/v1alpha1
    kind: Rollout
    name: web
    uid: 5c1d2e3f-0000-4000-8000-000000000001
  resourceVersion: "{resource_version}"
  uid: 9a8b7c6d-0000-4000-8000-000000000002
spec:
  hostnames:
  - app.test
  parentRefs:
  - group: ""
    kind: Service
    name: web
    port: 80
  rules:
  - backendRefs:
    - group: ""
      kind: Service
      name: blue
      port: 80
      weight: {blue}
    - group: ""
      kind: Service
      name: green
      port: 80
      weight: {green}
    matches:
    - path:
        type: PathPrefix
        value: /
status:
  parents:
  - conditions:
    - lastTransitionTime: "2026-11-20T10:00:01Z"
      message: Accepted
      observedGeneration: {resource_version}
      reason: Accepted
      status: "True"
      type: Accepted
    controllerName: example.com/gateway-controller
    parentRef:
      group: ""
      kind: Service
      name: web
      port: 80
"#
    )
}

/// A cluster of files the stand-in kubectl serves, and the script's run.
struct Cluster {
    root: PathBuf,
    kubectl: PathBuf,
    watched: PathBuf,
}

impl Cluster {
    fn new(work: &Workspace, watched: &Path) -> Self {
        let root = work.path("cluster");
        std::fs::create_dir_all(root.join("backends")).unwrap();
        std::fs::create_dir_all(root.join("routes").join(GROUP)).unwrap();
        let kubectl = work.write("kubectl", KUBECTL);
        std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            root,
            kubectl,
            watched: watched.to_owned(),
        }
    }

    fn set_backends(&self, text: &str) {
        std::fs::write(
            self.root.join("backends").join(format!("{GROUP}.yaml")),
            text,
        )
        .unwrap();
    }

    fn set_route(&self, text: &str) {
        let path = self.root.join("routes").join(GROUP).join("shop_web.yaml");
        std::fs::write(path, text).unwrap();
    }

    fn set_down(&self, down: bool) {
        let path = self.root.join("down");
        if down {
            std::fs::write(path, "").unwrap();
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// One pass of the script: whether it succeeded, and what it printed.
    fn sync(&self) -> (bool, String) {
        let out = Command::new("sh")
            .arg(SCRIPT)
            .env("KUBECTL", &self.kubectl)
            .env("CLUSTER", &self.root)
            .env("SWITCHYARD_WATCH_DIR", &self.watched)
            .env("SWITCHYARD_SYNC_ONCE", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_set_on_the_httproute_reach_the_proxies() {
    let work = Workspace::new();
    let watched = work.path("watch");
    let daemon = Daemon::start_watching(&work, &watched).await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    let proxy = FollowingProxy::start(&daemon.url(), GROUP, "pod-1").await;
    let cluster = Cluster::new(&work, &watched);
    cluster.set_backends(&format!(
        "backends:\n  blue: {{ endpoints: [\"{blue}\"] }}\n  green: {{ endpoints: [\"{green}\"] }}\n"
    ));

    // The rollout starts: everything on blue.
    cluster.set_route(&route_as_served(100, 0, 1));
    let (ok, out) = cluster.sync();
    assert!(ok, "{out}");
    let table_file = watched.join(format!("{GROUP}.yaml"));
    assert!(
        out.contains(&format!("wrote {}", table_file.display())),
        "{out}"
    );
    eventually("the table reaches the proxy", || async {
        proxy.version().is_some()
    })
    .await;
    assert_eq!(
        tally(proxy.addr, 10).await,
        [("blue".to_owned(), 10)].into()
    );
    let history = daemon.history(GROUP).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["actor"], "gitops");

    // Argo promotes green: the proxies follow the HTTPRoute's new weights.
    let first = proxy.version();
    cluster.set_route(&route_as_served(0, 100, 2));
    let (ok, out) = cluster.sync();
    assert!(ok, "{out}");
    eventually("the new weights reach the proxy", || async {
        proxy.version() != first
    })
    .await;
    assert_eq!(
        tally(proxy.addr, 10).await,
        [("green".to_owned(), 10)].into()
    );
    assert_eq!(daemon.history(GROUP).await.len(), 2);

    // Only server fields and status change: the file is rewritten, but the
    // table (whose version hashes the spec) is the same, so no new version.
    let promoted = proxy.version();
    cluster.set_route(&route_as_served(0, 100, 3));
    let (ok, out) = cluster.sync();
    assert!(ok && out.contains("wrote"), "{out}");
    // The watcher reads files in name order each pass: once a later-named
    // file is applied, it has read this one too.
    std::fs::write(
        watched.join("zz-marker.yaml"),
        support::split_table(blue, green, 1, 1),
    )
    .unwrap();
    eventually("the watcher passed over the rewritten file", || async {
        daemon.history("zz-marker").await.len() == 1
    })
    .await;
    assert_eq!(
        daemon.history(GROUP).await.len(),
        2,
        "no version from status alone"
    );
    assert_eq!(proxy.version(), promoted);

    // The API server is unreachable mid-change: the pass fails and the last
    // whole table stays, with nothing half-written left behind.
    cluster.set_route(&route_as_served(50, 50, 4));
    cluster.set_down(true);
    let (ok, out) = cluster.sync();
    assert!(!ok, "a failing kubectl fails the pass: {out}");
    let kept = std::fs::read_to_string(&table_file).unwrap();
    assert!(kept.contains("resourceVersion: \"3\""), "{kept}");
    assert!(
        std::fs::read_dir(&watched).unwrap().all(|entry| !entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")),
        "no partial file is left behind"
    );
    // Back up: the change goes through.
    cluster.set_down(false);
    let (ok, out) = cluster.sync();
    assert!(ok, "{out}");
    eventually("the 50/50 change reaches the control plane", || async {
        daemon.history(GROUP).await.len() == 3
    })
    .await;
}

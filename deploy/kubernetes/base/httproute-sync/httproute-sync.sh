#!/bin/sh
# Copies Gateway API HTTPRoutes from the cluster into the control plane's
# watched directory, so that what edits an HTTPRoute (Flagger with
# provider gatewayapi:v1, Argo Rollouts with the gatewayAPI plugin, kubectl,
# Argo CD) changes the tables the proxies serve.
#
# Group GROUP's table, written as DIR/GROUP.yaml whenever it changes, is:
#   - the `backends.yaml` key of every ConfigMap labelled
#     switchyard.io/group=GROUP (the endpoints of the backendRefs), then
#   - every HTTPRoute labelled switchyard.io/group=GROUP, as
#     `kubectl get -o yaml` prints it (status and server fields are ignored).
# The control plane validates each version (an invalid one changes nothing
# and is logged), stores it and pushes it; `switchyard-control history`
# shows it with actor `gitops` and this file's path.
#
# Environment: SWITCHYARD_WATCH_DIR (the control plane's --watch), default
# /var/lib/switchyard-control/watch; SWITCHYARD_SYNC_INTERVAL seconds,
# default 2; KUBECTL, default kubectl; SWITCHYARD_SYNC_ONCE=1 syncs once
# and exits with kubectl's failure, if any.
set -u

DIR="${SWITCHYARD_WATCH_DIR:-/var/lib/switchyard-control/watch}"
INTERVAL="${SWITCHYARD_SYNC_INTERVAL:-2}"
KUBECTL="${KUBECTL:-kubectl}"
ROUTES=httproutes.gateway.networking.k8s.io
LABEL=switchyard.io/group

# The table of one group, on standard output; fails if any read fails, so
# that a half-read table never replaces a whole one.
# (Each step checks its own status: `set -e` does not apply inside `if`.)
table_of() {
    group="$1"
    "$KUBECTL" get configmaps --all-namespaces -l "$LABEL=$group" \
        -o jsonpath='{range .items[*]}{.data.backends\.yaml}{"\n"}{end}' || return 1
    routes=$("$KUBECTL" get "$ROUTES" --all-namespaces -l "$LABEL=$group" \
        -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}') || return 1
    for route in $routes; do
        echo "---"
        "$KUBECTL" get "$ROUTES" -n "${route%%/*}" "${route#*/}" -o yaml || return 1
    done
}

sync_once() {
    groups=$("$KUBECTL" get "$ROUTES" --all-namespaces -l "$LABEL" \
        -o jsonpath='{range .items[*]}{.metadata.labels.switchyard\.io/group}{"\n"}{end}') || return 1
    failed=0
    for group in $(printf '%s\n' "$groups" | sort -u); do
        case "$group" in
            *[!a-z0-9._-]* | .*)
                echo "httproute-sync: skipping group \"$group\": not a file name" >&2
                continue
                ;;
        esac
        # Written aside, then renamed: the control plane never reads half a
        # file (hidden names are not tables).
        aside="$DIR/.$group.yaml.partial"
        if table_of "$group" >"$aside"; then
            if ! cmp -s "$aside" "$DIR/$group.yaml"; then
                mv "$aside" "$DIR/$group.yaml"
                echo "httproute-sync: wrote $DIR/$group.yaml"
            fi
        else
            echo "httproute-sync: reading group $group failed; its last table stays" >&2
            failed=1
        fi
        rm -f "$aside"
    done
    return "$failed"
}

mkdir -p "$DIR"
if [ "${SWITCHYARD_SYNC_ONCE:-0}" = 1 ]; then
    sync_once
    exit
fi
while :; do
    sync_once || echo "httproute-sync: kubectl failed; the last tables stay" >&2
    sleep "$INTERVAL"
done

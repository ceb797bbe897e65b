#!/usr/bin/env bash
# Builds the pinned tools the tests need into a cache outside the repo, keyed by version:
#   $PETFABRIC_CACHE/bin/<tool>-<version>/...   (default PETFABRIC_CACHE=~/.cache/petfabric)
# Idempotent: a tool whose stamp matches is not rebuilt. Prints progress with elapsed time.
# Usage: hack/build-tools.sh [k8s|etcd|kwok|helm|staticcheck ...]   (no args: all)
set -euo pipefail

HACK=$(cd "$(dirname "$0")" && pwd)
CACHE=${PETFABRIC_CACHE:-$HOME/.cache/petfabric}
BIN=$CACHE/bin

# Pinned versions (one source of truth, also read by test/cluster); part of every cache key.
# shellcheck source=versions.env
source "$HACK/versions.env"

GO_VERSION=$(go env GOVERSION)
export GOFLAGS=-mod=readonly   # wrapper modules build exactly what their committed go.sum pins

log() { printf '[build-tools %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# run_with_progress NAME CMD...: runs CMD, printing a heartbeat every 30 s and the total time.
run_with_progress() {
  local name=$1; shift
  local start=$SECONDS
  log "building $name ..."
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && log "  still building $name ($((SECONDS - start))s)"
  done
  if ! wait "$pid"; then
    log "FAILED building $name after $((SECONDS - start))s"
    return 1
  fi
  log "built $name in $((SECONDS - start))s"
}

# fresh DIR KEY: true when DIR holds a completed build for KEY.
fresh() { [[ -f "$1/.stamp" && "$(cat "$1/.stamp")" == "$2" ]]; }
stamp() { printf '%s' "$2" >"$1/.stamp"; }
sumkey() { sha256sum "$1" | cut -c1-16; }

build_k8s() {
  local dir=$BIN/k8s-$K8S_VERSION key
  # fakecri is our own source in the wrapper module: its files are part of the key.
  key="$K8S_VERSION $GO_VERSION $(sumkey "$HACK/k8s/go.sum") $(cat "$HACK"/k8s/fakecri/*.go | sha256sum | cut -c1-16)"
  if fresh "$dir" "$key"; then log "k8s $K8S_VERSION: cached in $dir"; return; fi
  mkdir -p "$dir"
  local major=${K8S_VERSION#v}; major=${major%%.*}
  local minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  local ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  # Build next to the cache and move each binary in with a rename: tests running the previous
  # binaries keep their files (a rename never rewrites a running executable), and a failed
  # build leaves the previous set in place.
  local stage
  stage=$(mktemp -d "$BIN/.k8s-build.XXXXXX")
  # kubelet and fakecri (the fake CRI runtime, hack/k8s/fakecri) run real kubelet nodes in
  # test/cluster; in the same `go build` they share the packages already compiled for the rest.
  if ! (cd "$HACK/k8s" && run_with_progress "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, fakecri $K8S_VERSION" \
    go build -trimpath -ldflags "$ldf" -o "$stage/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
      k8s.io/kubernetes/cmd/kubelet ./fakecri); then
    rm -rf "$stage"
    return 1
  fi
  local f
  for f in "$stage"/*; do mv -f "$f" "$dir/"; done
  rmdir "$stage"
  stamp "$dir" "$key"
}

build_etcd() {
  local dir=$BIN/etcd-$ETCD_VERSION key
  key="$ETCD_VERSION $GO_VERSION $(sumkey "$HACK/etcd/go.sum")"
  if fresh "$dir" "$key"; then log "etcd $ETCD_VERSION: cached in $dir"; return; fi
  mkdir -p "$dir"
  (cd "$HACK/etcd" && run_with_progress "etcd $ETCD_VERSION" \
    go build -trimpath -ldflags "-s -w" -o "$dir/etcd" go.etcd.io/etcd/server/v3)
  stamp "$dir" "$key"
}

# go_install NAME DIR MODULE_PKG@VERSION [LDFLAGS]: modules without replace directives
# install directly; the version pins them and their own go.sum verifies them.
go_install() {
  local name=$1 dir=$2 pkg=$3 ldf=${4:-"-s -w"} key="$3 $GO_VERSION"
  if fresh "$dir" "$key"; then log "$name: cached in $dir"; return; fi
  mkdir -p "$dir"
  GOFLAGS= GOBIN="$dir" run_with_progress "$name" go install -trimpath -ldflags "$ldf" "$pkg"
  stamp "$dir" "$key"
}

build_kwok() {
  local dir=$BIN/kwok-$KWOK_VERSION
  go_install "kwok $KWOK_VERSION" "$dir" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
    "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
  # kwok needs stage definitions; they ship in its module, copy the ones the harness uses.
  local src
  src=$(GOFLAGS= go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  mkdir -p "$dir/stages"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    install -m 0644 "$src/kustomize/stage/$f" "$dir/stages/$(echo "$f" | tr / -)"
  done
}

build_helm() {
  go_install "helm $HELM_VERSION" "$BIN/helm-$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}

build_staticcheck() {
  go_install "staticcheck $STATICCHECK_VERSION" "$BIN/staticcheck-$STATICCHECK_VERSION" \
    "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
}

# env: prints the variables the tests read to find the binaries.
print_env() {
  echo "PETFABRIC_K8S_BIN=$BIN/k8s-$K8S_VERSION"
  echo "PETFABRIC_ETCD_BIN=$BIN/etcd-$ETCD_VERSION"
  echo "PETFABRIC_KWOK_BIN=$BIN/kwok-$KWOK_VERSION"
  echo "PETFABRIC_HELM_BIN=$BIN/helm-$HELM_VERSION"
  echo "PETFABRIC_STATICCHECK_BIN=$BIN/staticcheck-$STATICCHECK_VERSION"
}

main() {
  if [[ ${1:-} == env ]]; then print_env; return; fi
  local tools=("$@")
  [[ ${#tools[@]} -gt 0 ]] || tools=(k8s etcd kwok helm staticcheck)
  local start=$SECONDS
  for t in "${tools[@]}"; do
    case $t in
      k8s|etcd|kwok|helm|staticcheck) "build_$t" ;;
      *) echo "unknown tool $t" >&2; exit 2 ;;
    esac
  done
  log "tools ready in $((SECONDS - start))s (cache: $BIN)"
}
main "$@"

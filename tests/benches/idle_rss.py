#!/usr/bin/env python3
"""Resident memory per idle tunnel: start a bauta binary with a plain
HTTP/1.1 listener that may reach 127.0.0.1, open N CONNECT tunnels through
it to a local TCP echo, move a few bytes through each (so every tunnel has
been used once), then hold them all idle and read the proxy's VmRSS.
Reports (RSS held − RSS before) / N, in KiB, for each of ROUNDS rounds (a
fresh proxy each round) and their median.

    python3 tests/benches/idle_rss.py [--mode plain|tls|h2] BAUTA_BIN [N] [ROUNDS] [BAUTA_BIN_2 ...]

--mode plain (default): HTTP/1.1 CONNECT on the plaintext listener, one
TCP connection per tunnel. tls: HTTP/1.1 CONNECT on a TLS listener, one TLS
connection per tunnel. h2: HTTP/2 CONNECT streams on the TLS listener, 100
streams per connection (the connections' cost is shared by their streams);
it needs the `h2` package (tests/peers/requirements.txt: run it with
target/venv/bin/python). The TLS certificate is made with the openssl CLI.

Several binaries are measured interleaved (A B A B ...), so a before/after
comparison shares the machine's state. Everything on 127.0.0.1; stdlib only.
"""
import os
import selectors
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CONFIG = """
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocols = ["http1"]

[limits]
max_connections = 100000
max_tunnels = 100000
max_connections_per_client = 100000
idle_timeout_s = 600
shutdown_grace_s = 1

{tls_listener}
[reload]
watch_files = false

[policy]
default = "deny"

[[policy.rule]]
name = "loopback"
action = "allow"
cidrs = ["127.0.0.0/8"]
"""


def echo_server():
    """A TCP echo on 127.0.0.1 (one thread, selectors); returns its port
    (also peers.py's)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)

    def run():
        while True:
            for key, _ in sel.select():
                if key.fileobj is srv:
                    try:
                        c, _ = srv.accept()
                        c.setblocking(False)
                        sel.register(c, selectors.EVENT_READ)
                    except BlockingIOError:
                        pass
                else:
                    c = key.fileobj
                    try:
                        data = c.recv(65536)
                    except (BlockingIOError, ConnectionError):
                        continue
                    if not data:
                        sel.unregister(c)
                        c.close()
                    else:
                        try:
                            c.sendall(data)
                        except OSError:
                            pass

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


TLS_LISTENER = """
[[listener]]
name = "secure"
listen = "127.0.0.1:0"
protocols = ["http1", "h2"]
tls_cert = '{cert}'
tls_key = '{key}'
"""

STREAMS_PER_CONNECTION = 100


def make_cert(workdir):
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def start(binary, workdir, mode):
    path = os.path.join(workdir, "bauta.toml")
    tls = ""
    if mode != "plain":
        cert, key = make_cert(workdir)
        tls = TLS_LISTENER.format(cert=cert, key=key)
    with open(path, "w") as f:
        f.write(CONFIG.replace("{tls_listener}", tls))
    want = "plain" if mode == "plain" else "secure"
    p = subprocess.Popen([binary, "run", "--config", path, "--worker-threads", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "RUST_LOG": "info"})
    listen = None
    deadline = time.time() + 20
    while time.time() < deadline and listen is None:
        line = p.stderr.readline()
        if "listening" in line and f"listener={want} " in line:
            listen = int(line.rsplit(":", 1)[1].split()[0].strip().rstrip('"'))
    if listen is None:
        p.kill()
        raise RuntimeError("bauta did not start")
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, listen


def tls_context(alpn):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # loopback, a certificate made just now
    ctx.set_alpn_protocols(alpn)
    return ctx


def h1_tunnel(port, echo_port, ctx=None):
    """One HTTP/1.1 CONNECT tunnel (over TLS when ctx), used once (also
    peers.py's)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if ctx is not None:
        s = ctx.wrap_socket(s, server_hostname="localhost")
    s.sendall(f"CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: 127.0.0.1:{echo_port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed before the answer")
        head += chunk
    if not head.split(b" ", 2)[1].startswith(b"2"):
        raise RuntimeError(head.split(b"\r\n")[0].decode(errors="replace"))
    s.sendall(b"ping")
    got = b""
    while len(got) < 4:
        chunk = s.recv(4)
        if not chunk:
            raise RuntimeError("closed after the answer")
        got += chunk
    return s


def h2_tunnels(port, echo_port, count):
    """One TLS connection with `count` HTTP/2 CONNECT streams, each used once."""
    import h2.config
    import h2.connection
    import h2.events
    s = tls_context(["h2"]).wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                        server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
    conn.initiate_connection()
    ids = []
    for _ in range(count):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "CONNECT"), (":authority", f"127.0.0.1:{echo_port}")])
        conn.send_data(sid, b"ping")
        ids.append(sid)
    s.sendall(conn.data_to_send())
    echoed = {}
    while sum(echoed.values()) < 4 * count:
        data = s.recv(65536)
        if not data:
            raise RuntimeError("HTTP/2 connection closed")
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(b":status")
                if status != b"200":
                    raise RuntimeError(f"CONNECT answered {status}")
            elif isinstance(ev, h2.events.DataReceived):
                echoed[ev.stream_id] = echoed.get(ev.stream_id, 0) + len(ev.data)
                conn.acknowledge_received_data(len(ev.data), ev.stream_id)
            elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                raise RuntimeError(f"HTTP/2: {ev}")
        s.sendall(conn.data_to_send())
    return s


def one_round(binary, n, echo_port, mode):
    with tempfile.TemporaryDirectory() as d:
        p, port = start(binary, d, mode)
        try:
            time.sleep(0.5)
            before = rss_kib(p.pid)
            socks = []
            if mode == "h2":
                for i in range(0, n, STREAMS_PER_CONNECTION):
                    socks.append(h2_tunnels(port, echo_port, min(STREAMS_PER_CONNECTION, n - i)))
            else:
                ctx = tls_context(["http/1.1"]) if mode == "tls" else None
                for i in range(n):
                    socks.append(h1_tunnel(port, echo_port, ctx))
            time.sleep(1.0)
            held = rss_kib(p.pid)
            for s in socks:
                s.close()
            return (held - before) / n
        finally:
            p.terminate()
            p.wait(timeout=10)


def main():
    args = sys.argv[1:]
    mode = "plain"
    if len(args) >= 2 and args[0] == "--mode":
        mode, args = args[1], args[2:]
    if not args or mode not in ("plain", "tls", "h2"):
        print(__doc__)
        return 2
    binaries = [args[0]] + args[3:]
    n = int(args[1]) if len(args) > 1 else 1000
    rounds = int(args[2]) if len(args) > 2 else 3
    echo_port = echo_server()
    results = {b: [] for b in binaries}
    for r in range(rounds):
        for b in binaries:
            kib = one_round(b, n, echo_port, mode)
            results[b].append(kib)
            print(f"round {r + 1}: {b}: {kib:.1f} KiB per idle {mode} tunnel ({n} held)", flush=True)
    for b, v in results.items():
        print(f"{b}: median {statistics.median(v):.1f} KiB per idle {mode} tunnel "
              f"(min {min(v):.1f}, max {max(v):.1f}, {rounds} rounds, {n} tunnels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Resident memory per idle tunnel: start a bauta binary with a plain
HTTP/1.1 listener that may reach 127.0.0.1, open N CONNECT tunnels through
it to a local TCP echo, move a few bytes through each (so every tunnel has
been used once), then hold them all idle and read the proxy's VmRSS.
Reports (RSS held − RSS before) / N, in KiB, for each of ROUNDS rounds (a
fresh proxy each round) and their median.

    python3 tests/benches/idle_rss.py BAUTA_BIN [N] [ROUNDS] [BAUTA_BIN_2 ...]

Several binaries are measured interleaved (A B A B ...), so a before/after
comparison shares the machine's state. Everything on 127.0.0.1; stdlib only.
"""
import os
import selectors
import socket
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
    """A TCP echo on 127.0.0.1 (one thread, selectors); returns its port."""
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
                        c.sendall(data)

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start(binary, workdir):
    path = os.path.join(workdir, "bauta.toml")
    with open(path, "w") as f:
        f.write(CONFIG)
    p = subprocess.Popen([binary, "run", "--config", path, "--worker-threads", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "RUST_LOG": "info"})
    listen = None
    deadline = time.time() + 20
    while time.time() < deadline and listen is None:
        line = p.stderr.readline()
        if "listening" in line and "plain" in line:
            listen = int(line.rsplit(":", 1)[1].split()[0].strip().rstrip('"'))
    if listen is None:
        p.kill()
        raise RuntimeError("bauta did not start")
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, listen


def one_round(binary, n, echo_port):
    with tempfile.TemporaryDirectory() as d:
        p, port = start(binary, d)
        try:
            time.sleep(0.5)
            before = rss_kib(p.pid)
            socks = []
            for i in range(n):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(f"CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: 127.0.0.1:{echo_port}\r\n\r\n".encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise RuntimeError("closed before the answer")
                    head += chunk
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode(errors="replace"))
                s.sendall(b"ping")
                got = b""
                while len(got) < 4:
                    got += s.recv(4)
                socks.append(s)
            time.sleep(1.0)
            held = rss_kib(p.pid)
            for s in socks:
                s.close()
            return (held - before) / n
        finally:
            p.terminate()
            p.wait(timeout=10)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    binaries = [sys.argv[1]] + sys.argv[4:]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    echo_port = echo_server()
    results = {b: [] for b in binaries}
    for r in range(rounds):
        for b in binaries:
            kib = one_round(b, n, echo_port)
            results[b].append(kib)
            print(f"round {r + 1}: {b}: {kib:.1f} KiB per idle tunnel ({n} held)", flush=True)
    for b, v in results.items():
        print(f"{b}: median {statistics.median(v):.1f} KiB per idle tunnel "
              f"(min {min(v):.1f}, max {max(v):.1f}, {rounds} rounds, {n} tunnels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

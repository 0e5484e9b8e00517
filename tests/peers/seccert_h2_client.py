#!/usr/bin/env python3
"""An independent HTTP/2 client for secondary certificates
(draft-ietf-httpbis-secondary-server-certs, project codepoints).

TLS 1.3 and the RFC 9261 exporter come from OpenSSL (pyOpenSSL); HTTP/2 from
the `h2` package; authenticators are validated with `ea_peer.py`'s own RFC 9261
code and the certificate chain with `cryptography`'s X.509 verifier. Nothing is
shared with Bauta's Rust code.

The `h2` package knows neither SETTINGS_HTTP_SERVER_CERT_AUTH (0x5ECC; its
hyperframe truncates setting ids to 8 bits) nor SERVER_CERTIFICATE (0xCE), so:
  * the setting is spliced into our first SETTINGS frame as raw bytes;
  * every frame from the proxy goes through a frame splitter first: type-0xCE
    frames are taken out (and validated), the proxy's SETTINGS and GOAWAY are
    parsed raw, the rest is fed to `h2`.

Modes (one JSON object on stdout):
  flow       the whole secondary-certificate flow on ONE connection:
             --advertise eager: wait for --expect-certs SERVER_CERTIFICATEs;
             --advertise on-connect: CONNECT <origin>:443 first (the proxy
             sends the certificate before answering);
             --advertise off: CONNECT <origin>:443 (what on-connect would
             answer with a certificate) and expect nothing;
             every mode ends its wait with a PING round trip (see `sync`);
             then GET https://<origin><path>, CONNECT 127.0.0.1:<echo> with
             echo bytes, GET https://<other>/. With --hold, print the JSON, wait
             for a line on stdin, then GET the origin again on the same
             connection and print a second JSON object.
  violation  break one rule and report how the proxy closed the connection:
             cert-stream0 (SERVER_CERTIFICATE from the client on stream 0),
             cert-stream1 (on an open request stream), setting-2 (setting
             value 2), setting-withdraw (1, then a second SETTINGS with 0).

This file also holds helpers the HTTP/3 client imports (TLS 1.3 exporter from
an exporter master secret, certificate checks).
"""

import argparse
import hashlib
import json
import os
import select
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ea_peer  # noqa: E402  (the independent RFC 9261 code)

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand  # noqa: E402
from cryptography.x509.verification import PolicyBuilder, Store  # noqa: E402
from OpenSSL import SSL  # noqa: E402
from OpenSSL._util import lib as _lib  # noqa: E402

H2_SETTING = 0x5ECC
H2_FRAME = 0xCE
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# HTTP/2 frame types (RFC 9113 §6).
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7

HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}


# --- TLS 1.3 exporter (RFC 8446 §7.1, §7.5), written from the RFC ----------


def hkdf_expand_label(hname, secret, label, context, length):
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(algorithm=HASHES[hname](), length=length, info=info).derive(secret)


def tls13_exporter(hname, exporter_master_secret, label, context, length):
    """TLS-Exporter(label, context, length) =
    HKDF-Expand-Label(Derive-Secret(exporter_master_secret, label, ""),
                      "exporter", Hash(context), length)."""
    empty = hashlib.new(hname, b"").digest()
    hlen = hashlib.new(hname).digest_size
    secret = hkdf_expand_label(hname, exporter_master_secret, label, empty, hlen)
    return hkdf_expand_label(hname, secret, b"exporter", hashlib.new(hname, context).digest(), length)


def authenticator_keys(hname, exporter_master_secret):
    """(handshake context, finished key) for server authenticators (RFC 9261 §5.1)."""
    n = hashlib.new(hname).digest_size
    hc = tls13_exporter(hname, exporter_master_secret, ea_peer.HC_LABEL, b"", n)
    fk = tls13_exporter(hname, exporter_master_secret, ea_peer.FK_LABEL, b"", n)
    return hc, fk


# --- certificates -----------------------------------------------------------


def chain_ders(data):
    """The cert_data entries of the authenticator's Certificate message."""
    buf = ea_peer.Buf(data, "authenticator")
    body, _ = ea_peer.handshake(buf, ea_peer.CERTIFICATE)
    cb = ea_peer.Buf(body, "Certificate")
    cb.vec(1, "certificate_request_context")
    lst = ea_peer.Buf(cb.vec(3, "certificate_list"), "certificate_list")
    out = []
    while lst.left():
        out.append(lst.vec(3, "cert_data"))
        lst.vec(2, "extensions")
    return out


def check_authenticator(data, hc, fk, hname, offered, seen, ca_path, name):
    """Validate one SERVER_CERTIFICATE payload (RFC 9261, ea_peer's code), then
    judge the certificate (chain to the test CA, valid for the name)."""
    out = {"bytes": len(data)}
    try:
        out.update(ea_peer.validate(data, hc, fk, hname, offered, seen))
    except ea_peer.Invalid as e:
        out.update({"valid": False, "error": str(e)})
        return out
    ders = chain_ders(data)
    leaf = x509.load_der_x509_certificate(ders[0])
    out["leaf_sha256"] = hashlib.sha256(ders[0]).hexdigest()
    out["leaf_serial"] = format(leaf.serial_number, "x")
    out["leaf_key"] = type(leaf.public_key()).__name__
    # Judge it for `name` if it claims that name, else for its first dNSName
    # (several origins on one connection); the test checks which.
    if name not in out["names"] and out["names"]:
        name = out["names"][0]
    out["checked_name"] = name
    try:
        with open(ca_path, "rb") as f:
            store = Store(x509.load_pem_x509_certificates(f.read()))
        verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name))
        intermediates = [x509.load_der_x509_certificate(d) for d in ders[1:]]
        verifier.verify(leaf, intermediates)
        out["acceptable"] = True
    except Exception as e:  # noqa: BLE001  (any reason the chain is not acceptable)
        out["acceptable"] = False
        out["acceptable_error"] = f"{type(e).__name__}: {e}"
    return out


# --- TLS over TCP (pyOpenSSL) -------------------------------------------------


class Tls:
    """A TLS 1.3 client connection with ALPN h2; non-blocking after the handshake."""

    def __init__(self, host, port, ca, sigalgs, suite, tls12=False):
        self.SSL = SSL
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        version = SSL.TLS1_2_VERSION if tls12 else SSL.TLS1_3_VERSION
        ctx.set_min_proto_version(version)
        ctx.set_max_proto_version(version)
        if suite:
            ctx.set_tls13_ciphersuites(suite.encode())
        ctx.load_verify_locations(ca)
        ctx.set_verify(SSL.VERIFY_PEER, lambda *a: a[-1])
        ctx.set_alpn_protos([b"h2"])
        if _lib.SSL_CTX_set1_sigalgs_list(ctx._context, sigalgs.encode()) != 1:
            raise SystemExit("SSL_CTX_set1_sigalgs_list failed")
        self.offered = {ea_peer.NAME_TO_CODE[n] for n in sigalgs.split(":")}
        self.keylog = []
        ctx.set_keylog_callback(lambda _conn, line: self.keylog.append(bytes(line)))
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.settimeout(None)  # blocking handshake (SIGALRM bounds the run)
        self.conn = SSL.Connection(ctx, self.sock)
        self.conn.set_tlsext_host_name(b"localhost")
        self.conn.set_connect_state()
        self.conn.do_handshake()
        self.sock.setblocking(False)
        self.eof = False

    def exporter(self):
        """(cipher, hash, hc, fk) from OpenSSL, plus a check that our own RFC 8446
        §7.5 formula applied to OpenSSL's EXPORTER_SECRET (key log) gives the
        same values: the formula the HTTP/3 client uses on aioquic's state."""
        cipher, hname, hc, fk, _same = ea_peer.exporter(self.conn)
        ems = None
        for line in self.keylog:
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"EXPORTER_SECRET":
                ems = bytes.fromhex(parts[2].decode())
        check = None
        if ems is not None:
            check = authenticator_keys(hname, ems) == (hc, fk)
        return cipher, hname, hc, fk, check

    def send(self, data):
        while data:
            try:
                n = self.conn.send(data)
                data = data[n:]
            except self.SSL.WantWriteError:
                select.select([], [self.sock], [], 1)
            except self.SSL.WantReadError:
                select.select([self.sock], [], [], 1)

    def recv(self, timeout):
        """Some bytes, b"" on EOF, None on timeout."""
        if self.eof:
            return b""
        deadline = time.monotonic() + timeout
        while True:
            if self.conn.pending() == 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    return None
            try:
                data = self.conn.recv(65536)
                if not data:
                    self.eof = True
                return data
            except self.SSL.WantReadError:
                continue
            except (self.SSL.ZeroReturnError, self.SSL.SysCallError):
                self.eof = True
                return b""
            except self.SSL.Error as e:
                self.eof = True
                self.error = str(e)
                return b""

    def close(self):
        try:
            self.conn.shutdown()
        except Exception:  # noqa: BLE001
            pass
        self.sock.close()


# --- HTTP/2 ---------------------------------------------------------------------


def frame(ftype, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def splice_setting(data, setting_id, value):
    """Append one setting to the first SETTINGS frame after the preface."""
    assert data.startswith(H2_PREFACE), "no client preface"
    off = len(H2_PREFACE)
    ln = int.from_bytes(data[off : off + 3], "big")
    assert data[off + 3] == SETTINGS and data[off + 4] == 0, "first frame is not SETTINGS"
    entry = setting_id.to_bytes(2, "big") + value.to_bytes(4, "big")
    head = (ln + 6).to_bytes(3, "big") + data[off + 3 : off + 9]
    body = data[off + 9 : off + 9 + ln]
    return data[:off] + head + body + entry + data[off + 9 + ln :]


def parse_settings(payload):
    return {
        int.from_bytes(payload[i : i + 2], "big"): int.from_bytes(payload[i + 2 : i + 6], "big")
        for i in range(0, len(payload) - 5, 6)
    }


class H2Client:
    def __init__(self, tls, setting_value=1, send_setting=True):
        self.tls = tls
        cfg = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False
        )
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.initiate_connection()
        first = self.conn.data_to_send()
        if send_setting:
            first = splice_setting(first, H2_SETTING, setting_value)
        self.tls.send(first)
        self.buf = b""
        self.seq = 0  # frames received so far
        self.certs = []  # {"payload", "flags", "stream", "seq"}
        self.server_settings = []  # raw SETTINGS payloads parsed (non-ACK)
        self.goaway = None
        self.headers_seq = {}  # stream -> seq of its first HEADERS frame
        self.streams = {}
        self.terminated = None
        self.h2_error = None
        self.ping_acks = []  # payloads of the PING ACKs received

    def st(self, sid):
        return self.streams.setdefault(
            sid, {"headers": None, "data": bytearray(), "ended": False, "reset": None}
        )

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.tls.send(out)

    def _frames(self, data):
        self.buf += data
        while len(self.buf) >= 9:
            ln = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + ln:
                break
            raw, self.buf = self.buf[: 9 + ln], self.buf[9 + ln :]
            ftype, flags = raw[3], raw[4]
            sid = int.from_bytes(raw[5:9], "big") & 0x7FFFFFFF
            payload = raw[9:]
            self.seq += 1
            if ftype == H2_FRAME:
                self.certs.append({"payload": payload, "flags": flags, "stream": sid, "seq": self.seq})
                continue
            if ftype == SETTINGS and not flags & 0x1:
                self.server_settings.append(parse_settings(payload))
            elif ftype == GOAWAY:
                self.goaway = {
                    "last_stream": int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF,
                    "error_code": int.from_bytes(payload[4:8], "big"),
                    "debug": payload[8:].decode(errors="replace"),
                }
            elif ftype == HEADERS:
                self.headers_seq.setdefault(sid, self.seq)
            yield raw

    def _feed(self, data):
        ev = h2.events
        for raw in self._frames(data):
            try:
                events = self.conn.receive_data(raw)
            except Exception as e:  # noqa: BLE001  (h2 refused what the proxy sent)
                self.h2_error = f"{type(e).__name__}: {e}"
                return
            for e in events:
                if isinstance(e, ev.ResponseReceived):
                    self.st(e.stream_id)["headers"] = dict(e.headers)
                elif isinstance(e, ev.DataReceived):
                    self.st(e.stream_id)["data"].extend(e.data)
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                elif isinstance(e, ev.StreamEnded):
                    self.st(e.stream_id)["ended"] = True
                elif isinstance(e, ev.StreamReset):
                    self.st(e.stream_id)["reset"] = e.error_code
                elif isinstance(e, ev.ConnectionTerminated):
                    self.terminated = e.error_code
                elif isinstance(e, ev.PingAckReceived):
                    self.ping_acks.append(e.ping_data)
        self.flush()

    def closed(self):
        return self.tls.eof or self.goaway is not None or self.h2_error is not None

    def pump(self, cond, timeout):
        """Read until cond() holds (True), the connection ends or time runs out (False)."""
        deadline = time.monotonic() + timeout
        while not cond():
            if self.tls.eof:
                return cond()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            data = self.tls.recv(left)
            if data is None:
                return cond()
            if data == b"":
                return cond()
            self._feed(data)
        return True

    def request(self, headers, end_stream=True):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.flush()
        self.st(sid)
        return sid

    def response(self, sid, timeout=5, body=True):
        s = self.st(sid)
        if body:
            self.pump(lambda: s["ended"] or s["reset"] is not None or self.closed(), timeout)
        else:
            self.pump(lambda: s["headers"] is not None or s["reset"] is not None or self.closed(), timeout)
        h = s["headers"] or {}
        return {
            "status": int(h[":status"]) if ":status" in h else None,
            "proxy_status": h.get("proxy-status"),
            "headers": {k: v for k, v in h.items() if not k.startswith(":")},
            "body": bytes(s["data"]).decode(errors="replace"),
            "reset": s["reset"],
            "ended": s["ended"],
        }

    def setting(self):
        """The proxy's SETTINGS_HTTP_SERVER_CERT_AUTH (last SETTINGS that carried it)."""
        v = None
        for s in self.server_settings:
            if H2_SETTING in s:
                v = s[H2_SETTING]
        return v


def get(client, authority, path):
    sid = client.request(
        [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", path)]
    )
    r = client.response(sid)
    r["stream"] = sid
    return r


def connect(client, authority, body=True):
    sid = client.request([(":method", "CONNECT"), (":authority", authority)], end_stream=False)
    r = client.response(sid, body=body)
    r["stream"] = sid
    return sid, r


def echo_through(client, sid, msg):
    s = client.st(sid)
    client.conn.send_data(sid, msg, end_stream=False)
    client.flush()
    client.pump(lambda: len(s["data"]) >= len(msg) or s["reset"] is not None or client.closed(), 5)
    echoed = bytes(s["data"][: len(msg)])
    del s["data"][: len(msg)]
    client.conn.end_stream(sid)
    client.flush()
    client.pump(lambda: s["ended"] or s["reset"] is not None or client.closed(), 5)
    return {"echo": echoed.decode(errors="replace"), "after_eof": bytes(s["data"]).decode(errors="replace")}


def sync(client, timeout=5):
    """A PING round trip, the positive end of every "nothing more came" check:
    h2 answers frames in the order it reads them, and the proxy's shim writes
    a queued frame of its own whole before h2's next byte, so whatever the
    proxy had queued when it read this PING arrives before the ACK. True when
    the ACK came (False: the connection ended or time ran out)."""
    if client.closed():
        return False
    data = os.urandom(8)
    try:
        client.conn.ping(data)
        client.flush()
    except Exception:  # noqa: BLE001  (the proxy closed first: no ACK can come)
        client.pump(lambda: client.tls.eof, timeout)
        return False
    client.pump(lambda: data in client.ping_acks or client.closed(), timeout)
    return data in client.ping_acks


# --- modes ----------------------------------------------------------------------


def open_client(args, setting_value=1, send_setting=True):
    tls = Tls(args.host, args.port, args.ca, args.sigalgs, args.suite, getattr(args, "tls12", False))
    alpn = tls.conn.get_alpn_proto_negotiated()
    if alpn != b"h2":
        raise SystemExit(f"ALPN {alpn!r}, not h2")
    return tls, H2Client(tls, setting_value, send_setting)


def cmd_flow(args):
    tls, c = open_client(args, send_setting=not args.no_setting)
    if args.tls12:
        # No RFC 9261 exporter here (the project advertises on TLS 1.3 only).
        cipher, hname, hc, fk, formula_ok = tls.conn.get_cipher_name(), None, None, None, None
    else:
        cipher, hname, hc, fk, formula_ok = tls.exporter()
    out = {
        "protocol": "h2",
        "tls_version": tls.conn.get_protocol_version_name(),
        "cipher": cipher,
        "hash": hname,
        "exporter_formula_matches_openssl": formula_ok,
    }
    # The proxy's SETTINGS first.
    c.pump(lambda: bool(c.server_settings) or c.closed(), 5)
    out["server_settings"] = {hex(k): v for s in c.server_settings for k, v in s.items()}
    out["server_cert_auth_setting"] = c.setting()
    if args.get_before:
        out["get_origin_before"] = get(c, args.origin, args.path)
    if args.advertise == "eager":
        c.pump(lambda: len(c.certs) >= args.expect_certs or c.closed(), 5)
    elif args.advertise == "on-connect":
        n_before = len(c.certs)
        _sid, r = connect(c, f"{args.origin}:443")
        out["connect_origin"] = r
        hs = c.headers_seq.get(r["stream"])
        new = c.certs[n_before:]
        out["cert_before_connect_response"] = bool(new) and hs is not None and new[0]["seq"] < hs
        c.pump(lambda: len(c.certs) >= args.expect_certs or c.closed(), 3)
        if args.connect_twice:
            _sid, r2 = connect(c, f"{args.origin}:443")
            out["connect_origin_again"] = r2
    elif args.advertise == "off":
        # The request that makes an on-connect proxy send a certificate
        # before it answers (spec §3): here it must not.
        _sid, r = connect(c, f"{args.origin}:443")
        out["connect_origin"] = r
    out["synced"] = sync(c)
    seen = set()
    out["certificates"] = []
    for cert in c.certs:
        if hname is None:
            info = {"bytes": len(cert["payload"]), "valid": False, "error": "TLS 1.2: no exporter"}
        else:
            info = check_authenticator(cert["payload"], hc, fk, hname, tls.offered, seen, args.ca, args.origin)
        info.update({"flags": cert["flags"], "stream": cert["stream"]})
        out["certificates"].append(info)
    out["get_origin"] = get(c, args.origin, args.path)
    if args.echo_port:
        sid, r = connect(c, f"127.0.0.1:{args.echo_port}", body=False)
        if r["status"] == 200:
            r.update(echo_through(c, sid, b"hello through the h2 tunnel"))
        out["connect_echo"] = r
    if args.other:
        out["get_other"] = get(c, args.other, "/")
    out["synced_end"] = sync(c)
    out["certificates_total"] = len(c.certs)
    out["goaway"] = c.goaway
    out["h2_error"] = c.h2_error
    out["closed"] = c.closed()
    print(json.dumps(out), flush=True)
    if args.hold:
        signal.alarm(0)
        line = sys.stdin.readline()
        signal.alarm(25)
        second = {"phase": "after-hold", "stdin": line.strip()}
        second["get_origin"] = get(c, args.origin, args.path)
        # More authorities to try on the held connection (--hold-get).
        second["hold_gets"] = {a: get(c, a, args.path) for a in args.hold_get}
        second["certificates_total"] = len(c.certs)
        second["goaway"] = c.goaway
        print(json.dumps(second), flush=True)
    tls.close()


def cmd_violation(args):
    v = args.violation
    tls, c = open_client(args, setting_value=2 if v == "setting-2" else 1)
    c.pump(lambda: bool(c.server_settings) or c.closed(), 5)
    out = {"protocol": "h2", "violation": v, "server_cert_auth_setting": c.setting()}
    # Something that looks like an authenticator; the proxy must not care.
    fake = bytes([ea_peer.CERTIFICATE]) + (4).to_bytes(3, "big") + b"\x00\x00\x00\x00"
    # A PING in the same write as the frame: its ACK proves the proxy read
    # the frame and kept the connection; a violation makes the shim answer
    # GOAWAY and stop reading at the frame, so no ACK comes then.
    ping = os.urandom(8)

    def violate(raw):
        c.conn.ping(ping)
        tls.send(raw + c.conn.data_to_send())

    if v == "cert-stream0":
        violate(frame(H2_FRAME, 0, 0, fake))
    elif v == "cert-stream1":
        # An open request stream: a CONNECT tunnel to the echo server.
        sid, r = connect(c, f"127.0.0.1:{args.echo_port}", body=False)
        out["connect_echo_status"] = r["status"]
        violate(frame(H2_FRAME, 0, sid, fake))
    elif v == "setting-withdraw":
        violate(frame(SETTINGS, 0, 0, H2_SETTING.to_bytes(2, "big") + (0).to_bytes(4, "big")))
    # setting-2: the first SETTINGS already carried value 2; only a close can come.
    c.pump(lambda: ping in c.ping_acks or c.closed(), args.wait_ms / 1000)
    out["ping_acked"] = ping in c.ping_acks
    if c.goaway is not None:
        # After GOAWAY the proxy closes the connection.
        c.pump(lambda: c.tls.eof, 3)
    elif not c.closed() and args.echo_port:
        # Not closed (the frame was ignored): is the connection still usable?
        sid, r = connect(c, f"127.0.0.1:{args.echo_port}", body=False)
        if r["status"] == 200:
            r.update(echo_through(c, sid, b"hello through the h2 tunnel"))
        out["after"] = r
    out["goaway"] = c.goaway
    out["eof"] = c.tls.eof
    out["h2_error"] = c.h2_error
    print(json.dumps(out), flush=True)
    tls.close()


def main():
    signal.alarm(25)  # never outlive a stuck test
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["flow", "violation"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--sigalgs", default=ea_peer.DEFAULT_SIGALGS)
    p.add_argument("--suite", default="", help="TLS 1.3 suites (OpenSSL names, ':'-separated)")
    p.add_argument("--advertise", choices=["eager", "on-connect", "off"], default="eager")
    p.add_argument("--origin", default="origin.test")
    p.add_argument("--path", default="/hello")
    p.add_argument("--other", default="other.test")
    p.add_argument("--echo-port", type=int, default=0)
    p.add_argument("--expect-certs", type=int, default=1)
    p.add_argument("--get-before", action="store_true", help="GET the origin before any certificate")
    p.add_argument("--connect-twice", action="store_true", help="on-connect: CONNECT the origin twice")
    p.add_argument("--no-setting", action="store_true", help="do not send the setting")
    p.add_argument("--hold", action="store_true")
    p.add_argument(
        "--hold-get", action="append", default=[], help="--hold: also GET these authorities after"
    )
    p.add_argument("--tls12", action="store_true", help="flow: TLS 1.2 instead of 1.3")
    p.add_argument("--wait-ms", type=int, default=5000, help="violation: how long to wait for the close")
    p.add_argument(
        "--violation", choices=["cert-stream0", "cert-stream1", "setting-2", "setting-withdraw"]
    )
    args = p.parse_args()
    if args.mode == "flow":
        cmd_flow(args)
    else:
        if not args.violation:
            p.error("violation mode needs --violation")
        cmd_violation(args)


if __name__ == "__main__":
    main()

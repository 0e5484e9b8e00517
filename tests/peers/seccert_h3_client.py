#!/usr/bin/env python3
"""An independent HTTP/3 client for secondary certificates
(draft-ietf-httpbis-secondary-server-certs, project codepoints), on aioquic.

aioquic has no TLS exporter API. RFC 8446 §7.1 derives the exporter master
secret from the master secret and the transcript up to the server Finished:
    exporter_master_secret = Derive-Secret(master_secret, "exp master",
                                           ClientHello..server Finished)
aioquic derives "c ap traffic" from exactly that secret and transcript (in
`_client_handle_finished`, before the client's own Finished enters the
transcript), so `KeySchedule.derive_secret` is wrapped: when it derives
"c ap traffic" it also derives "exp master" and keeps it on the key schedule.
The exporter itself (RFC 8446 §7.5) is `seccert_h2_client.tls13_exporter`,
which the HTTP/2 client checks against OpenSSL's own exporter on every run
(`exporter_formula_matches_openssl`) and `selftest` checks here.

Authenticators are validated with `ea_peer.py`'s RFC 9261 code and the chain
with `cryptography`; nothing is shared with Bauta's Rust code.

aioquic 1.2.0 does not report the end of a stream whose last frame is of an
unknown type (a reserved "grease" frame, RFC 9114 §7.2.8, which the proxy's h3
stack sends before FIN), so a QUIC-level FIN on a request stream also ends the
response here.

Wire format: setting 0x5ECC02 = 1 in our SETTINGS (plus H3_DATAGRAM 0x33 = 1);
SERVER_CERTIFICATE is frame 0x5ECC01 on the proxy's control stream, caught by
overriding `H3Connection._handle_control_frame`.

Modes (one JSON object on stdout):
  flow       same flow as the HTTP/2 client (eager / on-connect / off), then
             GET the origin, CONNECT to the echo server, GET an uncovered
             origin; --hold waits for a stdin line and GETs the origin again.
  violation  cert-control (SERVER_CERTIFICATE on our control stream),
             cert-request (on a request stream), setting-2 (setting value 2):
             report the proxy's CONNECTION_CLOSE.
  selftest   check the exporter derivation without a proxy: (a) our RFC 8446
             §7.5 formula on OpenSSL's EXPORTER_SECRET equals OpenSSL's
             exporter (both suites); (b) two aioquic TLS contexts (client and
             server, in memory) derive the same exporter master secret, and an
             authenticator built by the server side validates on the client.
"""

import argparse
import asyncio
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ea_peer  # noqa: E402
import seccert_h2_client as common  # noqa: E402

from aioquic import tls  # noqa: E402
from aioquic.asyncio import connect  # noqa: E402
from aioquic.asyncio.protocol import QuicConnectionProtocol  # noqa: E402
from aioquic.h3.connection import H3_ALPN, H3Connection, encode_frame  # noqa: E402
from aioquic.h3.events import DataReceived, HeadersReceived  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset  # noqa: E402

SUITES = {
    "TLS_AES_128_GCM_SHA256": tls.CipherSuite.AES_128_GCM_SHA256,
    "TLS_AES_256_GCM_SHA384": tls.CipherSuite.AES_256_GCM_SHA384,
    "TLS_CHACHA20_POLY1305_SHA256": tls.CipherSuite.CHACHA20_POLY1305_SHA256,
}

H3_SETTING = 0x5ECC02
H3_FRAME = 0x5ECC01
H3_DATAGRAM = 0x33

# --- exporter master secret out of aioquic --------------------------------------

_derive_secret = tls.KeySchedule.derive_secret


def _derive_secret_keeping_exporter(self, label):
    out = _derive_secret(self, label)
    if label == b"c ap traffic":
        # Same secret (master) and transcript (..server Finished) as "c ap traffic".
        self.exporter_master_secret = _derive_secret(self, b"exp master")
    return out


tls.KeySchedule.derive_secret = _derive_secret_keeping_exporter


def aioquic_exporter(ctx):
    """(suite name, hash name, hc, fk) for a finished aioquic tls.Context."""
    ks = ctx.key_schedule
    ems = getattr(ks, "exporter_master_secret", None)
    if ems is None:
        raise SystemExit("no exporter master secret captured (handshake not complete?)")
    hname = ks.algorithm.name
    hc, fk = common.authenticator_keys(hname, ems)
    return ks.cipher_suite.name, hname, hc, fk


# --- HTTP/3 --------------------------------------------------------------------


class SeccertH3(H3Connection):
    def __init__(self, quic, owner):
        self.owner = owner  # before super(): _init_connection reads our settings
        super().__init__(quic, enable_webtransport=False)

    def _get_local_settings(self):
        s = super()._get_local_settings()
        if self.owner.setting_value is not None:
            s[H3_SETTING] = self.owner.setting_value
        s[H3_DATAGRAM] = 1
        return s

    def _handle_control_frame(self, frame_type, frame_data):
        if frame_type == H3_FRAME:
            self.owner.on_certificate(frame_data, self._settings_received)
            return
        super()._handle_control_frame(frame_type, frame_data)


class Client(QuicConnectionProtocol):
    setting_value = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = SeccertH3(self._quic, self)
        self.certs = []  # {"payload", "after_settings", "seq"}
        self.seq = 0  # HTTP/3 events and certificates, in arrival order
        self.headers_seq = {}
        self.streams = {}
        self.terminated = None
        self.changed = asyncio.Event()

    def st(self, sid):
        return self.streams.setdefault(
            sid, {"headers": None, "data": bytearray(), "ended": False, "reset": None}
        )

    def on_certificate(self, payload, after_settings):
        self.seq += 1
        self.certs.append({"payload": payload, "after_settings": after_settings, "seq": self.seq})
        self.changed.set()

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            self.terminated = {
                "error_code": event.error_code,
                "frame_type": event.frame_type,
                "reason": event.reason_phrase,
            }
        if isinstance(event, StreamReset):
            self.st(event.stream_id)["reset"] = event.error_code
        for ev in self.h3.handle_event(event):
            self.seq += 1
            if isinstance(ev, HeadersReceived):
                s = self.st(ev.stream_id)
                if s["headers"] is None:
                    s["headers"] = {k.decode(): v.decode() for k, v in ev.headers}
                    self.headers_seq[ev.stream_id] = self.seq
                s["ended"] |= ev.stream_ended
            elif isinstance(ev, DataReceived):
                s = self.st(ev.stream_id)
                s["data"].extend(ev.data)
                s["ended"] |= ev.stream_ended
        # aioquic 1.2.0 reports no stream end when the last frame before the
        # FIN is of an unknown (e.g. reserved, RFC 9114 §7.2.8) type, which
        # the proxy's h3 stack sends; the QUIC FIN ends the response.
        if isinstance(event, StreamDataReceived) and event.end_stream and event.stream_id % 4 == 0:
            self.st(event.stream_id)["ended"] = True
        self.changed.set()

    async def until(self, cond, timeout):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            left = deadline - loop.time()
            if left <= 0 or self.terminated is not None:
                return cond()
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                return cond()
        return True

    def request(self, headers, end_stream=True):
        sid = self._quic.get_next_available_stream_id()
        self.st(sid)
        self.h3.send_headers(sid, [(k.encode(), v.encode()) for k, v in headers], end_stream=end_stream)
        self.transmit()
        return sid

    async def response(self, sid, body=True, timeout=5):
        s = self.st(sid)
        if body:
            await self.until(lambda: s["ended"] or s["reset"] is not None, timeout)
        else:
            await self.until(lambda: s["headers"] is not None or s["reset"] is not None, timeout)
        h = s["headers"] or {}
        return {
            "stream": sid,
            "status": int(h[":status"]) if ":status" in h else None,
            "proxy_status": h.get("proxy-status"),
            "headers": {k: v for k, v in h.items() if not k.startswith(":")},
            "body": bytes(s["data"]).decode(errors="replace"),
            "reset": s["reset"],
            "ended": s["ended"],
        }

    async def get(self, authority, path):
        sid = self.request(
            [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", path)]
        )
        return await self.response(sid)

    async def tunnel(self, authority, body=True):
        sid = self.request([(":method", "CONNECT"), (":authority", authority)], end_stream=False)
        return sid, await self.response(sid, body=body)

    async def echo_through(self, sid, msg):
        s = self.st(sid)
        self.h3.send_data(sid, msg, end_stream=False)
        self.transmit()
        await self.until(lambda: len(s["data"]) >= len(msg) or s["reset"] is not None, 5)
        echoed = bytes(s["data"][: len(msg)])
        del s["data"][: len(msg)]
        self.h3.send_data(sid, b"", end_stream=True)
        self.transmit()
        await self.until(lambda: s["ended"] or s["reset"] is not None, 5)
        return {"echo": echoed.decode(errors="replace"), "after_eof": bytes(s["data"]).decode(errors="replace")}


def configuration(args):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    cfg.load_verify_locations(args.ca)
    cfg.server_name = "localhost"
    if args.suite:
        cfg.cipher_suites = [SUITES[n] for n in args.suite.split(":")]
    return cfg


async def settings_seen(c):
    await c.until(lambda: c.h3.received_settings is not None, 5)
    return {hex(k): v for k, v in (c.h3.received_settings or {}).items()}


async def run_flow(args):
    async with connect(args.host, args.port, configuration=configuration(args), create_protocol=Client) as c:
        suite, hname, hc, fk = aioquic_exporter(c._quic.tls)
        offered = set(c._quic.tls._signature_algorithms)
        out = {"protocol": "h3", "cipher": suite, "hash": hname}
        out["server_settings"] = await settings_seen(c)
        out["server_cert_auth_setting"] = (c.h3.received_settings or {}).get(H3_SETTING)
        if args.get_before:
            out["get_origin_before"] = await c.get(args.origin, args.path)
        if args.advertise == "eager":
            await c.until(lambda: len(c.certs) >= args.expect_certs, 5)
        elif args.advertise == "on-connect":
            _sid, r = await c.tunnel(f"{args.origin}:443")
            out["connect_origin"] = r
            # HTTP/3 does not order the control stream against the request stream.
            await c.until(lambda: len(c.certs) >= args.expect_certs, 3)
            if args.connect_twice:
                _sid, r2 = await c.tunnel(f"{args.origin}:443")
                out["connect_origin_again"] = r2
        elif args.advertise == "off":
            # What makes an on-connect proxy send a certificate: not here.
            _sid, r = await c.tunnel(f"{args.origin}:443")
            out["connect_origin"] = r
        if args.advertise != "off":
            # HTTP/3 orders nothing between the proxy's control stream and a
            # response, so "no further certificate" needs a pause here; with
            # advertise=off the SETTINGS without the setting (checked by the
            # caller) already rules every certificate out.
            await c.until(lambda: False, args.settle_ms / 1000)
        seen = set()
        out["certificates"] = []
        for cert in c.certs:
            info = common.check_authenticator(
                cert["payload"], hc, fk, hname, offered, seen, args.ca, args.origin
            )
            info["after_settings"] = cert["after_settings"]
            out["certificates"].append(info)
        out["get_origin"] = await c.get(args.origin, args.path)
        if args.echo_port:
            out["connect_echo"] = await tunnel_and_echo(c, args.echo_port)
        if args.other:
            out["get_other"] = await c.get(args.other, "/")
        out["certificates_total"] = len(c.certs)
        out["terminated"] = c.terminated
        print(json.dumps(out), flush=True)
        if args.hold:
            signal.alarm(0)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            signal.alarm(25)
            second = {"phase": "after-hold", "stdin": line.strip()}
            second["get_origin"] = await c.get(args.origin, args.path)
            second["certificates_total"] = len(c.certs)
            second["terminated"] = c.terminated
            print(json.dumps(second), flush=True)


async def tunnel_and_echo(c, echo_port):
    sid, r = await c.tunnel(f"127.0.0.1:{echo_port}", body=False)
    if r["status"] == 200:
        r.update(await c.echo_through(sid, b"hello through the h3 tunnel"))
    return r


async def run_violation(args):
    v = args.violation
    Client.setting_value = 2 if v == "setting-2" else 1
    async with connect(args.host, args.port, configuration=configuration(args), create_protocol=Client) as c:
        out = {"protocol": "h3", "violation": v}
        out["server_settings"] = await settings_seen(c)
        fake = bytes([ea_peer.CERTIFICATE]) + (4).to_bytes(3, "big") + b"\x00\x00\x00\x00"
        if v == "cert-control":
            # No transmit: the frame leaves in the same QUIC packet as the
            # request below. h3 reads the control stream before it accepts a
            # request stream, so an answer to that request proves the frame
            # was read and ignored; a violation closes the connection first.
            c._quic.send_stream_data(c.h3._local_control_stream_id, encode_frame(H3_FRAME, fake))
            if args.echo_port:
                out["after"] = await tunnel_and_echo(c, args.echo_port)
        elif v == "cert-request":
            sid, r = await c.tunnel(f"127.0.0.1:{args.echo_port}", body=False)
            out["connect_echo_status"] = r["status"]
            c._quic.send_stream_data(sid, encode_frame(H3_FRAME, fake))
            c.transmit()
        if "after" not in out:
            await c.until(lambda: c.terminated is not None, args.wait_ms / 1000)
        if c.terminated is None and args.echo_port and "after" not in out:
            # Not closed (the frame was ignored): is the connection still usable?
            out["after"] = await tunnel_and_echo(c, args.echo_port)
        out["terminated"] = c.terminated
        print(json.dumps(out), flush=True)


# --- selftest ------------------------------------------------------------------


def openssl_formula_check(proxy_cert, proxy_key):
    """OpenSSL client and server in memory (memory BIOs), each TLS 1.3 suite:
    our formula on the client's EXPORTER_SECRET must equal OpenSSL's exporter."""
    from OpenSSL import SSL

    results = {}
    for suite, hname in (("TLS_AES_128_GCM_SHA256", "sha256"), ("TLS_AES_256_GCM_SHA384", "sha384")):
        sctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        sctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        sctx.set_tls13_ciphersuites(suite.encode())
        sctx.use_certificate_chain_file(proxy_cert)
        sctx.use_privatekey_file(proxy_key)
        cctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        cctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        cctx.set_tls13_ciphersuites(suite.encode())
        lines = []
        cctx.set_keylog_callback(lambda _c, line: lines.append(bytes(line)))
        s, c = SSL.Connection(sctx, None), SSL.Connection(cctx, None)
        s.set_accept_state()
        c.set_connect_state()
        done = [False, False]
        for _ in range(20):
            for i, conn in enumerate((c, s)):
                try:
                    conn.do_handshake()
                    done[i] = True
                except SSL.WantReadError:
                    pass
            for a, b in ((c, s), (s, c)):
                try:
                    b.bio_write(a.bio_read(65536))
                except SSL.WantReadError:
                    pass
            if all(done):
                break
        n = {"sha256": 32, "sha384": 48}[hname]
        ems = next(bytes.fromhex(x.split()[2].decode()) for x in lines if x.startswith(b"EXPORTER_SECRET "))
        ours = common.authenticator_keys(hname, ems)
        theirs = tuple(c.export_keying_material(lbl, n, b"") for lbl in (ea_peer.HC_LABEL, ea_peer.FK_LABEL))
        server_side = tuple(s.export_keying_material(lbl, n, b"") for lbl in (ea_peer.HC_LABEL, ea_peer.FK_LABEL))
        results[suite] = ours == theirs == server_side
    return results


def aioquic_pair_check(proxy_cert, proxy_key, origin_chain, origin_key):
    """aioquic client and server contexts in memory, each suite: both ends'
    exporter master secrets agree; an authenticator built on the server side
    (ea_peer.build) validates on the client side (ea_peer.validate)."""
    from aioquic.buffer import Buffer
    from aioquic.tls import CipherSuite, Epoch, load_pem_private_key, load_pem_x509_certificates
    from cryptography.hazmat.primitives import serialization
    from cryptography import x509

    with open(proxy_cert, "rb") as f:
        certs = load_pem_x509_certificates(f.read())
    with open(proxy_key, "rb") as f:
        key = load_pem_private_key(f.read())
    with open(origin_chain, "rb") as f:
        chain = [
            c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(f.read())
        ]
    with open(origin_key, "rb") as f:
        okey = ea_peer.load_private_key(f.read())
    results = {}
    for suite in (CipherSuite.AES_128_GCM_SHA256, CipherSuite.AES_256_GCM_SHA384):
        client = tls.Context(is_client=True, cipher_suites=[suite], verify_mode=0)
        server = tls.Context(is_client=False, cipher_suites=[suite])
        server.certificate, server.certificate_chain, server.certificate_private_key = certs[0], certs[1:], key
        for ctx in (client, server):
            ctx.handshake_extensions = [(0x39, b"")]  # an (empty) transport parameters extension

        def bufs():
            return {e: Buffer(capacity=16384) for e in (Epoch.INITIAL, Epoch.HANDSHAKE, Epoch.ONE_RTT)}

        def drain(b):
            return b"".join(b[e].data for e in (Epoch.INITIAL, Epoch.HANDSHAKE, Epoch.ONE_RTT))

        out = bufs()
        client.handle_message(b"", out)
        data = drain(out)
        for _ in range(6):
            if not data:
                break
            out = bufs()
            server.handle_message(data, out)
            data = drain(out)
            out = bufs()
            client.handle_message(data, out)
            data = drain(out)
        c_suite, c_hash, c_hc, c_fk = aioquic_exporter(client)
        s_suite, s_hash, s_hc, s_fk = aioquic_exporter(server)
        code = ea_peer.scheme_for_key(okey)
        auth = ea_peer.build(s_hc, s_fk, s_hash, chain, okey, code, os.urandom(32))
        try:
            ea_peer.validate(auth, c_hc, c_fk, c_hash, set(client._signature_algorithms), set())
            validated = True
        except ea_peer.Invalid:
            validated = False
        # Negative control: a finished key from another exporter must fail.
        try:
            ea_peer.validate(auth, c_hc, os.urandom(len(c_fk)), c_hash, set(client._signature_algorithms), set())
            wrong_key_rejected = False
        except ea_peer.Invalid:
            wrong_key_rejected = True
        results[c_suite] = {
            "wrong_finished_key_rejected": wrong_key_rejected,
            "same_exporter_master": client.key_schedule.exporter_master_secret
            == server.key_schedule.exporter_master_secret,
            "same_keys": (c_hc, c_fk) == (s_hc, s_fk),
            "authenticator_validates": validated,
        }
    return results


def cmd_selftest(args):
    out = {
        "openssl_formula": openssl_formula_check(args.proxy_cert, args.proxy_key),
        "aioquic_pair": aioquic_pair_check(args.proxy_cert, args.proxy_key, args.origin_chain, args.origin_key),
    }
    print(json.dumps(out), flush=True)


def main():
    signal.alarm(25)  # never outlive a stuck test
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["flow", "violation", "selftest"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ca")
    p.add_argument("--suite", default="", help="TLS 1.3 suites to offer (OpenSSL names, ':'-separated)")
    p.add_argument("--advertise", choices=["eager", "on-connect", "off"], default="eager")
    p.add_argument("--origin", default="origin.test")
    p.add_argument("--path", default="/hello")
    p.add_argument("--other", default="other.test")
    p.add_argument("--echo-port", type=int, default=0)
    p.add_argument("--expect-certs", type=int, default=1)
    p.add_argument("--settle-ms", type=int, default=200)
    p.add_argument("--get-before", action="store_true")
    p.add_argument("--connect-twice", action="store_true")
    p.add_argument("--no-setting", action="store_true")
    p.add_argument("--hold", action="store_true")
    p.add_argument("--wait-ms", type=int, default=5000, help="violation: how long to wait for the close")
    p.add_argument("--violation", choices=["cert-control", "cert-request", "setting-2"])
    p.add_argument("--proxy-cert")
    p.add_argument("--proxy-key")
    p.add_argument("--origin-chain")
    p.add_argument("--origin-key")
    args = p.parse_args()
    if args.no_setting:
        Client.setting_value = None
    if args.mode == "selftest":
        cmd_selftest(args)
    elif args.mode == "flow":
        asyncio.run(asyncio.wait_for(run_flow(args), 22))
    else:
        asyncio.run(asyncio.wait_for(run_violation(args), 22))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""An independent HTTP/3 MASQUE client on aioquic, used by the end-to-end tests.

Modes (prints one JSON object on stdout, exit 0 on success):
  udp     CONNECT-UDP (RFC 9298) over HTTP/3: send N datagrams to the target
          through the proxy, expect them echoed back.
  connect plain CONNECT (RFC 9114 §4.4) to a TCP echo: send --message, read it back.
  raw     send one request with the given headers and report the status.
          With --wait-end, also wait (up to 5 s) until that stream ends (FIN),
          is reset, or the connection closes, and report what arrived in
          order: "events" lists "headers", "data", "fin" and "reset:<code>".

With --no-datagram-setting the client does not send SETTINGS_H3_DATAGRAM, so
the proxy must not send it QUIC DATAGRAM frames (RFC 9297 §2.1.1); in `udp`
mode it then sends DATAGRAM capsules on the request stream and expects the
replies the same way (RFC 9297 §3.5).
"""
import argparse
import asyncio
import json
import ssl
import sys
from urllib.parse import quote

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, DatagramReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


class DatagramH3Connection(H3Connection):
    """aioquic sends SETTINGS_H3_DATAGRAM only together with WebTransport; a
    MASQUE client sends it on its own (RFC 9297 §2.1.1)."""

    def _get_local_settings(self):
        settings = super()._get_local_settings()
        if not NO_DATAGRAM_SETTING:
            settings[0x33] = 1
        return settings


NO_DATAGRAM_SETTING = False


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = DatagramH3Connection(self._quic, enable_webtransport=False)
        self.headers = {}
        self.data = {}
        self.datagrams = asyncio.Queue()
        self.waiters = {}
        self.ended = {}
        self.resets = {}
        self.order = {}
        self.terminated = None

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            self.terminated = event.error_code
            for w in self.waiters.values():
                if not w.done():
                    w.set_result(None)
        if isinstance(event, StreamReset):
            self.resets[event.stream_id] = event.error_code
            self.order.setdefault(event.stream_id, []).append("reset:%d" % event.error_code)
            w = self.waiters.get(event.stream_id)
            if w and not w.done():
                w.set_result(None)
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                self.order.setdefault(ev.stream_id, []).append("headers")
                if ev.stream_ended:
                    self.order[ev.stream_id].append("fin")
                self.headers[ev.stream_id] = dict((k.decode(), v.decode()) for k, v in ev.headers)
                w = self.waiters.get(ev.stream_id)
                if w and not w.done():
                    w.set_result(None)
                if ev.stream_ended:
                    self.ended[ev.stream_id] = True
            elif isinstance(ev, DataReceived):
                if ev.data:
                    self.order.setdefault(ev.stream_id, []).append("data")
                if ev.stream_ended:
                    self.order.setdefault(ev.stream_id, []).append("fin")
                self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                if ev.stream_ended:
                    self.ended[ev.stream_id] = True
            elif isinstance(ev, DatagramReceived):
                self.datagrams.put_nowait((ev.stream_id, ev.data))

    async def request(self, headers, end_stream=False):
        sid = self._quic.get_next_available_stream_id()
        self.waiters[sid] = asyncio.get_running_loop().create_future()
        self.h3.send_headers(sid, headers, end_stream=end_stream)
        self.transmit()
        await asyncio.wait_for(self.waiters[sid], 5)
        return sid, self.headers.get(sid, {})


def varint(v):
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return (0x4000 | v).to_bytes(2, "big")
    if v < 0x40000000:
        return (0x80000000 | v).to_bytes(4, "big")
    return (0xC000000000000000 | v).to_bytes(8, "big")


def read_varint(buf, i):
    """(value, next index), or None if buf[i:] holds no complete varint."""
    if i >= len(buf):
        return None
    n = 1 << (buf[i] >> 6)
    if i + n > len(buf):
        return None
    v = buf[i] & 0x3F
    for b in buf[i + 1:i + n]:
        v = (v << 8) | b
    return v, i + n


def datagram_capsule(context_id, payload):
    value = varint(context_id) + payload
    return b"\x00" + varint(len(value)) + value


def parse_capsules(buf):
    """Complete capsules at the front of buf: ([(type, value)], bytes consumed)."""
    out, i = [], 0
    while True:
        t = read_varint(buf, i)
        if t is None:
            break
        ln = read_varint(buf, t[1])
        if ln is None or ln[1] + ln[0] > len(buf):
            break
        out.append((t[0], bytes(buf[ln[1]:ln[1] + ln[0]])))
        i = ln[1] + ln[0]
    return out, i


async def next_capsule_datagram(c, sid, timeout):
    """The next DATAGRAM capsule's value (context ID included) on stream sid;
    other capsule types are skipped. None if the stream ended first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        buf = c.data.setdefault(sid, bytearray())
        caps, _ = parse_capsules(buf)
        if caps:
            ctype, value = caps[0]
            t = read_varint(buf, 0)
            ln = read_varint(buf, t[1])
            del buf[:ln[1] + ln[0]]
            if ctype == 0:
                return value
            continue
        if sid in c.ended or sid in c.resets or c.terminated is not None:
            return None
        await asyncio.sleep(0.01)
    raise asyncio.TimeoutError


def udp_path(host, port):
    return "/.well-known/masque/udp/%s/%d/" % (quote(host, safe=""), port)


async def run(args):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    if args.max_udp_payload:
        # aioquic sends UDP payloads of at most 1200 bytes by default, too small
        # for a QUIC DATAGRAM frame carrying 1200 bytes of proxied UDP payload.
        cfg.max_datagram_size = args.max_udp_payload
    cfg.load_verify_locations(args.ca)
    cfg.server_name = "localhost"
    async with connect(args.proxy_host, args.proxy_port, configuration=cfg, create_protocol=Client) as c:
        authority = "localhost:%d" % args.proxy_port
        out = {}
        if args.mode == "udp":
            path = args.path or udp_path(args.target_host, args.target_port)
            sid, hdrs = await c.request([
                (b":method", b"CONNECT"), (b":protocol", b"connect-udp"), (b":scheme", b"https"),
                (b":authority", authority.encode()), (b":path", path.encode()),
                (b"capsule-protocol", b"?1"),
            ])
            out["status"] = hdrs.get(":status")
            out["capsule_protocol"] = hdrs.get("capsule-protocol")
            out["proxy_status"] = hdrs.get("proxy-status")
            out["stream_id"] = sid
            if out["status"] != "200":
                print(json.dumps(out)); return 1
            if args.pause_ms:
                await asyncio.sleep(args.pause_ms / 1000)
            echoed = 0
            for i in range(args.count):
                # Exactly --size bytes; the first byte differs from one datagram to the next.
                payload = bytes((i + j) % 256 for j in range(args.size))
                if NO_DATAGRAM_SETTING:
                    # No H3_DATAGRAM setting: capsules both ways (RFC 9297 §3.5).
                    c.h3.send_data(sid, datagram_capsule(0, payload), end_stream=False)
                    c.transmit()
                    try:
                        data = await next_capsule_datagram(c, sid, 5)
                    except asyncio.TimeoutError:
                        break
                    if data is None:
                        out["stream_ended"] = True
                        break
                    got_sid = sid
                else:
                    c.h3.send_datagram(sid, b"\x00" + payload)  # context id 0
                    c.transmit()
                    try:
                        got_sid, data = await asyncio.wait_for(c.datagrams.get(), 5)
                    except asyncio.TimeoutError:
                        out["stream_data"] = bytes(c.data.get(sid, b"")).hex()[:80]
                        break
                if got_sid == sid and data == b"\x00" + payload:
                    echoed += 1
            out["echoed"] = echoed
            # How replies arrived: QUIC datagrams received (for any stream) stay
            # queued only if unexpected; count them so a test can insist on capsules.
            out["quic_datagrams_unread"] = c.datagrams.qsize()
            print(json.dumps(out))
            return 0 if echoed == args.count else 1
        elif args.mode == "connect":
            sid, hdrs = await c.request([
                (b":method", b"CONNECT"), (b":authority", ("%s:%d" % (args.target_host, args.target_port)).encode()),
            ])
            out["status"] = hdrs.get(":status")
            out["proxy_status"] = hdrs.get("proxy-status")
            if out["status"] == "200":
                msg = args.message.encode()
                c.h3.send_data(sid, msg, end_stream=True)
                c.transmit()
                for _ in range(100):
                    if sid in c.ended or len(c.data.get(sid, b"")) >= len(msg):
                        break
                    await asyncio.sleep(0.05)
                out["echo"] = bytes(c.data.get(sid, b"")).decode(errors="replace")
            print(json.dumps(out))
            return 0 if out.get("echo") == args.message else 1
        else:
            headers = [tuple(h.encode().split(b"=", 1)) for h in args.header]
            sid, hdrs = await c.request(headers)
            if args.wait_end:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while not (sid in c.ended or sid in c.resets or c.terminated is not None):
                    if loop.time() >= deadline:
                        out["wait_end_timed_out"] = True
                        break
                    await asyncio.sleep(0.01)
                out["ended"] = sid in c.ended
                out["events"] = c.order.get(sid, [])
            out["status"] = hdrs.get(":status")
            out["proxy_status"] = hdrs.get("proxy-status")
            out["reset"] = c.resets.get(sid)
            out["terminated"] = c.terminated
            print(json.dumps(out)); return 0
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["udp", "connect", "raw"])
    p.add_argument("--proxy-host", default="127.0.0.1")
    p.add_argument("--proxy-port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--target-host", default="127.0.0.1")
    p.add_argument("--target-port", type=int, default=0)
    p.add_argument("--path")
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--size", type=int, default=100, help="udp mode: UDP payload bytes per datagram")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--message", default="hello over h3 connect",
                   help="connect mode: the bytes sent through the tunnel and expected back")
    p.add_argument("--wait-end", action="store_true",
                   help="raw mode: wait until the request stream ends, is reset or the connection closes")
    p.add_argument("--max-udp-payload", type=int,
                   help="largest UDP payload aioquic sends (its default is 1200)")
    p.add_argument("--pause-ms", type=int, default=0,
                   help="udp mode: wait this long after the 200 before sending, so that the "
                        "proxy's QUIC stack can discover a path MTU above 1200 bytes")
    p.add_argument("--no-datagram-setting", action="store_true",
                   help="do not send SETTINGS_H3_DATAGRAM; CONNECT-UDP uses DATAGRAM capsules")
    args = p.parse_args()
    global NO_DATAGRAM_SETTING
    NO_DATAGRAM_SETTING = args.no_datagram_setting
    rc = asyncio.run(asyncio.wait_for(run(args), 20))
    sys.exit(rc or 0)


if __name__ == "__main__":
    main()

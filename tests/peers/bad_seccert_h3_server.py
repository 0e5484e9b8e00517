#!/usr/bin/env python3
"""A minimal HTTP/3 server (aioquic) that sends SERVER_CERTIFICATE frames
(type 0x5ECC01, on its control stream) built by ea_peer.py's own RFC 9261
code: the HTTP/3 counterpart of bad_seccert_server.py, for testing a client
(Bauta's gateway HTTP/3 client) against something that is not Bauta.

aioquic has no TLS exporter API; the exporter master secret is captured by
seccert_h3_client.py (importing it wraps aioquic's key schedule, see there).
The authenticator's sender is this server, so the keys are the server
authenticator's (RFC 9261 §5.1: "EXPORTER-server authenticator ...", which
both ends derive alike from the connection's exporter).

Prints {"port": N} (UDP, 127.0.0.1), serves one QUIC connection (ALPN h3, TLS
from --tls-cert/--tls-key), sends SETTINGS with SETTINGS_HTTP_SERVER_CERT_AUTH
(0x5ECC02) = 1 and H3_DATAGRAM = 1; once the handshake is done and the
client's SETTINGS arrived (--send-on settings, an eager gateway) or once the
first request's HEADERS arrived as well (--send-on request, an on-connect
gateway), sends one valid authenticator for --origin-chain/--origin-key and,
with --broken, a second one whose Finished has its last bit flipped; both
queued at once on the control stream. When the client closes the connection (or
after --wait seconds) prints {"sent": N, "broken": bool, "close_code": CODE
or null, "reason": "..."} (CODE: the error code of the client's
CONNECTION_CLOSE), plus what the client's SETTINGS said and how many requests
it opened.

Requests are never answered: HTTP/3 does not order the control stream with a
request stream, so an answer could reach the client between the two
authenticators, when the valid one has proven the origin and the broken one
is still in flight (they do not fit in one QUIC packet). Unanswered, a
client's request (or its CONNECT sent to make an on-connect gateway prove
the origin) ends only with the connection.
"""

import asyncio
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ea_peer  # noqa: E402
from seccert_h3_client import H3_DATAGRAM, H3_FRAME, H3_SETTING, aioquic_exporter  # noqa: E402

from aioquic.asyncio import serve  # noqa: E402
from aioquic.asyncio.protocol import QuicConnectionProtocol  # noqa: E402
from aioquic.h3.connection import H3_ALPN, H3Connection, encode_frame  # noqa: E402
from aioquic.h3.events import HeadersReceived  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, ProtocolNegotiated  # noqa: E402


class CertH3(H3Connection):
    def _get_local_settings(self):
        s = super()._get_local_settings()
        s[H3_SETTING] = 1
        s[H3_DATAGRAM] = 1
        return s


class State:
    """What the one connection did; shared by the protocol and main()."""

    def __init__(self, args, chain, key):
        self.args, self.chain, self.key = args, chain, key
        self.connections = 0
        self.sent = 0
        self.requests = 0
        self.client_setting = None
        self.close = None
        self.done = asyncio.Event()


def make_protocol(state):
    class Server(QuicConnectionProtocol):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            state.connections += 1
            self.first = state.connections == 1
            self.h3 = None
            self.handshake_done = False

        def maybe_send_certificates(self):
            if state.sent or not self.handshake_done or self.h3 is None:
                return
            if state.args.send_on == "request" and not state.requests:
                return
            settings = self.h3.received_settings
            if settings is None:
                return
            state.client_setting = settings.get(H3_SETTING)
            _suite, hname, hc, fk = aioquic_exporter(self._quic.tls)
            frames = ea_peer.valid_then_broken(
                hc, fk, hname, state.chain, state.key, state.args.broken
            )
            control = self.h3._local_control_stream_id
            for f in frames:
                self._quic.send_stream_data(control, encode_frame(H3_FRAME, f))
            state.sent = len(frames)
            self.transmit()

        def quic_event_received(self, event):
            if not self.first:
                # One connection only (as the HTTP/2 peer's listen(1) + accept).
                if not isinstance(event, ConnectionTerminated):
                    self._quic.close(error_code=0x0100, reason_phrase="one connection only")
                    self.transmit()
                return
            if isinstance(event, ProtocolNegotiated) and self.h3 is None:
                self.h3 = CertH3(self._quic)
            if isinstance(event, HandshakeCompleted):
                self.handshake_done = True
            if isinstance(event, ConnectionTerminated):
                state.close = {
                    "close_code": event.error_code,
                    "frame_type": event.frame_type,
                    "reason": event.reason_phrase,
                }
                state.done.set()
                return
            if self.h3 is not None:
                for ev in self.h3.handle_event(event):
                    if isinstance(ev, HeadersReceived):
                        state.requests += 1  # left unanswered (see the top)
                self.maybe_send_certificates()
            self.transmit()

    return Server


async def run(args):
    chain, key = ea_peer.load_origin(args.origin_chain, args.origin_key)
    state = State(args, chain, key)

    cfg = QuicConfiguration(
        is_client=False,
        alpn_protocols=H3_ALPN,
        max_datagram_frame_size=65536,
        idle_timeout=args.wait + 5,
    )
    cfg.load_cert_chain(args.tls_cert, args.tls_key)
    server = await serve("127.0.0.1", 0, configuration=cfg, create_protocol=make_protocol(state))
    port = server._transport.get_extra_info("sockname")[1]
    print(json.dumps({"port": port}), flush=True)
    try:
        await asyncio.wait_for(state.done.wait(), args.wait)
    except asyncio.TimeoutError:
        pass
    close = state.close or {"close_code": None, "frame_type": None, "reason": None}
    report = {
        "sent": state.sent,
        "broken": args.broken,
        "close_code": close["close_code"],
        "reason": close["reason"],
        "frame_type": close["frame_type"],
        "send_on": args.send_on,
        "client_setting": state.client_setting,
        "requests": state.requests,
        "connections": state.connections,
    }
    print(json.dumps(report), flush=True)
    server.close()


def main():
    signal.alarm(25)  # never outlive a stuck test
    p = ea_peer.bad_peer_args(__doc__.splitlines()[0])
    p.add_argument(
        "--send-on",
        choices=["settings", "request"],
        default="settings",
        help="send the authenticators after the client's SETTINGS, or after its first request too",
    )
    p.add_argument("--wait", type=float, default=20.0, help="seconds to wait for the client's close")
    args = p.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

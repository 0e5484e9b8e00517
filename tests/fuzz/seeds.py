#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/seeds/TARGET/ (committed).

Sources: RFC 9000 Appendix A.1 (varints), RFC 9297 / RFC 9298 (capsules,
datagrams, URI templates), RFC 9113 / RFC 9114 (frames), RFC 7617 (Basic),
the smuggling tests (tests/tests/smuggling*.rs: request fields),
shared/vectors/exported-authenticators.json (RFC 9261 authenticators; the copy
in proxy/src/seccert/testdata), and the README's and deploy/'s config files.
Each seed starts with the parameter bytes its target reads (see
src/entry.rs). Run from anywhere: python3 tests/fuzz/seeds.py
"""
import json, os, re, shutil, struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "seeds")


def varint(v):
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return struct.pack(">H", 0x4000 | v)
    if v < 1 << 30:
        return struct.pack(">I", 0x80000000 | v)
    return struct.pack(">Q", 0xC000000000000000 | v)


def h2(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h3(kind, payload):
    return varint(kind) + varint(len(payload)) + payload


def capsule(kind, value):
    return varint(kind) + varint(len(value)) + value


seeds = {}


def add(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    seeds.setdefault(target, {})[name] = data


# varint: RFC 9000 A.1, plus a parameter tail for the encode half.
for name, hx in [("a1-8byte", "c2197c5eff14e88c"), ("a1-4byte", "9d7f3e7d"),
                 ("a1-2byte", "7bbd"), ("a1-1byte", "25"), ("a1-nonminimal", "4025"),
                 ("max", "ffffffffffffffff09")]:
    add("varint", name, bytes.fromhex(hx))

# capsule: [max u16][splits][stream]
stream = (capsule(0x00, b"\x00hi") + capsule(0x17, b"\xaa\xbb") + capsule(0x01, b"\x01\x02")
          + capsule(0x00, b"\x00" + b"x" * 40) + capsule(0x00, varint(2) + b"ctx2"))
add("capsule", "rfc9297-mixed", struct.pack(">H", 1500) + b"\x00" + stream)
add("capsule", "oversize-chunked", struct.pack(">H", 16) + b"\x03\x01\x05\x00" + stream)
add("capsule", "truncated", struct.pack(">H", 64) + b"\x00" + capsule(0x00, b"\x00abcdef")[:-3])
add("capsule", "nonminimal-len", struct.pack(">H", 64) + b"\x01\x02" + b"\x00\x40\x03\x00hi")

# datagram: RFC 9297 §2.1 / RFC 9298 §5 (stream 4, context 0, "hi").
add("datagram", "stream4-hi", bytes.fromhex("01006869"))
add("datagram", "stream256", bytes.fromhex("4040006869"))
add("datagram", "quarter-too-large", bytes.fromhex("d000000000000000") + b"\x00")
add("datagram", "no-context", bytes.fromhex("01"))

# h2_frame: [flags][max u16][splits][bytes]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
settings = struct.pack(">HI", 3, 100) + struct.pack(">HI", 4, 65535) + struct.pack(">HI", 0x5ECC, 1)
client = (PREFACE + h2(4, 0, 0, settings) + h2(8, 0, 0, struct.pack(">I", 1 << 20))
          + h2(1, 0, 1, b"\x82\x86") + h2(9, 4, 1, b"\x84") + h2(0, 1, 1, b"body")
          + h2(4, 1, 0, b"") + h2(0xCE, 0, 0, b"\x0b\x00\x00\x00") + h2(7, 0, 0, b"\x00" * 8))
add("h2_frame", "client-preface", b"\x01" + struct.pack(">H", 256) + b"\x00" + client)
add("h2_frame", "client-chunked", b"\x01" + struct.pack(">H", 16) + b"\x04\x01\x07\x00\x0b" + client)
add("h2_frame", "server-settings", b"\x00" + struct.pack(">H", 64) + b"\x00" + h2(4, 0, 0, settings))
add("h2_frame", "bad-settings-len", b"\x00" + struct.pack(">H", 64) + b"\x00" + h2(4, 0, 0, b"\x00\x03\x00"))

# h3_frame: [flags][max u16][splits][bytes]
h3settings = varint(1) + varint(0) + varint(7) + varint(0) + varint(0x33) + varint(1) + varint(8) + varint(1)
add("h3_frame", "settings-frame", b"\x05" + struct.pack(">H", 64) + b"\x00" + h3(4, h3settings))
add("h3_frame", "frames-chunked", b"\x00" + struct.pack(">H", 8) + b"\x02\x01\x03"
    + h3(4, h3settings) + h3(0, b"data") + h3(0x21, b"grease") + h3(0x5ECC01, b"\x0b\x00") + h3(7, varint(4)))
add("h3_frame", "settings-payload", b"\x00" + struct.pack(">H", 64) + b"\x00" + h3settings)
add("h3_frame", "cut-short", b"\x00" + struct.pack(">H", 64) + b"\x00" + h3(4, varint(1))[:-0 or None] + b"\x40")

# h3_control: [setting selector][splits][control stream after its type]
ctl = h3(4, h3settings + varint(0x5ECC02) + varint(1)) + h3(7, varint(0)) + h3(0x5ECC01, b"\x0b")
add("h3_control", "settings-then-frames", b"\x00\x00" + ctl)
add("h3_control", "chunked", b"\x00\x03\x01\x02\x05" + ctl)
add("h3_control", "bad-value", b"\x00\x00" + h3(4, varint(0x5ECC02) + varint(7)))
add("h3_control", "not-settings", b"\x00\x00" + h3(0, b"x"))

# h2_flood: [flags][per_s u32][burst u32][splits][step count][step shift][steps u16...][bytes]
def flood(flags, per_s, burst, splits, shift, steps, body):
    return (bytes([flags]) + struct.pack(">II", per_s, burst) + bytes([len(splits)] + splits)
            + bytes([len(steps), shift]) + b"".join(struct.pack(">H", st) for st in steps) + body)


ping = h2(6, 0, 0, b"\x00" * 8)
hello = PREFACE + h2(4, 0, 0, settings) + h2(4, 1, 0, b"") + h2(8, 0, 0, struct.pack(">I", 1 << 20))
request = h2(1, 4, 1, b"\x82\x86") + h2(0, 0, 1, b"body") + h2(0, 1, 1, b"")
empties = (h2(1, 0, 3, b"") + h2(9, 0, 3, b"") + h2(9, 0, 3, b"") + h2(9, 4, 3, b"\x84")
           + h2(0, 0, 3, b"") * 4 + h2(2, 0, 5, b"\x00\x00\x00\x00\x10") * 4)
# The defaults (100/s, burst 1000): a normal connection never trips.
add("h2_flood", "defaults-normal", flood(1, 100, 1000, [], 0, [], hello + ping + request + h2(6, 1, 0, b"\x00" * 8)))
# 1/s, burst 5: a burst of PINGs in one read trips at the sixth.
add("h2_flood", "ping-burst", flood(1, 1, 5, [], 0, [], hello + ping * 12))
# 10/s, burst 2: one PING per read (17 bytes), 2^17 * 763 ns ~ 100 ms apart, then 50 ms.
add("h2_flood", "ping-refill", flood(0, 10, 2, [17], 17, [763, 381], ping * 16))
# SETTINGS without ACK (counted) and with ACK (not), cut mid-frame.
add("h2_flood", "settings-chunked", flood(0, 3, 3, [5, 11, 0, 2], 20, [1, 0, 3],
                                          (h2(4, 0, 0, settings) + h2(4, 1, 0, b"")) * 6))
# Empty DATA, HEADERS, CONTINUATION and PRIORITY frames.
add("h2_flood", "empty-and-priority", flood(1, 1000, 4, [9], 10, [1000], hello + request + empties * 2))
# burst 0: every counted frame is refused.
add("h2_flood", "burst-zero", flood(0, 1000, 0, [], 0, [], ping + h2(8, 0, 0, b"\x00\x00\x10\x00") + ping))
# Not HTTP/2 (HTTP/1.1 on a sniffed listener): nothing is counted.
add("h2_flood", "http1", flood(1, 1, 1, [], 0, [], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" + ping * 3))

# fields: lines of name:value; pseudo-headers first (tests/tests/smuggling_h2_h3.rs,
# and tests/tests/smuggling.rs' framing cases as HTTP/2 and HTTP/3 fields).
def request_fields(*extra, method="POST", scheme="https", authority="origin.test", path="/x"):
    lines = [f":method:{method}"]
    if scheme is not None:
        lines.append(f":scheme:{scheme}")
    if authority is not None:
        lines.append(f":authority:{authority}")
    if path is not None:
        lines.append(f":path:{path}")
    return "\n".join(lines + [f"{n}:{v}" for n, v in extra])


cl4 = ("content-length", "4")
add("fields", "plain", request_fields(cl4, ("te", "trailers")))
add("fields", "forward-http", request_fields(cl4, scheme="http", authority="127.0.0.1:8080"))
for n, v in [("connection", "close"), ("transfer-encoding", "chunked"), ("keep-alive", "timeout=5"),
             ("proxy-connection", "keep-alive"), ("upgrade", "websocket"), ("te", "gzip")]:
    add("fields", f"hop-{n}", request_fields(cl4, (n, v)))
add("fields", "cl-listed", request_fields(("content-length", "4, 4")))
add("fields", "cl-twice", request_fields(cl4, cl4))
add("fields", "cl-differing", request_fields(cl4, ("content-length", "8")))
for name, v in [("signed", "+4"), ("negative", "-1"), ("space", " 4"), ("empty", ""),
                ("zeros", "0004"), ("max19", "9999999999999999999"), ("u64max", "18446744073709551615"),
                ("overflow", "99999999999999999999")]:
    add("fields", f"cl-{name}", request_fields(("content-length", v)))
add("fields", "cl-and-te", request_fields(cl4, ("transfer-encoding", "chunked")))
add("fields", "te-chunked-gzip", request_fields(("transfer-encoding", "chunked, gzip")))
add("fields", "pseudo-after-field", request_fields(cl4, (":path", "/x"), path=None))
add("fields", "pseudo-duplicated", request_fields((":path", "/y"), cl4))
add("fields", "no-scheme", request_fields(method="GET", scheme=None))
add("fields", "connect", request_fields(method="CONNECT", scheme=None, path=None, authority="o.test:443"))
add("fields", "connect-udp", request_fields(("capsule-protocol", "?1"), method="CONNECT",
                                             path="/.well-known/masque/udp/192.0.2.6/443/"))
add("fields", "uppercase", request_fields(("Content-Length", "4"), ("Connection", "close")))

# authority: [flag][text]
for i, a in enumerate(["example.com:443", "[::1]:8080", "127.1:80", "0x7f.1:443", "b\u00fccher.example:443",
                       "2130706433:1", "[::ffff:127.0.0.1]:443", "EXAMPLE.com.", "xn--bcher-kva.example",
                       "[fe80::1%25eth0]:443", "1.2.3.999:80", "a..b:1"]):
    add("authority", f"a{i:02}", b"\x01" + a.encode())

# udp_template: template \n request path (RFC 9298 §2, §3 examples)
for i, t in enumerate([
        "/.well-known/masque/udp/{target_host}/{target_port}/\n/.well-known/masque/udp/192.0.2.6/443/",
        "https://example.org/.well-known/masque/udp/{target_host}/{target_port}/\n/.well-known/masque/udp/2001%3Adb8%3A%3A42/53",
        "https://proxy.example.org:4443/masque?h={target_host}&p={target_port}\n/masque?h=example.com&p=53",
        "https://proxy.example.org:4443/masque{?target_host,target_port}\n/masque?target_host=192.0.2.1&target_port=443",
        "/u/{target_host}/{target_port}\n/u/b%C3%BCcher.example/80"]):
    add("udp_template", f"t{i}", t)

# basic_auth: header values (RFC 7617 §2, §2.1)
add("basic_auth", "aladdin", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
add("basic_auth", "utf8", "basic   dGVzdDoxMjPCow==")
add("basic_auth", "two-values", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\nBasic dGVzdDoxMjPCow==")
add("basic_auth", "bearer", "Bearer abc")

# authenticator: [vector][extension bits][authenticator]
vec_file = os.path.join(ROOT, "proxy", "src", "seccert", "testdata", "exported-authenticators.json")
for i, v in enumerate(json.load(open(vec_file))["vectors"]):
    add("authenticator", f"{v['name']}", bytes([i, 0x0F]) + bytes.fromhex(v["authenticator"]))
    for bad, entry in sorted(v["invalid"].items()):
        if isinstance(entry, dict) and "authenticator" in entry:
            add("authenticator", f"{v['name']}-{bad}", bytes([i, 0x0F]) + bytes.fromhex(entry["authenticator"]))

# hpack: [cap u16][table limit u16][splits] then client frames: RFC 7541
# C.3 (plain) and C.4 (Huffman) requests on streams 1, 3, 5, a padded and
# prioritised HEADERS split over a CONTINUATION, and trailer sections on
# stream 1 (one regular, one naming :path through the dynamic table).
c3 = [bytes.fromhex(h) for h in ["828684410f7777772e6578616d706c652e636f6d", "828684be58086e6f2d6361636865",
                                 "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"]]
c4 = [bytes.fromhex(h) for h in ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf",
                                 "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"]]
for name, blocks in [("rfc7541-c3", c3), ("rfc7541-c4", c4)]:
    frames = b"".join(h2(1, 0x4, 1 + 2 * i, b) for i, b in enumerate(blocks))
    frames += h2(1, 0x5, 1, bytes([0x00, 0x09]) + b"x-trailer" + bytes([1]) + b"1")
    frames += h2(1, 0x5, 3, bytes([0xBE]))
    add("hpack", name, struct.pack(">HH", 16384, 4096) + b"\x03\x07\x40\x02" + frames)
padded = bytes([3]) + bytes([0, 0, 0, 0, 16]) + c3[0][:5] + b"\x00\x00\x00"
add("hpack", "padded-priority-continuation",
    struct.pack(">HH", 16384, 4096) + b"\x00" + h2(1, 0x8 | 0x20, 1, padded) + h2(9, 0x4, 1, c3[0][5:]))
add("hpack", "size-update-and-eviction",
    struct.pack(">HH", 1024, 256) + b"\x01\x05" + h2(1, 0x4, 1, bytes([0x3F, 0xE1, 0x01]) + c3[0])
    + h2(1, 0x4, 3, bytes([0x20]) + c3[1]))

# qpack: field sections (RFC 9204 §4.5) as clients and proxies send them:
# static references, literal names plain and Huffman-coded (RFC 7541
# Appendix B), a repeated :authority, a pseudo-header after a regular field,
# a response with :status and a Huffman-coded proxy-status.
HUFF_PROTOCOL = bytes.fromhex("b95d8749c87a3f")      # ":protocol"
add("qpack", "connect", bytes([0, 0, 0xC0 | 15, 0x50, 3]) + b"a:1")
add("qpack", "connect-udp-huffman-protocol",
    bytes([0, 0, 0xC0 | 15, 0x20 | 0x08 | 0x07, 0x00]) + HUFF_PROTOCOL + bytes([0x01]) + b"x"
    + bytes([0xC0 | 23, 0x50, 3]) + b"a:1" + bytes([0xC0 | 1]))
add("qpack", "authority-twice", bytes([0, 0, 0xC0 | 15, 0x50, 3]) + b"a:1" + bytes([0x50, 3]) + b"b:2")
add("qpack", "pseudo-after-regular", bytes([0, 0, 0xC0 | 15, 0xC0 | 29, 0x27, 3]) + b":authority" + bytes([1]) + b"v")
add("qpack", "response-status-huffman-literal",
    bytes([0, 0, 0xC0 | 25, 0x20 | 0x08 | 0x07, 0x03]) + bytes.fromhex("b9c9fa4f5fed6e93")[:10]
    + bytes([0x85]) + bytes.fromhex("8c99d2c27f"))
add("qpack", "dynamic-reference", bytes([1, 0, 0x80]))

# config: the README's reference block and deploy/'s files, plus a minimal one.
readme = open(os.path.join(ROOT, "README.md")).read()
blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
for i, b in enumerate(blocks):
    if "[[listener]]" in b:
        add("config", f"readme-{i}", b)
    elif "[[rule]]" in b or "[[policy.rule]]" in b:
        add("policy", f"readme-{i}", b)
for f in sorted(os.listdir(os.path.join(ROOT, "deploy", "config"))):
    if f.endswith(".toml"):
        text = open(os.path.join(ROOT, "deploy", "config", f)).read()
        (add("policy", f"deploy-{f[:-5]}", text) if "[[rule]]" in text else add("config", f"deploy-{f[:-5]}", text))
add("config", "minimal", '[[listener]]\nname = "l"\nlisten = "127.0.0.1:8080"\nprotocols = ["http1"]\n')
add("config", "inline-policy", '[[listener]]\nname = "l"\nlisten = "127.0.0.1:8080"\nprotocols = ["http1", "h2"]\n'
    '[connect_udp]\ntemplate = "/u/{target_host}/{target_port}"\n[policy]\ndefault = "allow"\n'
    '[[policy.rule]]\nname = "r"\naction = "deny"\nhosts = ["*.example.com"]\nports = [443, "8000-9000"]\n')
add("policy", "groups", 'default = "report"\n[[rule]]\nname = "a"\naction = "allow"\n'
    'hosts = ["*.example.com", "10.0.0.1"]\ncidrs = ["10.0.0.0/8", "::1/128"]\nclients = ["127.0.0.0/8"]\n'
    'groups = ["g"]\n[[rule]]\nname = "b"\naction = "deny"\nidentities = ["spiffe://corp/*"]\n'
    'protocols = ["connect-udp"]\nports = ["1-1024"]\n[groups]\ng = ["alice", "spiffe://corp/payments/*"]\n')

if os.path.isdir(OUT):
    shutil.rmtree(OUT)
for target, files in sorted(seeds.items()):
    os.makedirs(os.path.join(OUT, target))
    for name, data in files.items():
        with open(os.path.join(OUT, target, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(files)} seeds")

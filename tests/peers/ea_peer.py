#!/usr/bin/env python3
"""An independent RFC 9261 (TLS Exported Authenticators) peer on OpenSSL.

TLS 1.3 and the exporter come from pyOpenSSL (OpenSSL); signatures from
`cryptography`; transcript hashes and HMAC from hashlib/hmac. Nothing is
shared with Bauta's Rust code: this file parses and builds the messages itself
(spontaneous server authenticators: Certificate || CertificateVerify ||
Finished, RFC 9261 §5.2).

Framing on the TLS stream, both directions: 4-byte big-endian length, then the
authenticator; a zero length ends the sequence.

Modes:
  validate  TLS client. Connects to --port, reads authenticators the server
            sends, validates each, prints one JSON line with the results.
  serve     TLS server on 127.0.0.1:0. Prints {"port": N}, accepts one
            connection, sends authenticators for --origin-chain/--origin-key
            (a valid one, the same bytes again, one with a broken Finished, a
            second valid one), waits for the client to close, prints JSON.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from OpenSSL import SSL
from OpenSSL._util import lib as _lib

# RFC 9261 §5.1 exporter labels (server role: the sender is the server).
HC_LABEL = b"EXPORTER-server authenticator handshake context"
FK_LABEL = b"EXPORTER-server authenticator finished key"
assert len(HC_LABEL) == 0x2F and len(FK_LABEL) == 0x2A
# RFC 9261 §5.2.2 signature context string.
SIG_CONTEXT = b"Exported Authenticator"

CERTIFICATE, CERTIFICATE_VERIFY, FINISHED = 11, 15, 20

# TLS 1.3 cipher suite -> authenticator hash (RFC 9261 §5.1).
SUITE_HASH = {
    "TLS_AES_128_GCM_SHA256": "sha256",
    "TLS_AES_256_GCM_SHA384": "sha384",
    "TLS_CHACHA20_POLY1305_SHA256": "sha256",
}

# SignatureScheme code -> (OpenSSL sigalg name, kind, hash). TLS 1.3-valid only.
SCHEMES = {
    0x0403: ("ecdsa_secp256r1_sha256", "ecdsa", hashes.SHA256, "secp256r1"),
    0x0503: ("ecdsa_secp384r1_sha384", "ecdsa", hashes.SHA384, "secp384r1"),
    0x0603: ("ecdsa_secp521r1_sha512", "ecdsa", hashes.SHA512, "secp521r1"),
    0x0804: ("rsa_pss_rsae_sha256", "rsae", hashes.SHA256, None),
    0x0805: ("rsa_pss_rsae_sha384", "rsae", hashes.SHA384, None),
    0x0806: ("rsa_pss_rsae_sha512", "rsae", hashes.SHA512, None),
    0x0807: ("ed25519", "ed25519", None, None),
}
NAME_TO_CODE = {v[0]: k for k, v in SCHEMES.items()}
NAME_TO_CODE.update({"rsa_pkcs1_sha256": 0x0401, "rsa_pkcs1_sha384": 0x0501})

DEFAULT_SIGALGS = (
    "ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384:ed25519:"
    "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:rsa_pkcs1_sha256"
)


class Invalid(Exception):
    """The authenticator cannot be validated; the message says which check."""


# --- encoding helpers -------------------------------------------------------


def u16(n):
    return n.to_bytes(2, "big")


def u24(n):
    if n >= 1 << 24:
        raise ValueError("too long for u24")
    return n.to_bytes(3, "big")


class Buf:
    def __init__(self, data, what):
        self.data, self.off, self.what = data, 0, what

    def left(self):
        return len(self.data) - self.off

    def take(self, n, what):
        if n > self.left():
            raise Invalid(f"{self.what}: {what} truncated")
        out = self.data[self.off : self.off + n]
        self.off += n
        return out

    def int(self, n, what):
        return int.from_bytes(self.take(n, what), "big")

    def vec(self, nlen, what):
        return self.take(self.int(nlen, what + " length"), what)


def handshake(buf, expect):
    """Read one handshake message; return (type, body, whole encoding)."""
    start = buf.off
    typ = buf.int(1, "handshake type")
    ln = buf.int(3, "handshake length")
    if typ != expect:
        raise Invalid(f"expected handshake type {expect}, found {typ}")
    body = buf.take(ln, f"message {typ} body")
    return body, buf.data[start : buf.off]


# --- exporter ---------------------------------------------------------------


def exporter(conn):
    cipher = conn.get_cipher_name()
    if conn.get_protocol_version_name() != "TLSv1.3":
        raise SystemExit("not TLS 1.3")
    hname = SUITE_HASH[cipher]
    length = hashlib.new(hname).digest_size
    hc = conn.export_keying_material(HC_LABEL, length, b"")
    fk = conn.export_keying_material(FK_LABEL, length, b"")
    # TLS 1.3: an empty context and no context are the same (RFC 8446 §7.5).
    same = conn.export_keying_material(HC_LABEL, length, None) == hc
    return cipher, hname, hc, fk, same


# --- signatures -------------------------------------------------------------


def verify_signature(cert, code, signature, content):
    name, kind, h, curve = SCHEMES[code]
    pub = cert.public_key()
    try:
        if kind == "ecdsa":
            if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != curve:
                raise Invalid(f"scheme {name} does not match the end-entity key")
            pub.verify(signature, content, ec.ECDSA(h()))
        elif kind == "rsae":
            if not isinstance(pub, rsa.RSAPublicKey):
                raise Invalid(f"scheme {name} does not match the end-entity key")
            pub.verify(
                signature,
                content,
                padding.PSS(mgf=padding.MGF1(h()), salt_length=h().digest_size),
                h(),
            )
        elif kind == "ed25519":
            if not isinstance(pub, ed25519.Ed25519PublicKey):
                raise Invalid(f"scheme {name} does not match the end-entity key")
            pub.verify(signature, content)
    except InvalidSignature:
        raise Invalid("signature does not verify")


def sign(key, code, content):
    name, kind, h, curve = SCHEMES[code]
    if kind == "ecdsa":
        return key.sign(content, ec.ECDSA(h()))
    if kind == "rsae":
        return key.sign(
            content, padding.PSS(mgf=padding.MGF1(h()), salt_length=h().digest_size), h()
        )
    return key.sign(content)


def der_tlv(data, off):
    """One DER element at `off`: (tag, value, offset after it)."""
    tag, ln = data[off], data[off + 1]
    off += 2
    if ln & 0x80:
        n = ln & 0x7F
        ln = int.from_bytes(data[off : off + n], "big")
        off += n
    return tag, data[off : off + ln], off + ln


def load_private_key(pem):
    """PEM private key. aws-lc-rs (through rcgen) writes Ed25519 keys as
    PKCS#8 v2 (RFC 5958, public key included), which `cryptography` does not
    read; for those, take the 32-byte seed out of the structure."""
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        body = b"".join(l for l in pem.splitlines() if l and not l.startswith(b"-----"))
        der = base64.b64decode(body)
        _, seq, _ = der_tlv(der, 0)
        _, _version, off = der_tlv(seq, 0)
        _, alg, off = der_tlv(seq, off)
        _, oid, _ = der_tlv(alg, 0)
        if oid != bytes.fromhex("2b6570"):  # 1.3.101.112, Ed25519
            raise
        _, wrapped, _ = der_tlv(seq, off)
        _, seed, _ = der_tlv(wrapped, 0)
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def load_origin(chain_path, key_path):
    """An origin's certificate chain (DER, leaf first) and private key, from
    PEM files."""
    with open(chain_path, "rb") as f:
        chain = [
            c.public_bytes(serialization.Encoding.DER)
            for c in x509.load_pem_x509_certificates(f.read())
        ]
    with open(key_path, "rb") as f:
        key = load_private_key(f.read())
    return chain, key


def bad_peer_args(description):
    """The command line of the misbehaving peers (bad_seccert_server.py over
    HTTP/2, bad_seccert_h3_server.py over HTTP/3): their own TLS identity,
    the origin they send authenticators for, and --broken."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--origin-chain", required=True)
    p.add_argument("--origin-key", required=True)
    p.add_argument("--broken", action="store_true", help="a second authenticator, its Finished broken")
    return p


def valid_then_broken(hc, fk, hname, chain, key, broken):
    """One valid authenticator for `chain` (checked by our own validator)
    and, if `broken`, a second one whose Finished MAC has its last bit
    flipped: what a gateway that must be distrusted sends."""
    code = scheme_for_key(key)
    valid = build(hc, fk, hname, chain, key, code, os.urandom(32))
    validate(valid, hc, fk, hname, {code}, set())  # our own check agrees
    out = [valid]
    if broken:
        bad = bytearray(build(hc, fk, hname, chain, key, code, os.urandom(32)))
        bad[-1] ^= 0x01  # the Finished MAC
        out.append(bytes(bad))
    return out


def scheme_for_key(key):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": 0x0403, "secp384r1": 0x0503, "secp521r1": 0x0603}[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return 0x0804
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return 0x0807
    raise SystemExit(f"unsupported key {type(key)}")


# --- RFC 9261 ---------------------------------------------------------------


def validate(data, hc, fk, hname, offered, seen):
    """Return a dict describing a valid authenticator or raise Invalid."""
    length = hashlib.new(hname).digest_size
    buf = Buf(data, "authenticator")
    if len(data) >= 4 and data[0] == FINISHED and int.from_bytes(data[1:4], "big") == len(data) - 4:
        raise Invalid("empty authenticator")
    cert_body, cert_msg = handshake(buf, CERTIFICATE)
    cb = Buf(cert_body, "Certificate")
    context = cb.vec(1, "certificate_request_context")
    lst = Buf(cb.vec(3, "certificate_list"), "certificate_list")
    if cb.left():
        raise Invalid("trailing bytes in Certificate")
    chain = []
    while lst.left():
        der = lst.vec(3, "cert_data")
        if not der:
            raise Invalid("empty cert_data")
        exts = lst.vec(2, "extensions")
        if exts:
            raise Invalid("CertificateEntry extensions were not offered")
        chain.append(der)
    if not chain:
        raise Invalid("empty certificate_list")
    if context in seen:
        raise Invalid("repeated certificate_request_context")
    cv_body, cv_msg = handshake(buf, CERTIFICATE_VERIFY)
    cvb = Buf(cv_body, "CertificateVerify")
    code = cvb.int(2, "algorithm")
    signature = cvb.vec(2, "signature")
    if cvb.left():
        raise Invalid("trailing bytes in CertificateVerify")
    if code not in offered:
        raise Invalid(f"scheme {code:#06x} not offered")
    if code not in SCHEMES:
        raise Invalid(f"scheme {code:#06x} not valid for TLS 1.3 here")
    th1 = hashlib.new(hname, hc + cert_msg).digest()
    content = b"\x20" * 64 + SIG_CONTEXT + b"\x00" + th1
    assert len(content) == 64 + 22 + 1 + length
    ee = x509.load_der_x509_certificate(chain[0])
    verify_signature(ee, code, signature, content)
    fin_start = buf.off
    typ = buf.int(1, "Finished type")
    if typ != FINISHED:
        raise Invalid(f"expected Finished, found {typ}")
    if buf.int(3, "Finished length") != length:
        raise Invalid("Finished length is not the hash length")
    verify_data = buf.take(length, "verify_data")
    th2 = hashlib.new(hname, hc + cert_msg + cv_msg).digest()
    if not hmac.compare_digest(hmac.new(fk, th2, hname).digest(), verify_data):
        raise Invalid("Finished does not match")
    assert buf.data[fin_start] == FINISHED
    if buf.left():
        raise Invalid(f"{buf.left()} trailing bytes")
    seen.add(context)
    names = []
    try:
        san = ee.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        pass
    return {
        "valid": True,
        "scheme": code,
        "context": context.hex(),
        "chain_len": len(chain),
        "names": names,
        "chain_sha256": [hashlib.sha256(d).hexdigest() for d in chain],
    }


def build(hc, fk, hname, chain_ders, key, code, context):
    cert_list = b"".join(u24(len(d)) + d + u16(0) for d in chain_ders)
    body = bytes([len(context)]) + context + u24(len(cert_list)) + cert_list
    cert_msg = bytes([CERTIFICATE]) + u24(len(body)) + body
    th1 = hashlib.new(hname, hc + cert_msg).digest()
    signature = sign(key, code, b"\x20" * 64 + SIG_CONTEXT + b"\x00" + th1)
    cv_body = u16(code) + u16(len(signature)) + signature
    cv_msg = bytes([CERTIFICATE_VERIFY]) + u24(len(cv_body)) + cv_body
    th2 = hashlib.new(hname, hc + cert_msg + cv_msg).digest()
    verify_data = hmac.new(fk, th2, hname).digest()
    return cert_msg + cv_msg + bytes([FINISHED]) + u24(len(verify_data)) + verify_data


# --- TLS plumbing -----------------------------------------------------------


def recv_exact(conn, n):
    out = b""
    while len(out) < n:
        try:
            chunk = conn.recv(n - len(out))
        except SSL.ZeroReturnError:
            chunk = b""
        if not chunk:
            raise EOFError("connection closed")
        out += chunk
    return out


def send_frame(conn, data):
    conn.sendall(len(data).to_bytes(4, "big") + data)


def tls13_context(method, suite):
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_tls13_ciphersuites(suite.encode())
    return ctx


def cmd_validate(args):
    ctx = tls13_context(SSL.TLS_CLIENT_METHOD, args.suite)
    ctx.load_verify_locations(args.ca)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *a: a[-1])
    if _lib.SSL_CTX_set1_sigalgs_list(ctx._context, args.sigalgs.encode()) != 1:
        raise SystemExit("SSL_CTX_set1_sigalgs_list failed")
    offered = {NAME_TO_CODE[n] for n in args.sigalgs.split(":")}
    sock = socket.create_connection(("127.0.0.1", args.port))
    conn = SSL.Connection(ctx, sock)
    conn.set_tlsext_host_name(b"localhost")
    conn.set_connect_state()
    conn.do_handshake()
    cipher, hname, hc, fk, same = exporter(conn)
    seen = set()
    results = []
    while True:
        n = int.from_bytes(recv_exact(conn, 4), "big")
        if n == 0:
            break
        data = recv_exact(conn, n)
        try:
            results.append(validate(data, hc, fk, hname, offered, seen))
        except Invalid as e:
            results.append({"valid": False, "error": str(e)})
    try:
        conn.shutdown()
    except SSL.Error:
        pass
    sock.close()
    print(
        json.dumps(
            {
                "ok": True,
                "cipher": cipher,
                "hash": hname,
                "handshake_context": hc.hex(),
                "finished_key": fk.hex(),
                "empty_context_equals_none": same,
                "results": results,
            }
        ),
        flush=True,
    )


def cmd_serve(args):
    ctx = tls13_context(SSL.TLS_SERVER_METHOD, args.suite)
    ctx.use_certificate_chain_file(args.tls_cert)
    ctx.use_privatekey_file(args.tls_key)
    chain, key = load_origin(args.origin_chain, args.origin_key)
    code = scheme_for_key(key)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    print(json.dumps({"port": lsock.getsockname()[1]}), flush=True)
    sock, _ = lsock.accept()
    conn = SSL.Connection(ctx, sock)
    conn.set_accept_state()
    # Returns once the client Finished is verified (RFC 9261 §9).
    conn.do_handshake()
    cipher, hname, hc, fk, same = exporter(conn)
    first = build(hc, fk, hname, chain, key, code, os.urandom(32))
    broken = bytearray(build(hc, fk, hname, chain, key, code, os.urandom(32)))
    broken[-1] ^= 0x01
    second = build(hc, fk, hname, chain, key, code, os.urandom(32))
    # Our own validator must agree with what we built.
    seen = set()
    validate(first, hc, fk, hname, {code}, seen)
    validate(second, hc, fk, hname, {code}, seen)
    for frame in (first, first, bytes(broken), second):
        send_frame(conn, frame)
    send_frame(conn, b"")
    try:
        while conn.recv(4096):
            pass
    except (SSL.ZeroReturnError, SSL.SysCallError):
        pass
    print(
        json.dumps(
            {
                "ok": True,
                "cipher": cipher,
                "hash": hname,
                "handshake_context": hc.hex(),
                "finished_key": fk.hex(),
                "empty_context_equals_none": same,
                "scheme": code,
                "sent": 4,
            }
        ),
        flush=True,
    )


def main():
    # Never outlive a stuck test.
    signal.alarm(30)
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    v = sub.add_parser("validate")
    v.add_argument("--port", type=int, required=True)
    v.add_argument("--ca", required=True)
    v.add_argument("--suite", default="TLS_AES_128_GCM_SHA256")
    v.add_argument("--sigalgs", default=DEFAULT_SIGALGS)
    s = sub.add_parser("serve")
    s.add_argument("--tls-cert", required=True)
    s.add_argument("--tls-key", required=True)
    s.add_argument("--origin-chain", required=True)
    s.add_argument("--origin-key", required=True)
    s.add_argument("--suite", default="TLS_AES_128_GCM_SHA256")
    args = p.parse_args()
    {"validate": cmd_validate, "serve": cmd_serve}[args.mode](args)


if __name__ == "__main__":
    main()

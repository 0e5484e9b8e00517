//! The fuzz targets' bodies, one function per target, over raw bytes.
//!
//! Shared by the libFuzzer binaries (`tests/fuzz/fuzz_targets/*.rs`, nightly,
//! `cargo fuzz`) and by the stable replay test
//! (`tests/tests/fuzz_regressions.rs`, which includes this file with
//! `#[path]`), so a saved crash or seed runs through exactly the code the
//! fuzzer ran. Dependencies: `bauta`, `bauta-policy`, `bytes`, `http`,
//! `base64` only (all already dependencies of `bauta-tests`).
//!
//! Structure-aware where it helps: [`Cursor`] reads a few leading bytes as
//! parameters (limits, flags, chunk sizes) and the rest as the peer's bytes;
//! stream parsers are fed in the chunks those sizes give and must report the
//! same events as when fed everything at once.
//!
//! Every function must never panic on any input; a panic (or an `assert!`
//! below failing) is a finding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use bauta::core::request::RequestHead;
use bauta::seccert::h3_shim::control::{ControlEvent, ControlParser, MAX_RECORDED_SETTINGS};
use bauta::seccert::messages::{Certificate, CertificateVerify, Handshake, Reader};
use bauta::seccert::{sig_schemes, Exporter, HashAlg, ValidateError, Validator};
use bauta::wire::h2_blocks::BlockAssembler;
use bauta::wire::h2_flood::{FloodGuard, FloodKind, FloodLimits};
use bauta::wire::hpack::NameTable;
use bauta::wire::qpack::{self, Name, Pseudo};
use bauta::wire::server_certificate::{self, Codepoints, ServerCertificate};
use bauta::wire::{capsule, datagram, h2_frame, h3_frame, huffman, target::Target, varint};
use bauta_policy::{Host, Precheck, Protocol, Request};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

/// A target's body.
pub type TargetFn = fn(&[u8]);

/// Every target: its name (the directory under `seeds/` and `regressions/`,
/// and the `fuzz_targets/NAME.rs` binary) and its body.
pub const TARGETS: &[(&str, TargetFn)] = &[
    ("varint", varint),
    ("capsule", capsule),
    ("datagram", datagram),
    ("h2_frame", h2_frame),
    ("h3_frame", h3_frame),
    ("h3_control", h3_control),
    ("h2_flood", h2_flood),
    ("authority", authority),
    ("udp_template", udp_template),
    ("basic_auth", basic_auth),
    ("fields", fields),
    ("qpack", qpack_section),
    ("hpack", hpack_blocks),
    ("authenticator", authenticator),
    ("config", config),
    ("policy", policy),
];

/// Reads parameters from the front of the input; the rest is the payload.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data }
    }

    /// The next byte, or 0 once the input is used up.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(std::array::from_fn(|_| self.u8()))
    }

    /// Chunk sizes: a count byte (0..=7), then that many sizes (0..=255; 0
    /// feeds an empty chunk). No sizes: one chunk, the whole payload.
    pub fn splits(&mut self) -> Vec<usize> {
        let n = self.u8() % 8;
        (0..n).map(|_| usize::from(self.u8())).collect()
    }

    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// `data` cut into pieces of the given sizes, cycling; the last piece takes
/// what is left. Concatenated, the pieces are `data`.
pub fn chunks<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    // Bounded: every full cycle of sizes with a non-zero size consumes
    // bytes; a cycle of zeros is cut short.
    while !rest.is_empty() && out.len() < data.len() + 2 * sizes.len() {
        let n = sizes[i % sizes.len()].min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
        i += 1;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

// === wire: varint, capsule, datagram ===

/// QUIC varints (RFC 9000 §16): decode any bytes; a decoded value re-encodes
/// minimally and decodes back; any u64 either encodes and round-trips or is
/// `TooLarge`.
pub fn varint(data: &[u8]) {
    if let Ok((v, n)) = varint::decode(data) {
        assert_eq!(n, varint::len_from_first_byte(data[0]));
        assert!(v <= varint::MAX);
        let mut out = Vec::new();
        varint::encode(v, &mut out).expect("a decoded value encodes");
        assert_eq!(out.len(), varint::encoded_len(v));
        assert!(out.len() <= n, "minimal encoding is never longer");
        assert_eq!(varint::decode(&out), Ok((v, out.len())));
    }
    let mut c = Cursor::new(data);
    let raw = u64::from_be_bytes(std::array::from_fn(|_| c.u8()));
    let room = usize::from(c.u8() % 10);
    let mut buf = [0u8; 9];
    let mut slice = &mut buf[..room];
    match varint::encode(raw, &mut slice) {
        Ok(()) => {
            let len = varint::encoded_len(raw);
            assert_eq!(varint::decode(&buf[..len]), Ok((raw, len)));
        }
        Err(varint::VarIntError::TooLarge(v)) => assert!(v > varint::MAX),
        Err(varint::VarIntError::BufferFull { needed }) => {
            assert!(needed > room);
            assert_eq!(buf, [0; 9], "nothing written on error");
        }
    }
}

type CapsuleRun = (
    Vec<capsule::Event>,
    Option<capsule::CapsuleError>,
    Result<(), capsule::CapsuleError>,
);

fn run_capsules(max: usize, pieces: &[&[u8]]) -> CapsuleRun {
    let mut dec = capsule::CapsuleDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => {
                    // Dead: every later call says the same.
                    assert_eq!(dec.decode(&mut buf), Err(e));
                    let fin = dec.finish(&buf);
                    return (events, Some(e), fin);
                }
            }
        }
        // Memory bound: besides one pending DATAGRAM (at most `max`
        // payload bytes) only a capsule header stays buffered.
        assert!(
            buf.len()
                <= max.max(capsule::DATAGRAM_CAPSULE_HEADER_MAX)
                    + capsule::DATAGRAM_CAPSULE_HEADER_MAX
        );
    }
    let fin = dec.finish(&buf);
    (events, None, fin)
}

/// The Capsule Protocol decoder (RFC 9297 §3): the same events, error and
/// end-of-stream verdict whatever the chunking; DATAGRAM events re-encode and
/// decode to themselves.
pub fn capsule(data: &[u8]) {
    let mut c = Cursor::new(data);
    let max = usize::from(c.u16() % 2048);
    let sizes = c.splits();
    let body = c.rest();
    let whole = run_capsules(max, &[body]);
    let pieces = chunks(body, &sizes);
    let split = run_capsules(max, &pieces);
    assert_eq!(whole, split, "chunking changed the capsule events");
    for ev in &whole.0 {
        match ev {
            capsule::Event::Datagram {
                context_id,
                payload,
            } => {
                assert!(payload.len() <= max);
                let mut out = BytesMut::new();
                capsule::encode_datagram_capsule(*context_id, payload, &mut out).unwrap();
                let mut dec = capsule::CapsuleDecoder::new(max);
                assert_eq!(dec.decode(&mut out), Ok(Some(ev.clone())));
                assert!(out.is_empty());
            }
            capsule::Event::OversizeDatagram { len } => assert!(*len > max as u64),
            capsule::Event::Skipped { capsule_type, .. } => {
                assert_ne!(*capsule_type, capsule::CapsuleType::DATAGRAM);
                let _ = format!("{capsule_type:?}");
            }
        }
    }
}

/// HTTP/3 Datagrams (RFC 9297 §2.1): decode any bytes; a decoded datagram
/// re-encodes (minimally, so no longer) and decodes to itself.
pub fn datagram(data: &[u8]) {
    let buf = Bytes::copy_from_slice(data);
    let quarter = datagram::decode_quarter_stream_id(&buf);
    match datagram::decode_h3_datagram(&buf) {
        Ok(d) => {
            let (stream_id, _) = quarter.expect("datagram decoded, so its stream id did");
            assert_eq!(stream_id, d.stream_id);
            assert_eq!(d.stream_id % 4, 0);
            let mut out = Vec::new();
            datagram::encode_h3_datagram(d.stream_id, d.context_id, &d.payload, &mut out)
                .expect("a decoded datagram encodes");
            assert!(out.len() <= data.len());
            assert_eq!(datagram::decode_h3_datagram(&Bytes::from(out)), Ok(d));
        }
        Err(datagram::DatagramError::MissingContextId) => assert!(quarter.is_ok()),
        Err(e) => assert_eq!(quarter.err(), Some(e)),
    }
}

// === wire: HTTP/2 and HTTP/3 frames ===

fn scan_h2(preface: bool, pieces: &[&[u8]]) -> (Vec<h2_frame::ScanEvent>, bool) {
    let mut s = if preface {
        h2_frame::FrameScanner::new()
    } else {
        h2_frame::FrameScanner::without_preface()
    };
    let mut events = Vec::new();
    for piece in pieces {
        let mut input = *piece;
        while let Some(ev) = s.next_event(&mut input) {
            events.push(ev);
        }
        assert!(
            input.is_empty() || s.is_stopped(),
            "next_event returned None with input left"
        );
    }
    (events, s.is_stopped())
}

fn decode_h2(max: usize, pieces: &[&[u8]]) -> Vec<h2_frame::Frame> {
    let mut d = h2_frame::FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(f) = d.decode(&mut buf) {
            frames.push(f);
        }
    }
    frames
}

/// The HTTP/2 frame layer (RFC 9113 §4.1): the client-side `FrameScanner`
/// (preface, frames, SETTINGS entries), the `FrameTracker` that finds insert
/// points, the `FrameDecoder`, `append_setting` and SERVER_CERTIFICATE
/// decoding, each the same under any chunking.
pub fn h2_frame(data: &[u8]) {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let max = usize::from(c.u16() % 4096);
    let sizes = c.splits();
    let body = c.rest();
    let pieces = chunks(body, &sizes);

    // Scanner.
    let preface = flags & 1 == 1;
    let whole = scan_h2(preface, &[body]);
    assert_eq!(
        whole,
        scan_h2(preface, &pieces),
        "chunking changed the scan"
    );
    let mut in_settings = false;
    for ev in &whole.0 {
        match ev {
            h2_frame::ScanEvent::Frame(h) => {
                assert!(!in_settings);
                assert!(h.len <= h2_frame::MAX_PAYLOAD_LEN && h.stream_id <= 0x7fff_ffff);
                in_settings = h.kind == h2_frame::FrameType::SETTINGS
                    && h.stream_id == 0
                    && !h.has_flag(h2_frame::FrameHeader::FLAG_ACK)
                    && h.payload_len() % h2_frame::SETTING_LEN == 0;
            }
            h2_frame::ScanEvent::Setting { .. } => assert!(in_settings),
            h2_frame::ScanEvent::SettingsEnd => {
                assert!(in_settings);
                in_settings = false;
            }
            h2_frame::ScanEvent::PrefaceMismatch => assert!(preface),
        }
    }

    // Tracker: chunked and vectored advances agree with one advance.
    let mut one = h2_frame::FrameTracker::new();
    one.advance(body);
    let mut many = h2_frame::FrameTracker::new();
    for p in &pieces {
        many.advance(p);
    }
    let mut vectored = h2_frame::FrameTracker::new();
    vectored.advance_bufs(&pieces, body.len());
    for t in [&many, &vectored] {
        assert_eq!(t.at_boundary(), one.at_boundary());
        assert_eq!(t.can_insert(), one.can_insert());
    }
    let fresh = h2_frame::FrameTracker::new();
    match fresh.insert_point(&pieces) {
        Some(k) => {
            assert!((1..=body.len()).contains(&k));
            let mut t = h2_frame::FrameTracker::new();
            t.advance(&body[..k]);
            assert!(t.can_insert(), "insert_point {k} is no insert point");
        }
        None => assert!(body.is_empty() || !one.can_insert()),
    }

    // Decoder.
    let frames = decode_h2(max, &[body]);
    assert_eq!(
        frames,
        decode_h2(max, &pieces),
        "chunking changed the frames"
    );
    let cp = Codepoints::default();
    for f in &frames {
        match f {
            h2_frame::Frame::Whole { header, payload } => {
                assert_eq!(header.payload_len(), payload.len());
                assert!(payload.len() <= max);
                let mut frame = header.encode().to_vec();
                frame.extend_from_slice(payload);
                assert_eq!(
                    h2_frame::FrameHeader::decode(frame.first_chunk().unwrap()),
                    *header
                );
                let id = h2_frame::SettingId(u16::from(flags));
                if let Some(longer) = h2_frame::append_setting(&frame, id, u32::from(flags)) {
                    let before: Vec<_> = h2_frame::settings(payload).collect();
                    let after: Vec<_> =
                        h2_frame::settings(&longer[h2_frame::HEADER_LEN..]).collect();
                    assert_eq!(after.len(), before.len() + 1);
                    assert_eq!(after.last(), Some(&(id, u32::from(flags))));
                }
                if let Some(adv) = server_certificate::advertise_h2(&cp, &frame) {
                    assert_eq!(adv.len(), frame.len() + h2_frame::SETTING_LEN);
                }
                if ServerCertificate::is_h2(&cp, header) {
                    let r = ServerCertificate::decode_h2(header, payload.clone(), max / 2);
                    assert_eq!(r.is_ok(), header.stream_id == 0 && payload.len() <= max / 2);
                }
            }
            h2_frame::Frame::Skipped(header) => assert!(header.payload_len() > max),
        }
    }
    let mut goaway = Vec::new();
    let code = h2_frame::ErrorCode(u32::from(flags));
    if h2_frame::encode_goaway(u32::from(flags), code, body, &mut goaway).is_some() {
        assert_eq!(goaway.len(), h2_frame::HEADER_LEN + 8 + body.len());
    }
}

fn parse_h3(pieces: &[&[u8]]) -> (Vec<String>, bool) {
    let mut p = h3_frame::FrameParser::new();
    let mut events: Vec<String> = Vec::new();
    let mut payload: Vec<u8> = Vec::new();
    for piece in pieces {
        let _ = p.feed(piece, |ev| {
            if let h3_frame::FrameEvent::Payload(bytes) = ev {
                payload.extend_from_slice(bytes);
            } else {
                if !payload.is_empty() {
                    events.push(format!("payload {payload:02x?}"));
                    payload.clear();
                }
                events.push(format!("{ev:?}"));
            }
            ControlFlow::Continue(())
        });
    }
    if !payload.is_empty() {
        events.push(format!("payload {payload:02x?}"));
    }
    (events, p.at_boundary())
}

fn settings_h3(pieces: &[&[u8]]) -> (Vec<(u64, u64)>, bool) {
    let mut r = h3_frame::SettingsReader::new();
    let mut entries = Vec::new();
    for piece in pieces {
        r.feed(piece, |id, v| entries.push((id.0, v)));
    }
    (entries, r.finish().is_ok())
}

fn decode_h3(max: usize, pieces: &[&[u8]]) -> Vec<h3_frame::Frame> {
    let mut d = h3_frame::FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(f) = d.decode(&mut buf) {
            frames.push(f);
        }
    }
    frames
}

/// The HTTP/3 frame layer (RFC 9114 §7): `FrameParser`, `SettingsReader`
/// against the whole-payload `Settings` iterator, `FrameDecoder`,
/// `VarintReader`, `append_setting` and SERVER_CERTIFICATE decoding, each
/// the same under any chunking.
pub fn h3_frame(data: &[u8]) {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let max = usize::from(c.u16() % 4096);
    let sizes = c.splits();
    let body = c.rest();
    let pieces = chunks(body, &sizes);

    assert_eq!(
        parse_h3(&[body]),
        parse_h3(&pieces),
        "chunking changed the parse"
    );

    // SETTINGS payload: incremental reader vs whole iterator.
    let whole: Vec<_> = h3_frame::Settings::new(body).collect();
    let ok_entries: Vec<(u64, u64)> = whole
        .iter()
        .filter_map(|e| e.ok())
        .map(|(id, v)| (id.0, v))
        .collect();
    let well_formed = whole.iter().all(|e| e.is_ok());
    assert_eq!(settings_h3(&pieces), (ok_entries.clone(), well_formed));

    // Varints across chunks.
    let mut r = h3_frame::VarintReader::default();
    let mut got = Vec::new();
    for piece in &pieces {
        let mut input = *piece;
        while let Some(v) = r.feed(&mut input) {
            got.push(v);
        }
    }
    let mut want = Vec::new();
    let mut rest = body;
    while let Ok((v, n)) = varint::decode(rest) {
        want.push(v);
        rest = &rest[n..];
    }
    assert_eq!(got, want);

    // Decoder.
    let frames = decode_h3(max, &[body]);
    assert_eq!(
        frames,
        decode_h3(max, &pieces),
        "chunking changed the frames"
    );
    for f in &frames {
        match f {
            h3_frame::Frame::Whole { payload, .. } => assert!(payload.len() <= max),
            h3_frame::Frame::Skipped(h) => assert!(h.len > max as u64),
        }
    }

    // append_setting / advertise_h3 on the input as one frame.
    let id = h3_frame::SettingId(u64::from(flags) * 0x1f + 0x21);
    if let Some(out) = h3_frame::append_setting(body, id, u64::from(flags)) {
        let (h, n) = h3_frame::FrameHeader::decode(&out).unwrap();
        assert_eq!(h.ty, h3_frame::FrameType::SETTINGS);
        assert_eq!(h.len, (out.len() - n) as u64);
        let entries: Vec<_> = h3_frame::Settings::new(&out[n..])
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(entries.len(), ok_entries_of_frame(body) + 1);
        assert_eq!(entries.last(), Some(&(id, u64::from(flags))));
    }
    let cp = Codepoints::default();
    let _ = server_certificate::advertise_h3(&cp, body);
    if let Ok((h, n)) = h3_frame::FrameHeader::decode(body) {
        let mut out = Vec::new();
        h.encode(&mut out).unwrap();
        assert_eq!(h3_frame::FrameHeader::decode(&out), Ok((h, out.len())));
        assert!(out.len() <= n);
        if ServerCertificate::is_h3(&cp, h.ty) {
            let payload = Bytes::copy_from_slice(&body[n..]);
            let r = ServerCertificate::decode_h3(payload.clone(), max);
            assert_eq!(r.is_ok(), payload.len() <= max);
        }
    }
    let _ = server_certificate::decode_setting_value(u64::from(flags));
}

/// The number of entries of `frame` (one SETTINGS frame), all well formed.
fn ok_entries_of_frame(frame: &[u8]) -> usize {
    let (_, n) = h3_frame::FrameHeader::decode(frame).unwrap();
    h3_frame::Settings::new(&frame[n..]).count()
}

fn control_events(setting: u64, pieces: &[&[u8]]) -> (Vec<ControlEvent>, bool) {
    let mut p = ControlParser::new(h3_frame::SettingId(setting));
    let mut events = Vec::new();
    for piece in pieces {
        p.feed(piece, &mut |ev| events.push(ev));
    }
    (events, p.is_dead())
}

/// The side parser of a client's HTTP/3 control stream (SETTINGS first, then
/// frame types): the same events under any chunking; at most one
/// `Settings`, first; `Malformed` only as the last event.
pub fn h3_control(data: &[u8]) {
    let mut c = Cursor::new(data);
    let setting = match c.u8() % 4 {
        0 => Codepoints::default().h3_setting,
        n => u64::from(n),
    };
    let sizes = c.splits();
    let body = c.rest();
    let whole = control_events(setting, &[body]);
    assert_eq!(whole, control_events(setting, &chunks(body, &sizes)));
    let (events, dead) = &whole;
    for (i, ev) in events.iter().enumerate() {
        match ev {
            ControlEvent::Settings { entries, .. } => {
                assert_eq!(i, 0);
                assert!(entries.len() <= MAX_RECORDED_SETTINGS);
            }
            ControlEvent::Frame(_) => assert!(matches!(events[0], ControlEvent::Settings { .. })),
            ControlEvent::Malformed => assert!(*dead && i + 1 == events.len()),
        }
    }
}

/// Which frames count toward a flood, restated from `wire::h2_flood`'s
/// documentation: PING and SETTINGS without ACK, PRIORITY, DATA of length 0
/// without END_STREAM, HEADERS or CONTINUATION of length 0 without
/// END_HEADERS.
fn counted_kind(h: &h2_frame::FrameHeader) -> Option<FloodKind> {
    use h2_frame::{FrameHeader as H, FrameType as T};
    let flag = |f: u8| h.flags & f != 0;
    match h.kind {
        T::PING if !flag(H::FLAG_ACK) => Some(FloodKind::Ping),
        T::SETTINGS if !flag(H::FLAG_ACK) => Some(FloodKind::Settings),
        T::PRIORITY => Some(FloodKind::Priority),
        T::DATA if h.len == 0 && !flag(H::FLAG_END_STREAM) => Some(FloodKind::Empty),
        T::HEADERS | T::CONTINUATION if h.len == 0 && !flag(H::FLAG_END_HEADERS) => {
            Some(FloodKind::Empty)
        }
        _ => None,
    }
}

/// The token bucket restated as a virtual scheduler (GCRA), in exact
/// integers: time in ns times `per_s`, so one token is 10^9 and the bucket
/// holds `burst` of them. A frame passes unless its theoretical arrival
/// time is more than `burst - 1` tokens ahead of now; a refused frame
/// changes nothing. Equivalent to a bucket that starts full and refills
/// `per_s` tokens a second up to `burst`, for time that never goes back.
struct Gcra {
    per_s: u128,
    burst: u128,
    tat: Option<u128>,
}

impl Gcra {
    const TOKEN: u128 = 1_000_000_000;

    fn take(&mut self, ns: u128) -> bool {
        if self.burst == 0 {
            return false;
        }
        let now = ns * self.per_s;
        let tat = self.tat.unwrap_or(now).max(now);
        if tat - now > (self.burst - 1) * Self::TOKEN {
            return false;
        }
        self.tat = Some(tat + Self::TOKEN);
        true
    }
}

/// The HTTP/2 control-frame flood guard (`wire::h2_flood`) as the HTTP/2
/// shim drives it: a client's bytes through the `FrameScanner`, cut into
/// chunks, each chunk read at a later (or the same) instant, every frame
/// header through `FloodGuard::check` at its chunk's instant. Parameters:
/// a flags byte (bit 0: the stream starts with the preface), `per_s` and
/// `burst` (u32 each), chunk sizes, then time steps (a count byte 0..=7, a
/// shift byte, that many u16s: step `i` is `u16 << shift` ns, before chunk
/// `i`, cycling). Checks: only the documented kinds count, each with its
/// kind; an uncounted frame is never refused; every counted frame's verdict
/// is the one an independent exact model of the token bucket gives, fed
/// the counted frames alone (so uncounted ones leave the bucket as it is).
pub fn h2_flood(data: &[u8]) {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let limits = FloodLimits {
        per_s: c.u32(),
        burst: c.u32(),
    };
    let sizes = c.splits();
    let steps: Vec<u64> = {
        let n = c.u8() % 8;
        let shift = c.u8() % 40;
        (0..n).map(|_| u64::from(c.u16()) << shift).collect()
    };
    let body = c.rest();

    let mut scanner = if flags & 1 == 1 {
        h2_frame::FrameScanner::new()
    } else {
        h2_frame::FrameScanner::without_preface()
    };
    let mut guard = FloodGuard::new(limits);
    let mut model = Gcra {
        per_s: u128::from(limits.per_s),
        burst: u128::from(limits.burst),
        tat: None,
    };
    let t0 = Instant::now();
    let mut ns: u64 = 0;
    let mut counted = 0usize;
    for (i, mut piece) in chunks(body, &sizes).into_iter().enumerate() {
        if let Some(step) = steps.get(i % steps.len().max(1)) {
            ns = ns.saturating_add(*step);
        }
        let now = t0
            .checked_add(Duration::from_nanos(ns))
            .expect("an Instant holds u64 nanoseconds more");
        while let Some(ev) = scanner.next_event(&mut piece) {
            let h2_frame::ScanEvent::Frame(header) = ev else {
                continue;
            };
            let kind = FloodKind::of(&header);
            assert_eq!(kind, counted_kind(&header), "{header:?}");
            let verdict = guard.check(&header, now);
            match kind {
                None => assert_eq!(verdict, None, "an uncounted frame was refused"),
                Some(k) => {
                    let passed = model.take(u128::from(ns));
                    assert_eq!(
                        verdict,
                        (!passed).then_some(k),
                        "{limits:?} at {ns} ns, counted frame {counted}"
                    );
                    counted += 1;
                }
            }
        }
    }
}

// === text: authorities, hosts, templates, credentials ===

/// `Target::parse_authority` (CONNECT's `host:port`) and `Host::parse`
/// (odd IPv4 spellings, IPv6, IDNA): a parsed value prints in a form that
/// parses back to itself (normalisation is idempotent).
pub fn authority(data: &[u8]) {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    let default_port = (flag & 1 == 1).then_some(443);
    if let Ok(t) = Target::parse_authority(s, default_port) {
        assert_ne!(t.port, 0);
        let again = Target::parse_authority(&t.to_string(), None);
        assert_eq!(again.as_ref(), Ok(&t), "{s:?} -> {t}");
    }
    if let Ok(h) = Host::parse(s) {
        let printed = h.to_string();
        assert_eq!(
            Host::parse(&printed).as_ref(),
            Ok(&h),
            "{s:?} -> {printed:?}"
        );
        if let Host::Name(name) = &h {
            assert!(name.len() <= 253 && !name.is_empty());
            assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(name.is_ascii());
        }
    }
}

/// CONNECT-UDP URI templates (RFC 9298 §2, §3): parse a template, match a
/// request path against it; a matched target expands back to a path that
/// matches to the same target.
pub fn udp_template(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (template, path) = s.split_once('\n').unwrap_or((s, ""));
    let Ok(t) = bauta::config::udp_template::UdpTemplate::parse(template) else {
        return;
    };
    let check = |host: &Host, port: u16| {
        let expanded = t.expand(host, port);
        let raw = t
            .match_path(&expanded)
            .unwrap_or_else(|e| panic!("{expanded:?}: {e}"));
        let back = bauta::config::udp_template::parse_udp_target(&raw.host, &raw.port);
        assert_eq!(back, Ok((host.clone(), port)), "{expanded:?}");
    };
    check(&Host::Name("example.com".into()), 443);
    check(&Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 53);
    if let Ok(raw) = t.match_path(path) {
        if let Ok((host, port)) =
            bauta::config::udp_template::parse_udp_target(&raw.host, &raw.port)
        {
            assert_ne!(port, 0);
            check(&host, port);
        }
    }
}

/// `Proxy-Authorization: Basic` (RFC 7617): header values from the input
/// (split at `\n`); an accepted credential re-encodes to one that decodes the
/// same.
pub fn basic_auth(data: &[u8]) {
    use base64::Engine;
    use http::header::PROXY_AUTHORIZATION;
    let mut headers = HeaderMap::new();
    for value in data.split(|&b| b == b'\n').take(4) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(PROXY_AUTHORIZATION, v);
        }
    }
    let Ok(cred) = bauta::auth::basic::credential(&headers) else {
        return;
    };
    assert_eq!(headers.get_all(PROXY_AUTHORIZATION).iter().count(), 1);
    assert!(!cred.user.is_empty() && !cred.user.contains(':'));
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", cred.user, cred.password));
    let mut again = HeaderMap::new();
    again.insert(
        PROXY_AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
    );
    let back = bauta::auth::basic::credential(&again).expect("re-encoded credential");
    assert_eq!((back.user, back.password), (cred.user, cred.password));
}

// === request fields (HTTP/2, HTTP/3) ===

/// A request as h2 or h3 hands it over, from lines of `name:value` (split
/// at `\n`): a line starting with `:` is a pseudo-header named up to its
/// second `:` (`:method`, `:scheme`, `:authority`, `:path`; a repeated one
/// keeps the last value, as h3 does; others are ignored), every other line
/// a field named up to its first `:`. Field lines that are no valid
/// name or value are dropped (the libraries refuse those themselves). `None`
/// without `:method`, or when the pseudo-headers make no URI.
fn request_of(data: &[u8]) -> Option<RequestHead> {
    let (mut method, mut scheme, mut authority, mut path) = (None, None, None, None);
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n').take(256) {
        if let Some(pseudo) = line.strip_prefix(b":") {
            let at = pseudo
                .iter()
                .position(|&b| b == b':')
                .unwrap_or(pseudo.len());
            let (name, value) = (&pseudo[..at], pseudo.get(at + 1..).unwrap_or_default());
            match name {
                b"method" => method = Some(value),
                b"scheme" => scheme = Some(value),
                b"authority" => authority = Some(value),
                b"path" => path = Some(value),
                _ => {}
            }
            continue;
        }
        let at = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let (name, value) = (&line[..at], line.get(at + 1..).unwrap_or_default());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let method = Method::from_bytes(method?).ok()?;
    let mut uri = Uri::builder();
    if let Some(s) = scheme {
        uri = uri.scheme(s);
    }
    if let Some(a) = authority {
        uri = uri.authority(a);
    }
    if let Some(p) = path {
        uri = uri.path_and_query(p);
    }
    let uri = uri.build().ok()?;
    Some(RequestHead::new(method, uri, Version::HTTP_3, headers))
}

// === HTTP/2 header blocks and the HPACK table ===

/// A client's HTTP/2 frames as the shim reads them: `[cap u16][table limit
/// u16][splits]` then frames. Every HEADERS/CONTINUATION payload is fed to
/// the block assembler in chunks, every complete block to the HPACK name
/// table: never a panic, the table never over its maximum nor the maximum
/// over the limit, never more names than bytes, and the same names whether
/// the frames come whole or in pieces.
pub fn hpack_blocks(data: &[u8]) {
    let mut cur = Cursor::new(data);
    let cap = usize::from(cur.u16());
    let limit = usize::from(cur.u16());
    let splits = cur.splits();
    let bytes = cur.rest();
    let run = |pieces: Vec<&[u8]>| {
        let mut scanner = h2_frame::FrameScanner::new();
        // Start after the preface: frames only.
        let _ = scanner.next_event(&mut &h2_frame::PREFACE[..]);
        let mut blocks = BlockAssembler::new(cap);
        let mut table = NameTable::new(limit);
        let mut seen = Vec::new();
        let mut collecting = false;
        for mut piece in pieces {
            loop {
                if collecting {
                    if let Some(chunk) = scanner.take_payload(&mut piece) {
                        blocks.payload(chunk);
                    }
                    if !scanner.payload_done() {
                        break;
                    }
                    collecting = false;
                    if let Some(block) = blocks.frame_end() {
                        let names = table.block(&block.fragment);
                        if let Ok(n) = &names {
                            assert!(n.len() <= block.fragment.len());
                        }
                        let (size, max) = table.size();
                        assert!(size <= max && max <= limit);
                        seen.push((block.stream_id, block.trailers, names));
                    }
                    continue;
                }
                match scanner.next_event(&mut piece) {
                    Some(h2_frame::ScanEvent::Frame(h)) => collecting = blocks.frame(&h),
                    Some(_) => {}
                    None => break,
                }
            }
        }
        seen
    };
    let whole = run(vec![bytes]);
    assert_eq!(run(chunks(bytes, &splits)), whole);
}

// === QPACK field sections and the Huffman code ===

/// An encoded QPACK field section from a client (the HTTP/3 shim's
/// pseudo-header rules) or from a proxy (`bauta probe`'s response reader):
/// field names read without panicking and judged exactly as RFC 9114 §4.3
/// says (checked against a model here); the Huffman decoder never yields
/// more symbols than 5-bit codes allow; prefixed integers never claim more
/// bytes than there are.
pub fn qpack_section(data: &[u8]) {
    if let Ok(names) = qpack::names(data) {
        // Each field line takes at least one byte after the 2-byte prefix.
        assert!(names.len() <= data.len().saturating_sub(2));
        let any_pseudo = names.iter().any(|n| matches!(n, Name::Pseudo(_)));
        assert_eq!(qpack::check(&names, true).is_err(), any_pseudo);
        let mut seen: Vec<Pseudo> = Vec::new();
        let mut regular = false;
        let mut ok = true;
        for n in &names {
            match n {
                Name::Regular => regular = true,
                Name::Pseudo(p) => {
                    if regular || seen.contains(p) || matches!(p, Pseudo::Status | Pseudo::Unknown)
                    {
                        ok = false;
                        break;
                    }
                    seen.push(*p);
                }
            }
        }
        assert_eq!(qpack::check(&names, false).is_ok(), ok, "{names:?}");
    }
    if let Some(out) = huffman::decode(data) {
        assert!(out.len() * 5 <= data.len() * 8);
    }
    for bits in 1..=8 {
        if let Some((_, used)) = qpack::prefixed_int(data, bits) {
            assert!(used >= 1 && used <= data.len());
        }
    }
    if let Ok((_, fields)) = bauta::gateway::h3::read_response_head(data, 64 * 1024) {
        assert!(fields <= data.len());
    }
}

/// `front::fields`, the HTTP/2 and HTTP/3 field rules the libraries leave
/// to the proxy (request smuggling: framing and hop-by-hop fields), on a
/// request built by [`request_of`]. `content_length` accepts exactly one
/// field of only digits and returns its value (a 20-digit or longer value
/// may be refused); `h3_malformed` passes a request exactly when it has no
/// connection-specific field, `te` only `trailers`, an accepted
/// `content-length`, and `:scheme` unless it is a CONNECT.
pub fn fields(data: &[u8]) {
    use http::header::{CONNECTION, CONTENT_LENGTH, TE, TRANSFER_ENCODING, UPGRADE};
    let Some(head) = request_of(data) else {
        return;
    };
    let h = &head.headers;

    let cls: Vec<&[u8]> = h
        .get_all(CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let cl = bauta::front::fields::content_length(h);
    match cls[..] {
        [] => assert_eq!(cl, Ok(None)),
        [v] if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => {
            let value = v.iter().try_fold(0u64, |n, d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
            match cl {
                Ok(Some(n)) => assert_eq!(Some(n), value, "{v:?}"),
                Ok(None) => panic!("content-length {v:?} ignored"),
                Err(_) => assert!(v.len() > 19, "content-length {v:?} refused"),
            }
        }
        _ => assert!(cl.is_err(), "content-length {cls:?} accepted as {cl:?}"),
    }

    let hop_by_hop = [CONNECTION, TRANSFER_ENCODING, UPGRADE]
        .iter()
        .any(|n| h.contains_key(n))
        || ["keep-alive", "proxy-connection"]
            .iter()
            .any(|n| h.contains_key(*n));
    let te_other = h.get_all(TE).iter().any(|v| v.as_bytes() != b"trailers");
    let needs_scheme = head.method != Method::CONNECT && head.uri.scheme().is_none();
    let well_formed = !hop_by_hop && !te_other && cl.is_ok() && !needs_scheme;
    match bauta::front::fields::h3_malformed(&head) {
        None => assert!(well_formed, "malformed request passed: {head:?}"),
        Some(why) => {
            assert!(
                !well_formed,
                "well-formed request refused ({why}): {head:?}"
            );
            assert!(!why.is_empty());
        }
    }
}

// === RFC 9261 authenticators (client side) ===

/// The exporter values (`handshake_context`, `finished_key`) of the eight
/// connections in `shared/vectors/exported-authenticators.json`, so that a
/// seed made from a vector's authenticator validates in full.
const VECTOR_EXPORTERS: &[(HashAlg, &str, &str)] = &[
    // ed25519-sha256
    (
        HashAlg::Sha256,
        "046fc184a7ecd20855c1009e1c017162ae6ccc60c51e4f24d1158901feb67493",
        "2f71328a0eeb35e471175f621ab2eb7be4fec655a9171ac2a05a68aed1fc0f33",
    ),
    // ecdsa_p256-sha256
    (
        HashAlg::Sha256,
        "046fc184a7ecd20855c1009e1c017162ae6ccc60c51e4f24d1158901feb67493",
        "2f71328a0eeb35e471175f621ab2eb7be4fec655a9171ac2a05a68aed1fc0f33",
    ),
    // ecdsa_p384-sha256
    (
        HashAlg::Sha256,
        "046fc184a7ecd20855c1009e1c017162ae6ccc60c51e4f24d1158901feb67493",
        "2f71328a0eeb35e471175f621ab2eb7be4fec655a9171ac2a05a68aed1fc0f33",
    ),
    // rsa_pss_rsae_2048-sha256
    (
        HashAlg::Sha256,
        "046fc184a7ecd20855c1009e1c017162ae6ccc60c51e4f24d1158901feb67493",
        "2f71328a0eeb35e471175f621ab2eb7be4fec655a9171ac2a05a68aed1fc0f33",
    ),
    // ed25519-sha384
    (
        HashAlg::Sha384,
        "a2b52d30de5a3eecff7702afd3d54b2e984ab86b9ef3fcc4926974ada05052c49302518249fc7e0c1326d53c4bfc31a8",
        "e19f1d3abd21f33f9e704fa316d828ba815f086b61dbbb811dc3bac6d849f5809bed5d860f40918b083045c1c25e5bcf",
    ),
    // ecdsa_p256-sha384
    (
        HashAlg::Sha384,
        "a2b52d30de5a3eecff7702afd3d54b2e984ab86b9ef3fcc4926974ada05052c49302518249fc7e0c1326d53c4bfc31a8",
        "e19f1d3abd21f33f9e704fa316d828ba815f086b61dbbb811dc3bac6d849f5809bed5d860f40918b083045c1c25e5bcf",
    ),
    // ecdsa_p384-sha384
    (
        HashAlg::Sha384,
        "a2b52d30de5a3eecff7702afd3d54b2e984ab86b9ef3fcc4926974ada05052c49302518249fc7e0c1326d53c4bfc31a8",
        "e19f1d3abd21f33f9e704fa316d828ba815f086b61dbbb811dc3bac6d849f5809bed5d860f40918b083045c1c25e5bcf",
    ),
    // rsa_pss_rsae_2048-sha384
    (
        HashAlg::Sha384,
        "a2b52d30de5a3eecff7702afd3d54b2e984ab86b9ef3fcc4926974ada05052c49302518249fc7e0c1326d53c4bfc31a8",
        "e19f1d3abd21f33f9e704fa316d828ba815f086b61dbbb811dc3bac6d849f5809bed5d860f40918b083045c1c25e5bcf",
    ),
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A hostile proxy's SERVER_CERTIFICATE payload through the client's
/// `Validator` (RFC 9261 §5, the digest's 12 steps), and the message
/// decoders on their own. Byte 0 picks a vector's connection, byte 1 the
/// offered extensions (bits 0-6) and a small size limit (bit 7); the rest is the authenticator. A valid one is
/// accepted once: the second time its context is `RepeatedContext`.
pub fn authenticator(data: &[u8]) {
    let mut c = Cursor::new(data);
    let (hash, hc, fk) = VECTOR_EXPORTERS[usize::from(c.u8()) % VECTOR_EXPORTERS.len()];
    let ext_bits = c.u8();
    let bytes = c.rest();
    let exporter = Exporter::new(hash, unhex(hc), unhex(fk)).unwrap();
    let offered: Vec<u16> = [5u16, 18, 34, 52, 0, 43, 0xff01]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| ext_bits & (1 << i) != 0)
        .map(|(_, t)| t)
        .collect();
    let mut v = Validator::new(exporter, sig_schemes::TLS13_SCHEMES)
        .with_offered_extensions(&offered)
        .with_max_size(if ext_bits & 0x80 != 0 {
            usize::from(ext_bits & 0x7f) * 16
        } else {
            bauta::seccert::DEFAULT_MAX_SIZE
        });
    match v.validate(bytes) {
        Ok(ok) => {
            assert!(!ok.chain().is_empty());
            assert!(ok.end_entity().is_some());
            assert!(sig_schemes::is_tls13(ok.scheme()));
            let again = v.validate(bytes);
            assert!(
                matches!(again, Err(ValidateError::RepeatedContext)),
                "{again:?}"
            );
        }
        Err(e) => {
            assert!((1..=12).contains(&e.step()), "{e:?}");
            let _ = e.to_string();
        }
    }

    // The message layer alone: a sequence of handshake messages.
    let mut r = Reader::new(bytes);
    while let Ok(msg) = Handshake::decode(&mut r) {
        let _ = Certificate::decode(msg.body);
        let _ = CertificateVerify::decode(msg.body);
    }
}

// === configuration and policy files ===

/// A directory that does not exist: relative paths in a fuzzed config
/// resolve under it and fail to open instead of reading real files.
const NO_DIR: &str = "/nonexistent/bauta-fuzz";

/// Whether a fuzzed config could name a file whose read blocks or never
/// ends (`/dev/zero`, a FIFO, `/proc/kmsg`): absolute paths into such trees,
/// or `\u` escapes that could spell them. Such inputs are skipped; the
/// configuration is trusted input, its file reads are not what is fuzzed.
fn may_name_special_file(text: &str) -> bool {
    [
        "/dev", "/proc", "/sys", "/run", "/tmp", "/var", "\\u", "\\U",
    ]
    .iter()
    .any(|p| text.contains(p))
}

/// `bauta::Config::parse`: a whole configuration file (TOML, every section).
/// An accepted one has a summary; an error names the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if may_name_special_file(text) {
        return;
    }
    match bauta::Config::parse(text, "fuzz.toml", Path::new(NO_DIR)) {
        Ok(cfg) => {
            assert!(!cfg.listeners.is_empty());
            let _ = cfg.summary();
        }
        Err(e) => assert!(e.to_string().contains("fuzz.toml"), "{e}"),
    }
}

/// A policy file (`[policy] file = "…"`: `default`, `[[rule]]`,
/// `[groups]`), loaded the way the proxy loads it; then every request built
/// from the file's own strings (hosts, ports, addresses, identities) gets the
/// same decision from the indexed `evaluate` as from `evaluate_linear`, and a
/// `precheck` denial holds whatever the addresses.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::env::temp_dir().join(format!("bauta-fuzz-policy-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write the policy file");
    let main = format!(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nprotocols = [\"http1\"]\n\n[policy]\nfile = {:?}\n",
        path.display().to_string()
    );
    let parsed = bauta::Config::parse(&main, "fuzz.toml", Path::new(NO_DIR));
    let _ = std::fs::remove_file(&path);
    let policy = match parsed {
        Ok(cfg) => cfg.policy,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };

    // Candidate values: every quoted string of the file, read as what it
    // might be.
    let strings: Vec<&str> = text.split('"').skip(1).step_by(2).take(32).collect();
    let mut hosts = vec![
        Host::Name("example.org".into()),
        Host::Ip(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))),
    ];
    let mut addrs: Vec<IpAddr> = vec![
        IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let mut ports = vec![443u16, 80];
    let mut identities = vec![None, Some("x".to_string())];
    for s in &strings {
        let bare = s.trim_start_matches("*.");
        if let Ok(h) = Host::parse(bare) {
            hosts.push(h);
        }
        if let Ok(h) = Host::parse(&format!("a.{bare}")) {
            hosts.push(h);
        }
        if let Some(ip) = s.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()) {
            addrs.push(ip);
        }
        if let Some(p) = s.split('-').next().and_then(|p| p.parse::<u16>().ok()) {
            ports.push(p);
        }
        identities.push(Some(s.to_string()));
        identities.push(Some(format!("{}x", s.trim_end_matches('*'))));
    }
    for w in text.split(|c: char| !c.is_ascii_digit()) {
        if let Ok(p) = w.parse::<u16>() {
            ports.push(p);
        }
    }
    // A spread of combinations, not the whole product: a few hundred
    // decisions per input keep the target fast.
    let dims = [hosts.len(), ports.len(), identities.len(), addrs.len()];
    for i in 0..256usize {
        let pick = |d: usize, prime: usize| (i.wrapping_mul(prime) + i / 7) % dims[d];
        let protocol = Protocol::ALL[i % Protocol::ALL.len()];
        let host = &hosts[pick(0, 7)];
        let port = ports[pick(1, 13)];
        let identity = identities[pick(2, 5)].as_deref();
        let a = pick(3, 11);
        let resolved: &[IpAddr] = match i % 3 {
            0 => &[],
            1 => std::slice::from_ref(&addrs[a]),
            _ => &addrs[a..],
        };
        let client = (i % 5 != 0).then(|| addrs[(a + 1) % addrs.len()]);
        let req = Request {
            protocol,
            host,
            port,
            addrs: resolved,
            client,
            identity,
        };
        let d = policy.evaluate(&req);
        assert_eq!(d, policy.evaluate_linear(&req), "{req:?}");
        // An IP literal is its own address: resolved addresses are not
        // combined with one.
        let literal = matches!(host, Host::Ip(_));
        if literal && !resolved.is_empty() {
            continue;
        }
        if let Precheck::Deny(pre) = policy.precheck(&Request { addrs: &[], ..req }) {
            assert!(
                !d.verdict.allows(),
                "precheck denied ({pre:?}) but {d:?} for {req:?}"
            );
        }
    }
}

//! CONNECT-UDP through the probe (RFC 9298): the request's path from the URI
//! template, the datagrams sent — a sequence number and a send time, padded
//! to `--size`, for a UDP echo service; or, to port 53, a DNS query whose ID
//! is the sequence number, so that any public resolver answers — the
//! answers matched and timed ([`Pings`], time passed in), and what is
//! reported. How datagrams travel (QUIC DATAGRAM frames or
//! capsules) is the HTTP/3 and HTTP/2 clients' business, behind
//! [`Datagrams`].

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::wire::target::Target;

/// The template proxies SHOULD serve (RFC 9298 §3), as a path; Bauta's
/// default too.
pub const DEFAULT_TEMPLATE: &str = "/.well-known/masque/udp/{target_host}/{target_port}/";
/// A datagram holds a sequence number and a send time.
pub const MIN_SIZE: usize = 8;
/// Fits in one QUIC DATAGRAM frame on any path QUIC runs on (1200 bytes of
/// UDP payload once path MTU discovery has found room for it).
pub const MAX_SIZE: usize = 1200;

/// What the datagrams carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A sequence number and a send time, padded; the target echoes it
    /// (RFC 862).
    Echo,
    /// A DNS query (`.` NS, recursion desired) whose ID is the sequence
    /// number; the target is a DNS server and its answer is the echo.
    Dns,
}

impl Payload {
    /// `--payload`, or by the target's port: DNS for 53, else echo.
    pub fn choose(given: Option<&str>, port: u16) -> Result<Payload, String> {
        match given {
            Some("echo") => Ok(Payload::Echo),
            Some("dns") => Ok(Payload::Dns),
            Some(other) => Err(format!("--payload {other}: must be echo or dns")),
            None if port == 53 => Ok(Payload::Dns),
            None => Ok(Payload::Echo),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Payload::Echo => "echo",
            Payload::Dns => "dns",
        }
    }
}

/// A DNS query for the root's NS records with this ID (RFC 1035 §4.1).
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(DNS_QUERY_LEN);
    q.extend_from_slice(&id.to_be_bytes());
    // RD; one question; no other records.
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    // QNAME "." (the root), QTYPE NS, QCLASS IN.
    q.extend_from_slice(&[0, 0, 2, 0, 1]);
    q
}

const DNS_QUERY_LEN: usize = 17;

/// What `--connect-udp` asks for.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// The UDP target, as given.
    pub target: String,
    /// The request's `:path`: the template expanded for the target.
    pub path: String,
    pub count: u32,
    pub size: usize,
    pub interval: Duration,
    pub payload: Payload,
}

impl UdpOptions {
    /// Check the target and expand `template` (a path with `{target_host}`
    /// and `{target_port}`) for it.
    pub fn new(
        target: &str,
        template: &str,
        count: u32,
        size: usize,
        interval: Duration,
        payload: Option<&str>,
    ) -> Result<UdpOptions, String> {
        let t = Target::parse_authority(target, None)
            .map_err(|e| format!("--connect-udp {target}: {e}"))?;
        let payload = Payload::choose(payload, t.port)?;
        if payload == Payload::Dns && count > u32::from(u16::MAX) + 1 {
            return Err("--count: at most 65536 DNS queries (one per ID)".into());
        }
        let size = match payload {
            Payload::Dns => DNS_QUERY_LEN,
            Payload::Echo => size,
        };
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return Err(format!("--size must be {MIN_SIZE}..={MAX_SIZE} bytes"));
        }
        if count == 0 {
            return Err("--count must be at least 1".into());
        }
        Ok(UdpOptions {
            target: target.to_string(),
            path: expand(template, &t)?,
            count,
            size,
            interval,
            payload,
        })
    }
}

/// RFC 6570 level-1 expansion of a path template with `{target_host}` and
/// `{target_port}` (RFC 9298 §2): what is not unreserved is percent-encoded,
/// so an IPv6 address goes in without brackets and with `%3A` for `:`.
fn expand(template: &str, target: &Target) -> Result<String, String> {
    if !template.starts_with('/') {
        return Err("--udp-template must be a path starting with '/'".into());
    }
    let host = match &target.host {
        bauta_policy::Host::Name(n) => n.clone(),
        bauta_policy::Host::Ip(ip) => ip.to_string(),
    };
    let mut out = String::new();
    let mut rest = template;
    let (mut saw_host, mut saw_port) = (false, false);
    while let Some(open) = rest.find('{') {
        out.push_str(rest.get(..open).unwrap_or_default());
        let after = rest.get(open..).unwrap_or_default();
        let close = after.find('}').ok_or("--udp-template: '{' without '}'")?;
        match after.get(..=close).unwrap_or_default() {
            "{target_host}" if !saw_host => {
                saw_host = true;
                percent_encode(&host, &mut out);
            }
            "{target_port}" if !saw_port => {
                saw_port = true;
                out.push_str(&target.port.to_string());
            }
            other => {
                return Err(format!(
                    "--udp-template: {other} is not supported (the probe expands \
                     {{target_host}} and {{target_port}}, once each)"
                ))
            }
        }
        rest = after.get(close + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    if !(saw_host && saw_port) {
        return Err("--udp-template needs {target_host} and {target_port}".into());
    }
    if out.contains('}') {
        return Err("--udp-template: '}' without '{'".into());
    }
    Ok(out)
}

/// RFC 3986 unreserved characters stay, every other byte is `%XX`.
fn percent_encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// How the datagrams of one CONNECT-UDP tunnel travel.
pub(super) trait Datagrams {
    /// Send one UDP payload (context 0).
    async fn send(&mut self, payload: &[u8]) -> Result<(), String>;
    /// The next context-0 UDP payload from the proxy; `None` once the
    /// tunnel has ended. Cancel-safe: it is raced against the send timer.
    async fn recv(&mut self) -> Result<Option<Bytes>, String>;
}

/// What the CONNECT-UDP exchange found.
#[derive(Debug, Default, Serialize)]
pub struct UdpReport {
    pub target: String,
    pub path: String,
    /// How our datagrams went: `quic-datagrams` or `capsules`; absent when
    /// the proxy refused the tunnel.
    pub carriage: Option<&'static str>,
    /// `echo` or `dns`: what the datagrams carry.
    pub payload: &'static str,
    pub size: usize,
    pub sent: u32,
    /// Distinct datagrams echoed back.
    pub received: u32,
    /// Datagrams back that were not an echo of ours, or came twice.
    pub unexpected: u32,
    pub loss_percent: Option<f64>,
    pub rtt_ms: Option<RttReport>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct RttReport {
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl UdpReport {
    /// The report of a tunnel not (yet) open.
    pub(super) fn new(opts: &UdpOptions) -> UdpReport {
        UdpReport {
            target: opts.target.clone(),
            path: opts.path.clone(),
            payload: opts.payload.as_str(),
            size: opts.size,
            ..UdpReport::default()
        }
    }

    /// Datagrams were sent and none came back.
    pub fn all_lost(&self) -> bool {
        self.sent > 0 && self.received == 0
    }

    pub(super) fn print_text(&self) {
        let Some(carriage) = self.carriage else {
            return;
        };
        println!(
            "  datagrams ({} bytes, {}, {carriage}): {} sent, {} received, {} loss",
            self.size,
            if self.payload == "dns" {
                "DNS queries"
            } else {
                "echo"
            },
            self.sent,
            self.received,
            self.loss_percent
                .map_or_else(|| "-".to_string(), |l| format!("{l:.1}%"))
        );
        if self.unexpected > 0 {
            println!("  {} unexpected datagram(s) back", self.unexpected);
        }
        if let Some(r) = &self.rtt_ms {
            println!(
                "  rtt ms: min {:.3} p50 {:.3} p99 {:.3} max {:.3}",
                r.min, r.p50, r.p99, r.max
            );
        }
    }
}

/// Send `opts.count` datagrams `opts.interval` apart while reading echoes;
/// after the last send, wait up to `linger` for stragglers (less if every
/// echo is in). Fills `report`.
pub(super) async fn exchange(
    opts: &UdpOptions,
    linger: Duration,
    carriage: &'static str,
    datagrams: &mut impl Datagrams,
    report: &mut UdpReport,
) -> Result<(), String> {
    use tokio::time::{sleep_until, Instant};
    report.carriage = Some(carriage);
    let start = Instant::now();
    let mut pings = Pings::new(opts.size, opts.payload);
    let mut next_send = start;
    let mut stop: Option<Instant> = None;
    let now_us = || start.elapsed().as_micros() as u64;
    loop {
        if pings.sent() == opts.count && pings.received() == opts.count {
            break;
        }
        tokio::select! {
            _ = sleep_until(next_send), if pings.sent() < opts.count => {
                let payload = pings.next_payload(now_us());
                datagrams.send(&payload).await?;
                next_send += opts.interval;
                if pings.sent() == opts.count {
                    stop = Some(Instant::now() + linger);
                }
            }
            r = datagrams.recv() => match r? {
                Some(payload) => pings.handle_echo(now_us(), &payload),
                None => break,
            },
            _ = sleep_until(stop.unwrap_or(start)), if stop.is_some() => break,
        }
    }
    pings.fill(report);
    Ok(())
}

/// The datagrams of one exchange, sans I/O: times are microseconds since
/// the exchange started, passed in.
struct Pings {
    size: usize,
    payload: Payload,
    /// Per sequence number: its send time (as carried, wrapping u32) and
    /// whether its echo came back.
    stamps: Vec<(u32, bool)>,
    rtts_us: Vec<u64>,
    unexpected: u32,
}

impl Pings {
    fn new(size: usize, payload: Payload) -> Pings {
        Pings {
            size,
            payload,
            stamps: Vec::new(),
            rtts_us: Vec::new(),
            unexpected: 0,
        }
    }

    fn sent(&self) -> u32 {
        u32::try_from(self.stamps.len()).unwrap_or(u32::MAX)
    }

    fn received(&self) -> u32 {
        u32::try_from(self.rtts_us.len()).unwrap_or(u32::MAX)
    }

    /// The next datagram: sequence number (u32), send time in µs (u32,
    /// wrapping), then filler up to `size` bytes.
    fn next_payload(&mut self, now_us: u64) -> Vec<u8> {
        let seq = self.sent();
        let stamp = now_us as u32; // wraps after 71 minutes; RTTs are shorter
        self.stamps.push((stamp, false));
        if self.payload == Payload::Dns {
            // `UdpOptions::new` keeps the count within the 16-bit IDs.
            return dns_query(seq as u16);
        }
        let mut p = Vec::with_capacity(self.size);
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&stamp.to_be_bytes());
        p.resize(self.size.max(MIN_SIZE), 0x5a);
        p
    }

    /// A datagram back: an echo of ours is the same length, names a sequence
    /// number we sent with the time we sent it, and comes once.
    fn handle_echo(&mut self, now_us: u64, payload: &[u8]) {
        if self.payload == Payload::Dns {
            return self.handle_dns_answer(now_us, payload);
        }
        let seq = payload.first_chunk::<4>().map(|b| u32::from_be_bytes(*b));
        let stamp = payload
            .get(4..)
            .and_then(|r| r.first_chunk::<4>())
            .map(|b| u32::from_be_bytes(*b));
        let slot = match (seq, stamp) {
            (Some(seq), Some(stamp)) if payload.len() == self.size => usize::try_from(seq)
                .ok()
                .filter(|&i| self.stamps.get(i).is_some_and(|(at, _)| *at == stamp)),
            _ => None,
        };
        self.settle(now_us, slot);
    }

    /// A DNS answer: a response (QR set, a whole header) whose ID is a
    /// query we sent.
    fn handle_dns_answer(&mut self, now_us: u64, payload: &[u8]) {
        let id = payload.first_chunk::<2>().map(|b| u16::from_be_bytes(*b));
        let is_response = payload.len() >= 12 && payload.get(2).is_some_and(|f| f & 0x80 != 0);
        self.settle(now_us, id.filter(|_| is_response).map(usize::from));
    }

    /// Datagram `slot` came back now: timed the first time, else unexpected.
    fn settle(&mut self, now_us: u64, slot: Option<usize>) {
        match slot
            .and_then(|i| self.stamps.get_mut(i))
            .filter(|(_, back)| !*back)
        {
            Some(slot) => {
                slot.1 = true;
                let rtt = (now_us as u32).wrapping_sub(slot.0);
                self.rtts_us.push(u64::from(rtt));
            }
            None => self.unexpected = self.unexpected.saturating_add(1),
        }
    }

    fn fill(&self, report: &mut UdpReport) {
        report.sent = self.sent();
        report.received = self.received();
        report.unexpected = self.unexpected;
        report.loss_percent = (report.sent > 0).then(|| {
            let lost = f64::from(report.sent - report.received.min(report.sent));
            (lost * 1000.0 / f64::from(report.sent)).round() / 10.0
        });
        let mut rtts = self.rtts_us.clone();
        rtts.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        // Nearest rank: the smallest value with at least q of them at or
        // below it.
        let rank = |q: f64| {
            let i = (q * rtts.len() as f64).ceil() as usize;
            rtts.get(i.saturating_sub(1)).copied().map(ms)
        };
        report.rtt_ms = match (rtts.first(), rtts.last(), rank(0.5), rank(0.99)) {
            (Some(&min), Some(&max), Some(p50), Some(p99)) => Some(RttReport {
                min: ms(min),
                p50,
                p99,
                max: ms(max),
            }),
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Target {
        Target::parse_authority(s, None).unwrap()
    }

    #[test]
    fn default_template_expansion() {
        let t = DEFAULT_TEMPLATE;
        assert_eq!(
            expand(t, &target("dns.example:53")).unwrap(),
            "/.well-known/masque/udp/dns.example/53/"
        );
        assert_eq!(
            expand(t, &target("192.0.2.6:443")).unwrap(),
            "/.well-known/masque/udp/192.0.2.6/443/"
        );
        // RFC 9298 §3: colons percent-encoded, no brackets.
        assert_eq!(
            expand(t, &target("[2001:db8::42]:443")).unwrap(),
            "/.well-known/masque/udp/2001%3Adb8%3A%3A42/443/"
        );
    }

    #[test]
    fn other_templates() {
        let t = target("a.example:53");
        assert_eq!(
            expand("/masque?h={target_host}&p={target_port}", &t).unwrap(),
            "/masque?h=a.example&p=53"
        );
        for bad in [
            "masque/{target_host}/{target_port}",
            "/{target_host}",
            "/{target_host}/{target_host}/{target_port}",
            "/{+target_host}/{target_port}",
            "/{target_host}/{target_port",
            "/{target_host}/{target_port}}",
            "/m{?target_host,target_port}",
        ] {
            assert!(expand(bad, &t).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_check_size_count_and_target() {
        let ok = |size, count| {
            UdpOptions::new(
                "a.example:7",
                DEFAULT_TEMPLATE,
                count,
                size,
                Duration::ZERO,
                None,
            )
        };
        assert!(ok(8, 1).is_ok());
        assert!(ok(1200, 1).is_ok());
        assert!(ok(7, 1).is_err());
        assert!(ok(1201, 1).is_err());
        assert!(ok(64, 0).is_err());
        assert!(
            UdpOptions::new("a.example", DEFAULT_TEMPLATE, 1, 64, Duration::ZERO, None).is_err(),
            "a port is required"
        );
    }

    #[test]
    fn echoes_are_matched_once_and_timed() {
        let mut p = Pings::new(16, Payload::Echo);
        let a = p.next_payload(1_000);
        let b = p.next_payload(2_000);
        let c = p.next_payload(3_000);
        assert_eq!(a.len(), 16);
        assert_eq!(&b[..8], [0, 0, 0, 1, 0, 0, 0x07, 0xd0]);
        p.handle_echo(2_500, &b);
        p.handle_echo(2_600, &b); // twice
        p.handle_echo(4_000, &a);
        p.handle_echo(4_000, &c[..12]); // cut short
        let mut forged = c.clone();
        forged[7] ^= 1; // not the time we sent it at
        p.handle_echo(4_000, &forged);
        let mut r = UdpReport::default();
        p.fill(&mut r);
        assert_eq!((r.sent, r.received, r.unexpected), (3, 2, 3));
        assert_eq!(r.loss_percent, Some(33.3));
        assert_eq!(
            r.rtt_ms,
            Some(RttReport {
                min: 0.5,
                p50: 0.5,
                p99: 3.0,
                max: 3.0
            })
        );
        assert!(!r.all_lost());
    }

    #[test]
    fn dns_answers_are_matched_by_id() {
        let mut p = Pings::new(DNS_QUERY_LEN, Payload::Dns);
        let q0 = p.next_payload(1_000);
        let q1 = p.next_payload(2_000);
        assert_eq!(q0.len(), DNS_QUERY_LEN);
        assert_eq!(&q1[..4], [0, 1, 0x01, 0x00], "ID 1, RD");
        let mut answer = q1.clone();
        answer[2] |= 0x80; // QR: a response
        answer.extend_from_slice(&[0; 40]);
        p.handle_echo(3_000, &answer);
        p.handle_echo(3_100, &answer); // twice
        p.handle_echo(3_200, &q0); // our own query reflected: not an answer
        let mut r = UdpReport::default();
        p.fill(&mut r);
        assert_eq!((r.sent, r.received, r.unexpected), (2, 1, 2));
        assert_eq!(r.rtt_ms.map(|r| r.min), Some(1.0));
        assert_eq!(Payload::choose(None, 53), Ok(Payload::Dns));
        assert_eq!(Payload::choose(None, 7), Ok(Payload::Echo));
        assert_eq!(Payload::choose(Some("echo"), 53), Ok(Payload::Echo));
        assert!(Payload::choose(Some("x"), 53).is_err());
    }

    #[test]
    fn nothing_back_is_all_lost() {
        let mut p = Pings::new(8, Payload::Echo);
        p.next_payload(0);
        let mut r = UdpReport::default();
        p.fill(&mut r);
        assert_eq!(r.loss_percent, Some(100.0));
        assert_eq!(r.rtt_ms, None);
        assert!(r.all_lost());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut p = Pings::new(8, Payload::Echo);
        let sent: Vec<Vec<u8>> = (0..100).map(|_| p.next_payload(0)).collect();
        for (i, d) in sent.iter().enumerate() {
            p.handle_echo((i as u64 + 1) * 1000, d);
        }
        let mut r = UdpReport::default();
        p.fill(&mut r);
        let rtt = r.rtt_ms.unwrap();
        assert_eq!(
            (rtt.min, rtt.p50, rtt.p99, rtt.max),
            (1.0, 50.0, 99.0, 100.0)
        );
        assert_eq!(r.loss_percent, Some(0.0));
    }
}

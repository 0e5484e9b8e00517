//! DNS rebinding: a local test DNS server that answers an allowed address
//! first and 127.0.0.1 on the second query must never get a connection to
//! 127.0.0.1 through, whatever the timing.
//!
//! No address off this machine is ever dialled: 127.0.0.2 (loopback on
//! Linux) stands in for "the allowed public address". The policy admits
//! `rebind*.test` only at 127.0.0.2 (`cidrs = ["127.0.0.2/32"]`); nothing
//! names 127.0.0.1 or ::1, so a lookup that returns them is refused. The fake DNS
//! (see [`FakeDns`]) answers with TTL 0 and alternates per query:
//!
//! * `rebind.test`: A 127.0.0.2, then 127.0.0.1, then 127.0.0.2, …
//! * `rebind-slow.test`: the same, the 127.0.0.1 answers 150 ms late;
//! * `rebind6.test`: A 127.0.0.2 always, AAAA no data / ::1 alternately.
//!
//! The same port is bound on 127.0.0.2 (echo, origin, UDP echo: the allowed
//! targets) and on 127.0.0.1 and ::1 (the victims, counting). Through every
//! front the test crate has a Rust client for (HTTP/1.1 CONNECT and
//! forwarding, HTTP/2 CONNECT and forwarding over TLS, CONNECT-UDP over
//! HTTP/1.1, HTTP/2 and HTTP/3, forwarding over HTTP/3), first one front at a
//! time, then every front at once, under a default deny (a refusal is 403
//! `http_request_denied`: no rule matches 127.0.0.1) and a default allow (a
//! refusal is 502 `destination_ip_prohibited`: the SSRF guard):
//!
//! * the victims never see a connection or a datagram;
//! * every request either reaches 127.0.0.2 (its servers count exactly the
//!   requests that succeeded) or is refused with the variant's status and
//!   Proxy-Status, and both happen for every front and name.
//!
//! The proxy must resolve once, decide on those addresses and dial only
//! them: a second lookup between check and connect fails this test at once
//! (the victim on 127.0.0.1 counts the connection).
//!
//! HTTP/3 plain CONNECT is not here: the Rust h3 client always sends
//! `:scheme`/`:path` on CONNECT (only the Python aioquic peer can send a
//! plain one); the TCP dial behind it is the same as HTTP/1.1's and
//! HTTP/2's.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bauta_tests::masque::{
    h1_connect_udp_request, h1_upgrade, h2_connect_udp, h2_extended_client, h3_datagram,
    h3_read_to_end, has_ipv6_loopback, metric_opt, start_masque_proxy, stream_id, udp_path,
    H3Client, MasqueProxy, StreamEnd, UdpEcho,
};
use bauta_tests::*;
use bytes::Bytes;
use http::{Method, Request};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Sequential passes: every front, every name, two requests each (so each
/// front sees both answers of an alternating name).
const SEQUENTIAL_ROUNDS: usize = 5;
/// Concurrent rounds: every front at once, each going through every name.
const CONCURRENT_ROUNDS: usize = 40;
const LIMIT: Duration = Duration::from_secs(60);

const ALLOWED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const VICTIM6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Front {
    H1Connect,
    H1Forward,
    H2Connect,
    H2Forward,
    H1ConnectUdp,
    H2ConnectUdp,
    H3ConnectUdp,
    H3Forward,
}

const FRONTS: [Front; 8] = [
    Front::H1Connect,
    Front::H1Forward,
    Front::H2Connect,
    Front::H2Forward,
    Front::H1ConnectUdp,
    Front::H2ConnectUdp,
    Front::H3ConnectUdp,
    Front::H3Forward,
];

impl Front {
    fn is_connect(self) -> bool {
        matches!(self, Front::H1Connect | Front::H2Connect)
    }

    fn is_forward(self) -> bool {
        matches!(self, Front::H1Forward | Front::H2Forward | Front::H3Forward)
    }

    fn is_udp(self) -> bool {
        matches!(
            self,
            Front::H1ConnectUdp | Front::H2ConnectUdp | Front::H3ConnectUdp
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered by the server on 127.0.0.2.
    Reached,
    /// Refused with the variant's status and Proxy-Status.
    Refused,
}

/// `(front, name)` → (reached, refused).
type Tally = BTreeMap<(Front, &'static str), (usize, usize)>;

/// The servers on one address, all on the lab's shared ports.
struct Servers {
    echo: EchoServer,
    origin: Origin,
    udp: UdpEcho,
}

/// One proxy, its fake DNS, the allowed targets and the victims.
struct Lab {
    /// "default deny" or "default allow".
    variant: &'static str,
    /// What a refusal looks like under this variant.
    refusal: (u16, &'static str),
    names: Vec<&'static str>,
    dns: FakeDns,
    proxy: MasqueProxy,
    allowed: Servers,
    /// `(address, servers)`: 127.0.0.1, and ::1 when the machine has it.
    victims: Vec<(IpAddr, Servers)>,
    tcp_port: u16,
    http_port: u16,
    udp_port: u16,
    h2: H2Sender,
    h3_udp: tokio::sync::Mutex<H3Client>,
    h3_forward: tokio::sync::Mutex<H3Client>,
    /// HTTP/3 datagrams sent again because no echo came back within 1 s.
    h3_resends: AtomicUsize,
    tally: Mutex<Tally>,
}

/// TCP listeners on the same port at every address of `ips`.
async fn same_port_tcp(ips: &[IpAddr]) -> Vec<TcpListener> {
    for _ in 0..100 {
        let first = TcpListener::bind((ips[0], 0)).await.unwrap_or_else(|e| {
            panic!("bind {}:0 (all of 127/8 is loopback on Linux): {e}", ips[0])
        });
        let port = first.local_addr().expect("local addr").port();
        let mut all = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(l) => all.push(l),
                Err(_) => break,
            }
        }
        if all.len() == ips.len() {
            return all;
        }
    }
    panic!("no TCP port free on all of {ips:?}");
}

/// UDP sockets on the same port at every address of `ips`.
async fn same_port_udp(ips: &[IpAddr]) -> Vec<UdpSocket> {
    for _ in 0..100 {
        let first = UdpSocket::bind((ips[0], 0))
            .await
            .unwrap_or_else(|e| panic!("bind UDP {}:0: {e}", ips[0]));
        let port = first.local_addr().expect("local addr").port();
        let mut all = vec![first];
        for ip in &ips[1..] {
            match UdpSocket::bind((*ip, port)).await {
                Ok(s) => all.push(s),
                Err(_) => break,
            }
        }
        if all.len() == ips.len() {
            return all;
        }
    }
    panic!("no UDP port free on all of {ips:?}");
}

impl Lab {
    async fn start(certs: &Certs, default: &'static str) -> Lab {
        let ipv6 = has_ipv6_loopback();
        let mut ips = vec![ALLOWED, VICTIM];
        if ipv6 {
            ips.push(VICTIM6);
        }
        let mut echoes = same_port_tcp(&ips).await.into_iter();
        let mut origins = same_port_tcp(&ips).await.into_iter();
        let mut udps = same_port_udp(&ips).await.into_iter();
        let mut servers = ips.iter().map(|ip| {
            let s = Servers {
                echo: EchoServer::from_listener(echoes.next().expect("echo listener")),
                origin: Origin::from_listener(origins.next().expect("origin listener")),
                udp: UdpEcho::from_socket(udps.next().expect("UDP socket")),
            };
            (*ip, s)
        });
        let (_, allowed) = servers.next().expect("allowed servers");
        let victims: Vec<(IpAddr, Servers)> = servers.collect();
        let (tcp_port, http_port, udp_port) = (
            allowed.echo.port(),
            allowed.origin.port(),
            allowed.udp.port(),
        );

        let mut names = vec!["rebind.test", "rebind-slow.test"];
        if ipv6 {
            names.push("rebind6.test");
        }
        let refusal = match default {
            "deny" => (403, "http_request_denied"),
            _ => (502, "destination_ip_prohibited"),
        };
        let dns = FakeDns::start().await;
        let extra = format!(
            r#"
[policy]
default = "{default}"

[[policy.rule]]
name = "rebind-allowed"
action = "allow"
hosts = ["rebind.test", "rebind-slow.test", "rebind6.test"]
cidrs = ["127.0.0.2/32"]

[dns]
servers = ["{dns}"]

[limits]
dns_timeout_ms = 3000
connect_timeout_ms = 3000
"#,
            dns = dns.addr
        );
        let proxy = start_masque_proxy(certs, &extra).await;
        let h2 = h2_extended_client(proxy.secure, certs).await;
        let h3_udp = H3Client::connect(proxy.secure, certs).await;
        let h3_forward = H3Client::connect(proxy.secure, certs).await;
        Lab {
            variant: if default == "deny" {
                "default deny"
            } else {
                "default allow"
            },
            refusal,
            names,
            dns,
            proxy,
            allowed,
            victims,
            tcp_port,
            http_port,
            udp_port,
            h2,
            h3_udp: tokio::sync::Mutex::new(h3_udp),
            h3_forward: tokio::sync::Mutex::new(h3_forward),
            h3_resends: AtomicUsize::new(0),
            tally: Mutex::new(BTreeMap::new()),
        }
    }

    /// A refusal: the variant's status and Proxy-Status token, nothing else.
    fn refused(&self, status: u16, proxy_status: Option<&str>, what: &str) -> Outcome {
        let (want, token) = self.refusal;
        assert_eq!(
            status, want,
            "{what}: neither a success nor the refusal ({want} {token}); Proxy-Status {proxy_status:?}"
        );
        let ps = proxy_status.unwrap_or_else(|| panic!("{what}: no Proxy-Status on the {status}"));
        assert_proxy_status(ps, token, what);
        Outcome::Refused
    }

    /// One request through `front` to `name`; panics on anything but a
    /// success that reached 127.0.0.2 or the expected refusal.
    async fn attempt(&self, front: Front, name: &'static str, n: usize) -> Outcome {
        let what = format!("{}: {front:?} to {name} #{n}", self.variant);
        let payload = what.as_bytes();
        let tcp = format!("{name}:{}", self.tcp_port);
        let url = format!("http://{name}:{}/r{n}", self.http_port);
        let origin_says = format!("origin: GET /r{n}\n");
        let udp = udp_path(name, self.udp_port);
        let outcome = match front {
            Front::H1Connect => {
                let (head, mut s) = connect_h1(self.proxy.plain, &tcp).await;
                if head.status == 200 {
                    assert_echo(&mut s, payload).await;
                    Outcome::Reached
                } else {
                    self.refused(head.status, head.proxy_status(), &what)
                }
            }
            Front::H1Forward => {
                let io = TcpStream::connect(self.proxy.plain)
                    .await
                    .expect("connect to the proxy");
                let mut client = h1_client(io).await;
                let (parts, body) = h1_send(&mut client, get_absolute(&url)).await;
                self.forward_outcome(&parts, &body, &origin_says, &what)
            }
            Front::H2Connect => {
                let (parts, tunnel) = h2_connect(&self.h2, &tcp).await;
                match tunnel {
                    Some(mut t) => {
                        t.assert_echo(payload).await;
                        Outcome::Reached
                    }
                    None => self.refused(
                        parts.status.as_u16(),
                        proxy_status_of(&parts.headers).as_deref(),
                        &what,
                    ),
                }
            }
            Front::H2Forward => {
                let req = Request::builder()
                    .method(Method::GET)
                    .uri(&url)
                    .body(())
                    .expect("request");
                let (parts, body) = h2_request(&self.h2, req, None).await;
                self.forward_outcome(&parts, &body, &origin_says, &what)
            }
            Front::H1ConnectUdp => {
                let req = h1_connect_udp_request(&self.proxy.plain.to_string(), &udp, &[]);
                let (head, mut caps) = h1_upgrade(self.proxy.plain, &req).await;
                if head.status == 101 {
                    caps.assert_echo(payload).await;
                    Outcome::Reached
                } else {
                    self.refused(head.status, head.proxy_status(), &what)
                }
            }
            Front::H2ConnectUdp => {
                let authority = self.proxy.secure_authority();
                let (parts, caps) = h2_connect_udp(&self.h2, &authority, &udp).await;
                match caps {
                    Some(mut c) => {
                        c.assert_echo(payload).await;
                        let _ = c.send.send_data(Bytes::new(), true);
                        Outcome::Reached
                    }
                    None => self.refused(
                        parts.status.as_u16(),
                        proxy_status_of(&parts.headers).as_deref(),
                        &what,
                    ),
                }
            }
            Front::H3ConnectUdp => {
                let mut h3 = self.h3_udp.lock().await;
                let (resp, mut stream) = h3
                    .extended_connect(&udp, &[("capsule-protocol", "?1")])
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e:?}"));
                if resp.status() == 200 {
                    self.h3_datagram_echo(&h3, stream_id(&stream), payload, &what)
                        .await;
                    let _ = stream.finish().await;
                    Outcome::Reached
                } else {
                    self.refused(
                        resp.status().as_u16(),
                        proxy_status_of(resp.headers()).as_deref(),
                        &what,
                    )
                }
            }
            Front::H3Forward => {
                let mut h3 = self.h3_forward.lock().await;
                let req = Request::builder()
                    .method(Method::GET)
                    .uri(&url)
                    .body(())
                    .expect("request");
                let mut stream = h3
                    .send
                    .send_request(req)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: send: {e:?}"));
                stream
                    .finish()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: finish: {e:?}"));
                let resp = stream
                    .recv_response()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: response: {e:?}"));
                let (body, end) = h3_read_to_end(&mut stream).await;
                assert!(
                    matches!(end, StreamEnd::Finished),
                    "{what}: the response stream ends cleanly: {end:?}"
                );
                let (parts, ()) = resp.into_parts();
                self.forward_outcome(&parts, &body, &origin_says, &what)
            }
        };
        {
            let mut tally = self.tally.lock().expect("tally lock");
            let entry = tally.entry((front, name)).or_default();
            match outcome {
                Outcome::Reached => entry.0 += 1,
                Outcome::Refused => entry.1 += 1,
            }
        }
        self.assert_victims_untouched(&format!("after {front:?} to {name} #{n} ({outcome:?})"));
        outcome
    }

    /// What the servers on 127.0.0.2 have seen: (CONNECT connections,
    /// forwarded requests, datagrams).
    fn allowed_seen(&self) -> (usize, usize, usize) {
        (
            self.allowed.echo.accepted(),
            self.allowed.origin.seen().len(),
            self.allowed.udp.received(),
        )
    }

    /// Send a context-0 datagram on `sid` until its echo comes back (HTTP/3
    /// datagrams are unreliable: one may be lost, see `h3_resends`); echoes
    /// of earlier resends are skipped.
    async fn h3_datagram_echo(&self, h3: &H3Client, sid: u64, payload: &[u8], what: &str) {
        let sent = h3_datagram(sid, 0, payload);
        for attempt in 1..=5 {
            if attempt > 1 {
                self.h3_resends.fetch_add(1, Ordering::SeqCst);
            }
            h3.send_raw_datagram(sent.clone());
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while let Some(got) = h3
                .recv_datagram(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await
            {
                if got == sent {
                    return;
                }
            }
        }
        panic!("{what}: no echo of a datagram sent 5 times on stream {sid}");
    }

    fn forward_outcome(
        &self,
        parts: &http::response::Parts,
        body: &[u8],
        origin_says: &str,
        what: &str,
    ) -> Outcome {
        if parts.status == 200 {
            assert_eq!(
                String::from_utf8_lossy(body),
                origin_says,
                "{what}: the origin's answer"
            );
            Outcome::Reached
        } else {
            self.refused(
                parts.status.as_u16(),
                proxy_status_of(&parts.headers).as_deref(),
                what,
            )
        }
    }

    /// Nothing ever reached a victim (checked after every round).
    fn assert_victims_untouched(&self, when: &str) {
        for (ip, v) in &self.victims {
            let seen = (v.echo.accepted(), v.origin.connections(), v.udp.received());
            assert_eq!(
                seen,
                (0, 0, 0),
                "{}: {when}: the victim {ip} got (CONNECT connections, forward connections, \
                 datagrams) = {seen:?}: a rebound name reached an address the policy refuses; \
                 tally {:?}",
                self.variant,
                self.tally.lock().expect("tally lock")
            );
        }
    }

    /// One front at a time; two requests per front and name, so each sees
    /// both answers of the alternation.
    async fn sequential(&self) {
        let mut n = 0;
        for round in 0..SEQUENTIAL_ROUNDS {
            for front in FRONTS {
                for name in &self.names {
                    let mut pair = Vec::new();
                    for _ in 0..2 {
                        n += 1;
                        let before = self.allowed_seen();
                        let outcome = self.attempt(front, name, n).await;
                        let after = self.allowed_seen();
                        let grew = (
                            after.0 - before.0,
                            after.1 - before.1,
                            usize::from(after.2 > before.2),
                        );
                        let want = match outcome {
                            Outcome::Refused => (0, 0, 0),
                            Outcome::Reached => (
                                usize::from(front.is_connect()),
                                usize::from(front.is_forward()),
                                usize::from(front.is_udp()),
                            ),
                        };
                        assert_eq!(
                            grew, want,
                            "{}: {front:?} to {name} #{n} ({outcome:?}): what 127.0.0.2 saw \
                             (CONNECT connections, requests, any datagram)",
                            self.variant
                        );
                        pair.push(outcome);
                    }
                    pair.sort_by_key(|o| *o == Outcome::Refused);
                    assert_eq!(
                        pair,
                        [Outcome::Reached, Outcome::Refused],
                        "{}: {front:?} to {name}, round {round}: two consecutive lookups \
                         answer 127.0.0.2 and a refused address (one each)",
                        self.variant
                    );
                }
            }
            self.assert_victims_untouched(&format!("sequential round {round}"));
        }
    }

    /// Every front at once, each through every name, so lookups (fast and
    /// slow) overlap and answers arrive out of order.
    async fn concurrent(&self) {
        for round in 0..CONCURRENT_ROUNDS {
            let per_front = FRONTS.iter().enumerate().map(|(i, &front)| async move {
                for (j, name) in self.names.iter().enumerate() {
                    let n = 100_000 + (round * FRONTS.len() + i) * 10 + j;
                    self.attempt(front, name, n).await;
                }
            });
            futures_util::future::join_all(per_front).await;
            self.assert_victims_untouched(&format!("concurrent round {round}"));
        }
    }

    async fn run(&self) {
        self.sequential().await;
        self.concurrent().await;
        self.assert_final();
    }

    /// The books balance: each success is one request at 127.0.0.2, both
    /// outcomes happened everywhere, and the DNS really alternated.
    fn assert_final(&self) {
        self.assert_victims_untouched("the end");
        let tally = self.tally.lock().expect("tally lock").clone();
        let sum = |pick: fn(Front) -> bool| -> usize {
            tally
                .iter()
                .filter(|((f, _), _)| pick(*f))
                .map(|(_, (reached, _))| reached)
                .sum()
        };
        let v = self.variant;
        assert_eq!(
            self.allowed.echo.accepted(),
            sum(Front::is_connect),
            "{v}: every successful CONNECT, and nothing else, reached 127.0.0.2; tally {tally:?}"
        );
        assert_eq!(
            self.allowed.origin.seen().len(),
            sum(Front::is_forward),
            "{v}: every successful forward, and nothing else, reached 127.0.0.2; tally {tally:?}"
        );
        let udp = self.allowed.udp.received();
        let resends = self.h3_resends.load(Ordering::SeqCst);
        assert!(
            (sum(Front::is_udp)..=sum(Front::is_udp) + resends).contains(&udp),
            "{v}: one datagram per successful CONNECT-UDP (plus {resends} HTTP/3 resends) \
             reached 127.0.0.2, got {udp}; tally {tally:?}"
        );
        for front in FRONTS {
            for name in &self.names {
                let (reached, refused) = tally.get(&(front, *name)).copied().unwrap_or_default();
                assert!(
                    reached > 0 && refused > 0,
                    "{v}: {front:?} to {name}: both outcomes must occur (reached {reached}, \
                     refused {refused})"
                );
            }
        }
        for name in &self.names {
            let (qtype, which) = if *name == "rebind6.test" {
                (28, "AAAA")
            } else {
                (1, "A")
            };
            let asked = self.dns.query_count(name, qtype);
            // TTL 0: nothing is cached, so each sequential request asked on
            // its own (concurrent identical lookups may share one query:
            // hickory joins them while in flight).
            let alone = SEQUENTIAL_ROUNDS * FRONTS.len() * 2;
            assert!(
                asked >= alone.max(2),
                "{v}: {name} was asked for {which} {asked} times; the sequential passes \
                 alone made {alone} requests"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_never_reaches_a_refused_address_on_any_front() {
    bounded_for(LIMIT, async {
        init();
        let started = Instant::now();
        let certs = make_certs();
        let (deny, allow) = tokio::join!(Lab::start(&certs, "deny"), Lab::start(&certs, "allow"));
        tokio::join!(deny.run(), allow.run());
        for lab in [&deny, &allow] {
            let (reached, refused) = lab
                .tally
                .lock()
                .expect("tally lock")
                .values()
                .fold((0, 0), |(a, b), (r, f)| (a + r, b + f));
            let queries: Vec<(&str, usize, usize)> = lab
                .names
                .iter()
                .map(|n| (*n, lab.dns.query_count(n, 1), lab.dns.query_count(n, 28)))
                .collect();
            let metrics = lab.proxy.metrics().await;
            let lost = metric_opt(
                &metrics,
                "bauta_udp_drops_total",
                &[("reason", "unknown_stream")],
            );
            // A flow is registered before its 2xx: no first datagram is ever
            // dropped as belonging to no flow (the router once raced).
            assert_eq!(
                lost.unwrap_or(0.0),
                0.0,
                "{}: HTTP/3 datagrams dropped as unknown_stream",
                lab.variant
            );
            eprintln!(
                "{}: {reached} reached 127.0.0.2, {refused} refused; (name, A, AAAA) queries \
                 {queries:?}; HTTP/3 datagrams resent {}, dropped as unknown_stream {lost:?}; \
                 {:?} so far",
                lab.variant,
                lab.h3_resends.load(Ordering::SeqCst),
                started.elapsed()
            );
        }
    })
    .await
}

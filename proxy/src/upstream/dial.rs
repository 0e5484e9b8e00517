//! From a target to a connected, policy-checked TCP stream:
//! policy precheck → resolve (hickory, cached) → policy on every resolved
//! address → Happy Eyeballs v2 (RFC 8305) over exactly those addresses.
//!
//! The addresses that passed the policy are the only ones ever dialled; there
//! is no second lookup between check and connect (DNS-rebinding safe).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bauta_policy::{Decision, Host, Policy, Precheck, Protocol, Request, Verdict};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioResolver;
use tokio::net::TcpStream;

use crate::config::Limits;
use crate::ops::metrics::Metrics;
use crate::wire::target::Target;

/// Every `outcome` label value of `bauta_dns_lookups_total`.
pub const DNS_OUTCOMES: &[&str] = &["ok", "nxdomain", "nodata", "timeout", "error"];

/// The `rule` label of `bauta_policy_decisions_total` for the SSRF guard's
/// refusals (a name no rule may take).
pub const SSRF_GUARD_RULE: &str = "ssrf_guard";

/// RFC 8305 §5: the recommended Connection Attempt Delay.
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Why a dial did not produce a connection. Says what happened; `respond.rs`
/// decides how to answer.
#[derive(Debug)]
pub enum DialError {
    /// The policy said no (by rule, by default, or because of an address).
    Denied(Decision),
    /// The lookup failed; `rcode` is the DNS response code when there was one.
    Dns { rcode: Option<String> },
    /// The lookup did not finish in time.
    DnsTimeout,
    /// Every address refused the connection.
    Refused,
    /// No attempt connected before the connect timeout.
    Timeout,
    /// No route to any address.
    Unreachable,
    /// Anything else from the socket layer.
    Io(io::Error),
}

/// Who asks: the client's source address and its verified identity (`None`:
/// anonymous).
#[derive(Clone, Copy, Debug)]
pub struct Asker<'a> {
    pub client: IpAddr,
    pub identity: Option<&'a str>,
}

/// The addresses the policy allowed for one request, and the decision.
#[derive(Debug)]
pub struct Authorized {
    pub addrs: Vec<IpAddr>,
    pub decision: Decision,
}

pub struct Dialed {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub decision: Decision,
}

pub struct Dialer {
    resolver: TokioResolver,
    metrics: Arc<Metrics>,
    limits: Limits,
}

// === impl Dialer ===

impl Dialer {
    /// A resolver over `servers` ("ip:port"), or the system configuration when empty.
    pub fn new(
        servers: &[SocketAddr],
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> io::Result<Dialer> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the system DNS configuration; every name lookup will fail until [dns] servers is set");
                    TokioResolver::builder_with_config(ResolverConfig::default(), provider)
                }
            }
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                provider,
            )
        };
        let opts = builder.options_mut();
        opts.timeout = limits.dns_timeout;
        opts.attempts = 1;
        opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder
            .build()
            .map_err(|e| io::Error::other(format!("DNS resolver: {e}")))?;
        Ok(Dialer {
            resolver,
            metrics,
            limits,
        })
    }

    /// Decide and connect. Every step is counted; the final decision comes back
    /// with the stream so the access log can name the rule.
    pub async fn dial(
        &self,
        policy: &Policy,
        protocol: Protocol,
        target: &Target,
        who: Asker<'_>,
    ) -> Result<Dialed, DialError> {
        let auth = self.authorize(policy, protocol, target, who).await?;
        let (stream, peer) = self.connect(&auth, target.port).await?;
        Ok(Dialed {
            stream,
            peer,
            decision: auth.decision,
        })
    }

    /// Policy before DNS, the lookup, then policy over every resolved address.
    /// `who` is the client asking: its source address and verified identity.
    pub async fn authorize(
        &self,
        policy: &Policy,
        protocol: Protocol,
        target: &Target,
        who: Asker<'_>,
    ) -> Result<Authorized, DialError> {
        let precheck = policy.precheck(&Request {
            protocol,
            host: &target.host,
            port: target.port,
            addrs: &[],
            client: Some(who.client),
            identity: who.identity,
        });
        if let Precheck::Deny(d) = precheck {
            self.count_decision(&d);
            return Err(DialError::Denied(d));
        }
        let addrs = match &target.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => self.resolve(name).await?,
        };
        let decision = self
            .decide_for(policy, protocol, &target.host, target.port, &addrs, who)?
            .decision;
        Ok(Authorized { addrs, decision })
    }

    /// A connected UDP socket to the first address that passed and takes it
    /// (CONNECT-UDP: one socket per flow, so the kernel filters replies).
    pub async fn connect_udp(
        &self,
        auth: &Authorized,
        port: u16,
    ) -> Result<(tokio::net::UdpSocket, SocketAddr), DialError> {
        let mut last_err = None;
        for ip in interleave_ips(&auth.addrs) {
            let peer = SocketAddr::new(ip, port);
            let bind: SocketAddr = if ip.is_ipv6() {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let socket = tokio::net::UdpSocket::bind(bind).await.map_err(|e| {
                tracing::warn!(error = %e, "cannot create a UDP socket");
                DialError::Io(e)
            })?;
            match socket.connect(peer).await {
                Ok(()) => return Ok((socket, peer)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(match last_err {
            Some(e)
                if e.kind() == io::ErrorKind::NetworkUnreachable
                    || e.kind() == io::ErrorKind::HostUnreachable =>
            {
                DialError::Unreachable
            }
            Some(e) => DialError::Io(e),
            None => DialError::Unreachable,
        })
    }

    /// Connect to one of the addresses that passed (Happy Eyeballs).
    pub async fn connect(
        &self,
        auth: &Authorized,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), DialError> {
        let sockets: Vec<SocketAddr> = auth
            .addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect();
        let started = Instant::now();
        let (stream, peer) = happy_eyeballs(&sockets, self.limits.connect_timeout).await?;
        self.metrics
            .upstream_connect_seconds
            .observe(started.elapsed().as_secs_f64());
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    /// The full decision for `host:port` reached at `addrs`, counted.
    pub fn decide_for(
        &self,
        policy: &Policy,
        protocol: Protocol,
        host: &Host,
        port: u16,
        addrs: &[IpAddr],
        who: Asker<'_>,
    ) -> Result<Authorized, DialError> {
        let decision = policy.evaluate(&Request {
            protocol,
            host,
            port,
            addrs,
            client: Some(who.client),
            identity: who.identity,
        });
        self.count_decision(&decision);
        match decision.verdict {
            // Report: allowed; the decision (verdict "report") goes to the
            // access log and the metrics as a would-be denial.
            Verdict::Allow | Verdict::Report => Ok(Authorized {
                addrs: addrs.to_vec(),
                decision,
            }),
            Verdict::Deny => Err(DialError::Denied(decision)),
        }
    }

    /// An SSRF refusal is the guard's decision, whatever allowed the
    /// request before it: `rule="ssrf_guard"`.
    fn count_decision(&self, d: &Decision) {
        let rule = if d.reason.is_address_prohibited() {
            SSRF_GUARD_RULE
        } else {
            d.rule_name()
        };
        self.metrics
            .policy_decisions
            .with_label_values(&[d.verdict.as_str(), rule])
            .inc();
    }

    /// Look a name up (cached), counting the outcome.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, DialError> {
        // A fully qualified name: never walk the search list for a proxy target.
        let fqdn = format!("{name}.");
        let result =
            tokio::time::timeout(self.limits.dns_timeout, self.resolver.lookup_ip(fqdn)).await;
        let outcome = match result {
            Err(_) => Err(DialError::DnsTimeout),
            Ok(Err(e)) => Err(classify_dns_error(&e)),
            Ok(Ok(lookup)) => {
                let addrs: Vec<IpAddr> = lookup.iter().collect();
                if addrs.is_empty() {
                    Err(DialError::Dns {
                        rcode: Some("NOERROR".into()),
                    })
                } else {
                    Ok(addrs)
                }
            }
        };
        let label = match &outcome {
            Ok(_) => "ok",
            Err(DialError::DnsTimeout) => "timeout",
            Err(DialError::Dns { rcode: Some(r) }) if r == "NXDOMAIN" => "nxdomain",
            Err(DialError::Dns { rcode: Some(r) }) if r == "NOERROR" => "nodata",
            Err(_) => "error",
        };
        self.metrics.dns_lookups.with_label_values(&[label]).inc();
        outcome
    }
}

fn classify_dns_error(e: &NetError) -> DialError {
    match e {
        NetError::Timeout => DialError::DnsTimeout,
        NetError::Dns(DnsError::NoRecordsFound(nr)) => DialError::Dns {
            rcode: Some(rcode_name(nr.response_code).into()),
        },
        NetError::Dns(DnsError::ResponseCode(code)) => DialError::Dns {
            rcode: Some(rcode_name(*code).into()),
        },
        _ => DialError::Dns { rcode: None },
    }
}

/// The RFC 6895 §2.3 mnemonic of a DNS response code, as RFC 9209's
/// `rcode` parameter wants it (e.g. "NXDOMAIN").
fn rcode_name(code: ResponseCode) -> &'static str {
    match u16::from(code) {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        _ => "UNKNOWN",
    }
}

/// RFC 8305 §4: alternate address families, IPv6 first.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| a.is_ipv6());
    let mut out = Vec::with_capacity(addrs.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => break,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
    out
}

/// The same order for bare addresses (UDP flows try them one by one).
pub fn interleave_ips(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let sockets: Vec<SocketAddr> = addrs.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
    interleave(&sockets).into_iter().map(|s| s.ip()).collect()
}

/// Start one attempt, and another every ATTEMPT_DELAY or as soon as one fails;
/// the first to connect wins, the rest are dropped (RFC 8305 §5).
pub(crate) async fn happy_eyeballs(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), DialError> {
    race(addrs, timeout, TcpStream::connect).await
}

/// [`happy_eyeballs`] over any `connect`, so that its timing can be tested
/// with a paused clock and scripted attempts.
async fn race<S, F, Fut>(
    addrs: &[SocketAddr],
    timeout: Duration,
    connect: F,
) -> Result<(S, SocketAddr), DialError>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = io::Result<S>>,
{
    let ordered = interleave(addrs);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    let mut errors: Vec<io::Error> = Vec::new();
    loop {
        if let Some(addr) = ordered.get(next) {
            let addr = *addr;
            let attempt = connect(addr);
            pending.push(async move { (addr, attempt.await) });
            next += 1;
        }
        if pending.is_empty() {
            break;
        }
        tokio::select! {
            Some((addr, res)) = pending.next() => match res {
                Ok(stream) => return Ok((stream, addr)),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "connect attempt failed");
                    errors.push(e);
                    if pending.is_empty() && next >= ordered.len() {
                        break;
                    }
                }
            },
            _ = tokio::time::sleep(ATTEMPT_DELAY), if next < ordered.len() => {}
            _ = tokio::time::sleep_until(deadline) => return Err(DialError::Timeout),
        }
    }
    Err(summarise(errors))
}

fn summarise(errors: Vec<io::Error>) -> DialError {
    use io::ErrorKind::*;
    if errors.iter().any(|e| e.kind() == ConnectionRefused) {
        return DialError::Refused;
    }
    if errors.iter().any(|e| e.kind() == TimedOut) {
        return DialError::Timeout;
    }
    if errors.iter().any(|e| {
        matches!(
            e.kind(),
            HostUnreachable | NetworkUnreachable | AddrNotAvailable
        )
    }) {
        return DialError::Unreachable;
    }
    match errors.into_iter().next() {
        Some(e) => DialError::Io(e),
        None => DialError::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket addr")
    }

    #[test]
    fn interleave_starts_with_v6_and_alternates() {
        let got = interleave(&[
            sa("1.1.1.1:1"),
            sa("2.2.2.2:1"),
            sa("[::1]:1"),
            sa("[::2]:1"),
            sa("[::3]:1"),
        ]);
        let want = vec![
            sa("[::1]:1"),
            sa("1.1.1.1:1"),
            sa("[::2]:1"),
            sa("2.2.2.2:1"),
            sa("[::3]:1"),
        ];
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn refused_everywhere_is_refused() {
        // Bind then drop to find a port with no listener.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let r = happy_eyeballs(&[addr], Duration::from_secs(2)).await;
        assert!(matches!(r, Err(DialError::Refused)), "{r:?}");
    }

    #[tokio::test]
    async fn second_address_wins_when_first_refuses() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let live = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let live_addr = live.local_addr().expect("addr");
        let (_, peer) = happy_eyeballs(&[dead, live_addr], Duration::from_secs(2))
            .await
            .expect("connects");
        assert_eq!(peer, live_addr);
    }

    /// RFC 8305 §5: the next address is tried 250 ms after the previous
    /// attempt started if it has not finished, at once if it failed; the
    /// first to connect wins. Paused clock, scripted attempts.
    #[tokio::test(start_paused = true)]
    async fn happy_eyeballs_staggers_by_250_ms() {
        use std::sync::Mutex;
        let v6 = sa("[2001:db8::1]:443");
        let v4 = sa("192.0.2.1:443");
        let t0 = tokio::time::Instant::now();
        let started: Mutex<Vec<(SocketAddr, Duration)>> = Mutex::new(Vec::new());
        let log = |addr| {
            started
                .lock()
                .expect("log")
                .push((addr, tokio::time::Instant::now() - t0))
        };

        // IPv6 hangs: IPv4 starts exactly 250 ms later and wins.
        let won = race(&[v4, v6], Duration::from_secs(10), |addr| {
            log(addr);
            async move {
                if addr == v6 {
                    std::future::pending::<()>().await;
                }
                Ok(addr)
            }
        })
        .await
        .expect("IPv4 connects");
        assert_eq!(won.1, v4);
        assert_eq!(
            *started.lock().expect("log"),
            [(v6, Duration::ZERO), (v4, Duration::from_millis(250))]
        );

        // IPv6 fails at once: IPv4 starts without waiting.
        started.lock().expect("log").clear();
        let t1 = tokio::time::Instant::now() - t0;
        let won = race(&[v4, v6], Duration::from_secs(10), |addr| {
            log(addr);
            async move {
                if addr == v6 {
                    return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
                }
                Ok(addr)
            }
        })
        .await
        .expect("IPv4 connects");
        assert_eq!(won.1, v4);
        assert_eq!(*started.lock().expect("log"), [(v6, t1), (v4, t1)]);

        // Nothing connects within the timeout: Timeout, after exactly it.
        let before = tokio::time::Instant::now();
        let r = race(&[v4, v6], Duration::from_secs(3), |_| async {
            std::future::pending::<io::Result<()>>().await
        })
        .await;
        assert!(matches!(r, Err(DialError::Timeout)), "{r:?}");
        assert_eq!(tokio::time::Instant::now() - before, Duration::from_secs(3));
    }

    #[test]
    fn rcode_names_are_the_rfc_mnemonics() {
        assert_eq!(rcode_name(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_name(ResponseCode::ServFail), "SERVFAIL");
        assert_eq!(rcode_name(ResponseCode::Refused), "REFUSED");
        assert_eq!(rcode_name(ResponseCode::NoError), "NOERROR");
    }

    #[test]
    fn summary_prefers_refused() {
        let e = summarise(vec![
            io::Error::from(io::ErrorKind::TimedOut),
            io::Error::from(io::ErrorKind::ConnectionRefused),
        ]);
        assert!(matches!(e, DialError::Refused));
        assert!(matches!(summarise(vec![]), DialError::Unreachable));
    }
}

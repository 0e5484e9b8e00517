//! `evaluate` (indexed) beside `evaluate_linear` (every rule in order, the
//! baseline) and `precheck`, against 1,000- and 10,000-rule policies: a hit on
//! the first rule, a hit on the last rule, and no match (the default). Prints
//! one summary line per size with ns/decision for both and their ratio.
//!
//! Then the same against 10,000 rules naming 1,000 identities (most of them
//! sharing `hosts = ["*"]`, differing by identity): a hit on an early rule, on
//! a late rule, and misses for a named, an unknown and an anonymous client.
//!
//! Then against 10,000 any-host rules differing only by network (an egress
//! allow-list): nine in ten by a /24 `cidrs` in 10.0.0.0/8, one in ten by a
//! /24 `clients` from 172.16.0.0: hits on an early and a late rule by
//! destination, a late hit by client, and misses.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bauta_policy::{Host, Policy, PolicyConfig, PortSpec, Protocol, Request, RuleConfig, Verdict};
use criterion::{criterion_group, criterion_main, Criterion};

const SIZES: [usize; 2] = [1_000, 10_000];

/// Rule `i` is one of four kinds, in rotation: exact hosts on one port; a wildcard on
/// a port range; exact hosts, several ports, CONNECT only; a wildcard with a /24 CIDR.
fn rule(i: usize) -> RuleConfig {
    let mut rule = RuleConfig {
        name: format!("rule-{i}"),
        action: Verdict::Allow,
        protocols: None,
        hosts: None,
        ports: None,
        cidrs: None,
        clients: None,
        identities: None,
        groups: None,
    };
    match i % 4 {
        0 => {
            rule.hosts = Some(vec![
                format!("svc{i}.example.com"),
                format!("svc{i}.example.net"),
            ]);
            rule.ports = Some(vec![PortSpec::Single(443)]);
        }
        1 => {
            rule.hosts = Some(vec![format!("*.zone{i}.example.com")]);
            rule.ports = Some(vec![PortSpec::Range("8000-9000".into())]);
        }
        2 => {
            rule.action = Verdict::Deny;
            rule.protocols = Some(vec![Protocol::Connect]);
            rule.hosts = Some(vec![
                format!("api{i}.example.org"),
                format!("{i}.example.org"),
            ]);
            rule.ports = Some(vec![
                PortSpec::Single(80),
                PortSpec::Single(443),
                PortSpec::Range("1000-2000".into()),
            ]);
        }
        _ => {
            rule.hosts = Some(vec![format!("*.lab{i}.internal")]);
            rule.cidrs = Some(vec![format!("10.{}.{}.0/24", i / 256, i % 256)]);
        }
    }
    rule
}

fn policy(rules: usize) -> Policy {
    let cfg = PolicyConfig {
        default: Verdict::Deny,
        rules: (0..rules).map(rule).collect(),
        groups: Default::default(),
    };
    Policy::compile(&cfg).expect("benchmark policy compiles")
}

struct Target {
    label: &'static str,
    host: Host,
    port: u16,
    addrs: Vec<IpAddr>,
    rule: &'static str,
}

fn targets(rules: usize) -> Vec<Target> {
    let host = |s: &str| Host::parse(s).expect("benchmark host");
    let addr = |s: &str| s.parse::<IpAddr>().expect("benchmark address");
    // The last rule is a wildcard-with-CIDR rule (rules is a multiple of 4).
    let last = rules - 1;
    let last_host = host(&format!("db.lab{last}.internal"));
    let last_addrs = vec![
        addr(&format!("10.{}.{}.5", last / 256, last % 256)),
        addr(&format!("10.{}.{}.6", last / 256, last % 256)),
    ];
    let last_rule: &'static str = Box::leak(format!("rule-{last}").into_boxed_str());
    vec![
        Target {
            label: "first rule",
            host: host("svc0.example.com"),
            port: 443,
            addrs: vec![addr("93.184.216.34")],
            rule: "rule-0",
        },
        Target {
            label: "last rule",
            host: last_host,
            port: 5432,
            addrs: last_addrs,
            rule: last_rule,
        },
        Target {
            label: "default",
            host: host("nomatch.example.io"),
            port: 443,
            addrs: vec![addr("93.184.216.34")],
            rule: "default",
        },
    ]
}

fn bench(c: &mut Criterion) {
    for rules in SIZES {
        bench_size(c, rules);
    }
    bench_identities(c);
    bench_cidrs(c);
}

fn bench_size(c: &mut Criterion, rules: usize) {
    let policy = policy(rules);
    let targets = targets(rules);
    let requests: Vec<Request<'_>> = targets
        .iter()
        .map(|target| Request {
            protocol: Protocol::Connect,
            host: &target.host,
            port: target.port,
            addrs: &target.addrs,
            client: None,
            identity: None,
        })
        .collect();
    for (target, req) in targets.iter().zip(&requests) {
        assert_eq!(
            policy.evaluate(req).rule_name(),
            target.rule,
            "{}",
            target.label
        );
        assert_eq!(
            policy.evaluate_linear(req),
            policy.evaluate(req),
            "{}",
            target.label
        );
    }

    let mut group = c.benchmark_group(format!("evaluate/{rules} rules"));
    for (target, req) in targets.iter().zip(&requests) {
        group.bench_function(target.label, |b| b.iter(|| policy.evaluate(black_box(req))));
        group.bench_function(format!("{} (linear)", target.label), |b| {
            b.iter(|| policy.evaluate_linear(black_box(req)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("precheck/{rules} rules"));
    for target in &targets {
        group.bench_function(target.label, |b| {
            b.iter(|| {
                policy.precheck(black_box(&Request {
                    protocol: Protocol::Connect,
                    host: &target.host,
                    port: target.port,
                    addrs: &[],
                    client: None,
                    identity: None,
                }))
            })
        });
    }
    group.finish();

    // One line to read: ns/decision, indexed beside linear, measured here.
    for (target, req) in targets.iter().zip(&requests) {
        let (indexed, linear) = indexed_and_linear(&policy, req, rules);
        println!(
            "policy rules={rules} case=\"{}\" indexed_ns={indexed:.0} linear_ns={linear:.0} speedup={:.1}",
            target.label,
            linear / indexed
        );
    }

    c.bench_function(&format!("compile/{rules} rules"), |b| {
        let cfg = PolicyConfig {
            default: Verdict::Deny,
            rules: (0..rules).map(rule).collect(),
            groups: Default::default(),
        };
        b.iter(|| Policy::compile(black_box(&cfg)))
    });
}

/// ns/decision of `evaluate` and of `evaluate_linear` for `req`, one after
/// the other in this run.
fn indexed_and_linear(policy: &Policy, req: &Request<'_>, rules: usize) -> (f64, f64) {
    let per = |f: &dyn Fn()| {
        let n = if rules > 1_000 { 2_000 } else { 20_000 };
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed().as_nanos() as f64 / f64::from(n)
    };
    let indexed = per(&|| {
        black_box(policy.evaluate(black_box(req)));
    });
    let linear = per(&|| {
        black_box(policy.evaluate_linear(black_box(req)));
    });
    (indexed, linear)
}

// === 10,000 rules × 1,000 identities ===

const IDENTITY_RULES: usize = 10_000;
const IDENTITIES: usize = 1_000;

fn identity(k: usize) -> String {
    format!("spiffe://corp/svc/{k}")
}

/// Rule `i` is about identity `k = i % 1,000`, in round `i / 1,000` (0..10),
/// so every identity has ten rules. By `k % 5`:
///
/// * 0, 1: `hosts = ["*"]`, port 8000 + round, `identities = [k]` (4,000
///   rules on one host key, differing by identity and port); for k = 500 a
///   prefix pattern besides;
/// * 2: `hosts = ["*"]`, CONNECT-UDP only, `groups = ["team{k / 10}"]` (a
///   group of ten identities);
/// * 3: `hosts = ["api{k % 100}.example.com"]`, port 443, `identities = [k]`;
/// * 4: `hosts = ["db{k}.corp.internal"]`, a /24 `cidrs`, anyone.
fn identity_rule(i: usize) -> RuleConfig {
    let (k, round) = (i % IDENTITIES, i / IDENTITIES);
    let mut rule = RuleConfig {
        name: format!("rule-{i}"),
        action: Verdict::Allow,
        protocols: None,
        hosts: None,
        ports: None,
        cidrs: None,
        clients: None,
        identities: None,
        groups: None,
    };
    match k % 5 {
        0 | 1 => {
            rule.hosts = Some(vec!["*".into()]);
            rule.ports = Some(vec![PortSpec::Single(8000 + round as i64)]);
            rule.identities = Some(vec![identity(k)]);
            if k == 500 {
                rule.identities = Some(vec![identity(k), "spiffe://corp/batch/*".into()]);
            }
        }
        2 => {
            rule.hosts = Some(vec!["*".into()]);
            rule.protocols = Some(vec![Protocol::ConnectUdp]);
            rule.groups = Some(vec![format!("team{}", k / 10)]);
        }
        3 => {
            rule.action = Verdict::Deny;
            rule.hosts = Some(vec![format!("api{}.example.com", k % 100)]);
            rule.ports = Some(vec![PortSpec::Single(443)]);
            rule.identities = Some(vec![identity(k)]);
        }
        _ => {
            rule.hosts = Some(vec![format!("db{k}.corp.internal")]);
            rule.cidrs = Some(vec![format!("10.{round}.{}.0/24", k % 256)]);
        }
    }
    rule
}

fn identity_policy_config() -> PolicyConfig {
    PolicyConfig {
        default: Verdict::Deny,
        rules: (0..IDENTITY_RULES).map(identity_rule).collect(),
        // team{g}: identities 10g..10g+9.
        groups: (0..IDENTITIES / 10)
            .map(|g| {
                (
                    format!("team{g}"),
                    (10 * g..10 * g + 10).map(identity).collect(),
                )
            })
            .collect(),
    }
}

fn bench_identities(c: &mut Criterion) {
    let cfg = identity_policy_config();
    let start = Instant::now();
    let policy = Policy::compile(&cfg).expect("benchmark policy compiles");
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let host = Host::parse("www.example.com").expect("benchmark host");
    let addrs = ["93.184.216.34"
        .parse::<IpAddr>()
        .expect("benchmark address")];
    let (first, late, named, unknown) = (
        identity(0),
        identity(996),
        identity(3),
        "spiffe://corp/svc/unknown".to_string(),
    );
    // (label, port, identity, expected rule)
    let cases: [(&str, u16, Option<&str>, &str); 5] = [
        ("early rule", 8000, Some(&first), "rule-0"),
        ("late rule", 8009, Some(&late), "rule-9996"),
        ("default, named identity", 8000, Some(&named), "default"),
        ("default, unknown identity", 8000, Some(&unknown), "default"),
        ("default, anonymous", 8000, None, "default"),
    ];
    let requests: Vec<(&str, Request<'_>)> = cases
        .iter()
        .map(|&(label, port, identity, rule)| {
            let req = Request {
                protocol: Protocol::Connect,
                host: &host,
                port,
                addrs: &addrs,
                client: None,
                identity,
            };
            assert_eq!(policy.evaluate(&req).rule_name(), rule, "{label}");
            assert_eq!(
                policy.evaluate(&req),
                policy.evaluate_linear(&req),
                "{label}"
            );
            (label, req)
        })
        .collect();

    let mut group = c.benchmark_group(format!(
        "evaluate/{IDENTITY_RULES} rules x {IDENTITIES} identities"
    ));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    for (label, req) in &requests {
        group.bench_function(*label, |b| b.iter(|| policy.evaluate(black_box(req))));
        group.bench_function(format!("{label} (linear)"), |b| {
            b.iter(|| policy.evaluate_linear(black_box(req)))
        });
    }
    group.finish();

    // One line to read per case: ns/decision, indexed beside linear, this run.
    for (label, req) in &requests {
        let (indexed, linear) = indexed_and_linear(&policy, req, IDENTITY_RULES);
        println!(
            "policy rules={IDENTITY_RULES} identities={IDENTITIES} case=\"{label}\" indexed_ns={indexed:.0} linear_ns={linear:.0} speedup={:.1}",
            linear / indexed
        );
    }
    println!("policy rules={IDENTITY_RULES} identities={IDENTITIES} compile_ms={compile_ms:.1}");
}

// === 10,000 any-host rules differing by network ===

const CIDR_RULES: usize = 10_000;

/// The /24 of rule `i`, `base.{i / 256}.{i % 256}.0/24` within `base`'s /8
/// (`172.{16 + i / 256}` for clients).
fn subnet(first: u8, second: usize, i: usize) -> String {
    format!("{first}.{}.{}.0/24", second + i / 256, i % 256)
}

/// Rule `i` allows any host, with `cidrs = [10.x.y.0/24]` (`i % 10 != 9`) or
/// `clients = [172.(16+x).y.0/24]` (`i % 10 == 9`).
fn cidr_rule(i: usize) -> RuleConfig {
    let mut rule = RuleConfig {
        name: format!("rule-{i}"),
        action: Verdict::Allow,
        protocols: None,
        hosts: None,
        ports: None,
        cidrs: None,
        clients: None,
        identities: None,
        groups: None,
    };
    if i % 10 == 9 {
        rule.clients = Some(vec![subnet(172, 16, i)]);
    } else {
        rule.cidrs = Some(vec![subnet(10, 0, i)]);
    }
    rule
}

fn bench_cidrs(c: &mut Criterion) {
    let cfg = PolicyConfig {
        default: Verdict::Deny,
        rules: (0..CIDR_RULES).map(cidr_rule).collect(),
        groups: Default::default(),
    };
    let start = Instant::now();
    let policy = Policy::compile(&cfg).expect("benchmark policy compiles");
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let host = Host::parse("db.corp.internal").expect("benchmark host");
    let ip = |s: &str| s.parse::<IpAddr>().expect("benchmark address");
    // Inside rule i's destination /24 (the host part ".5").
    let inside = |i: usize| ip(&format!("10.{}.{}.5", i / 256, i % 256));
    let (early, late) = (vec![inside(0)], vec![inside(9_998), inside(9_998)]);
    let public = vec![ip("93.184.216.34")];
    let unlisted = vec![ip("10.200.0.5")];
    let mapped = vec![ip(&format!("::ffff:10.{}.{}.5", 9_997 / 256, 9_997 % 256))];
    let late_client = Some(ip(&format!("172.{}.{}.9", 16 + 9_999 / 256, 9_999 % 256)));
    let other_client = Some(ip("192.168.1.1"));
    // (label, addrs, client, expected rule)
    let cases: [(&str, &[IpAddr], Option<IpAddr>, &str); 6] = [
        ("early rule by cidrs", &early, other_client, "rule-0"),
        ("late rule by cidrs", &late, other_client, "rule-9998"),
        ("late rule by cidrs, mapped", &mapped, None, "rule-9997"),
        ("late rule by clients", &public, late_client, "rule-9999"),
        (
            "default, unlisted subnet",
            &unlisted,
            other_client,
            "default",
        ),
        ("default, public, no client", &public, None, "default"),
    ];
    let requests: Vec<(&str, Request<'_>)> = cases
        .iter()
        .map(|&(label, addrs, client, rule)| {
            let req = Request {
                protocol: Protocol::Connect,
                host: &host,
                port: 5432,
                addrs,
                client,
                identity: None,
            };
            assert_eq!(policy.evaluate(&req).rule_name(), rule, "{label}");
            assert_eq!(
                policy.evaluate(&req),
                policy.evaluate_linear(&req),
                "{label}"
            );
            (label, req)
        })
        .collect();

    let mut group = c.benchmark_group(format!("evaluate/{CIDR_RULES} rules by network"));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    for (label, req) in &requests {
        group.bench_function(*label, |b| b.iter(|| policy.evaluate(black_box(req))));
        group.bench_function(format!("{label} (linear)"), |b| {
            b.iter(|| policy.evaluate_linear(black_box(req)))
        });
    }
    group.bench_function("precheck", |b| {
        let req = Request {
            addrs: &[],
            ..requests[0].1
        };
        b.iter(|| policy.precheck(black_box(&req)))
    });
    group.finish();

    // One line to read per case: ns/decision, indexed beside linear, this run.
    for (label, req) in &requests {
        let (indexed, linear) = indexed_and_linear(&policy, req, CIDR_RULES);
        println!(
            "policy rules={CIDR_RULES} by=network case=\"{label}\" indexed_ns={indexed:.0} linear_ns={linear:.0} speedup={:.1}",
            linear / indexed
        );
    }
    println!("policy rules={CIDR_RULES} by=network compile_ms={compile_ms:.1}");
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! `evaluate` (indexed) beside `evaluate_linear` (every rule in order, the
//! baseline) and `precheck`, against 1,000- and 10,000-rule policies: a hit on
//! the first rule, a hit on the last rule, and no match (the default). Prints
//! one summary line per size with ns/decision for both and their ratio.

use std::hint::black_box;
use std::net::IpAddr;

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
    let per = |f: &dyn Fn()| {
        let n = if rules > 1_000 { 2_000 } else { 20_000 };
        let start = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed().as_nanos() as f64 / f64::from(n)
    };
    for (target, req) in targets.iter().zip(&requests) {
        let indexed = per(&|| {
            black_box(policy.evaluate(black_box(req)));
        });
        let linear = per(&|| {
            black_box(policy.evaluate_linear(black_box(req)));
        });
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

criterion_group!(benches, bench);
criterion_main!(benches);

//! `evaluate` and `precheck` against a 1,000-rule policy: a hit on the first rule, a
//! hit on the last rule, and no match (the default).

use std::hint::black_box;
use std::net::IpAddr;

use bauta_policy::{Host, Policy, PolicyConfig, PortSpec, Protocol, Request, RuleConfig, Verdict};
use criterion::{criterion_group, criterion_main, Criterion};

const RULES: usize = 1_000;

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

fn policy() -> Policy {
    let cfg = PolicyConfig {
        default: Verdict::Deny,
        rules: (0..RULES).map(rule).collect(),
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

fn targets() -> Vec<Target> {
    let host = |s: &str| Host::parse(s).expect("benchmark host");
    let addr = |s: &str| s.parse::<IpAddr>().expect("benchmark address");
    // Rule 999 is a wildcard-with-CIDR rule: 999 = 3 * 256 + 231.
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
            host: host("db.lab999.internal"),
            port: 5432,
            addrs: vec![addr("10.3.231.5"), addr("10.3.231.6")],
            rule: "rule-999",
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
    let policy = policy();
    let targets = targets();

    let mut group = c.benchmark_group("evaluate/1000 rules");
    for target in &targets {
        let req = Request {
            protocol: Protocol::Connect,
            host: &target.host,
            port: target.port,
            addrs: &target.addrs,
        };
        assert_eq!(
            policy.evaluate(&req).rule_name(),
            target.rule,
            "{}",
            target.label
        );
        group.bench_function(target.label, |b| {
            b.iter(|| policy.evaluate(black_box(&req)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("precheck/1000 rules");
    for target in &targets {
        group.bench_function(target.label, |b| {
            b.iter(|| {
                policy.precheck(
                    black_box(Protocol::Connect),
                    black_box(&target.host),
                    black_box(target.port),
                )
            })
        });
    }
    group.finish();

    c.bench_function("compile/1000 rules", |b| {
        let cfg = PolicyConfig {
            default: Verdict::Deny,
            rules: (0..RULES).map(rule).collect(),
        };
        b.iter(|| Policy::compile(black_box(&cfg)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

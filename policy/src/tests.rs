//! Named-case tables for `evaluate`, `precheck` and `compile`, and properties that
//! tie them together.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

fn policy(toml_text: &str) -> Policy {
    let cfg: PolicyConfig = toml::from_str(toml_text).expect("test policy parses");
    Policy::compile(&cfg).expect("test policy compiles")
}

fn host(s: &str) -> Host {
    Host::parse(s).expect("test host parses")
}

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter()
        .map(|s| s.parse().expect("test address parses"))
        .collect()
}

/// One `evaluate` case.
struct Case {
    name: &'static str,
    protocol: Protocol,
    host: &'static str,
    port: u16,
    addrs: &'static [&'static str],
    verdict: Verdict,
    /// `None`: the default decided.
    rule: Option<&'static str>,
    reason: Reason,
}

fn run(policy_toml: &str, cases: &[Case]) {
    let policy = policy(policy_toml);
    for case in cases {
        let host = host(case.host);
        let addrs = addrs(case.addrs);
        let decision = policy.evaluate(&Request {
            protocol: case.protocol,
            host: &host,
            port: case.port,
            addrs: &addrs,
            client: None,
            identity: None,
        });
        assert_eq!(
            (decision.verdict, decision.rule.as_deref(), decision.reason),
            (case.verdict, case.rule, case.reason),
            "case {:?}",
            case.name
        );
        assert_eq!(decision.rule_name(), case.rule.unwrap_or("default"));
    }
}

/// Shorthand for the many cases that differ only in host, port and addresses.
fn connect(
    name: &'static str,
    host: &'static str,
    port: u16,
    addrs: &'static [&'static str],
    verdict: Verdict,
    rule: Option<&'static str>,
    reason: Reason,
) -> Case {
    Case {
        name,
        protocol: Protocol::Connect,
        host,
        port,
        addrs,
        verdict,
        rule,
        reason,
    }
}

use Reason::{AddressProhibited as Prohibited, DefaultAllow, DefaultDeny, RuleAllow, RuleDeny};
use Verdict::{Allow, Deny, Report};

const PUBLIC: &[&str] = &["93.184.216.34"];

// ===== Rule matching =====

const MATCHING: &str = r#"
    default = "deny"

    [[rule]]
    name = "deny-evil"
    action = "deny"
    hosts = ["evil.example.com"]

    [[rule]]
    name = "example"
    action = "allow"
    hosts = ["*.example.com"]

    [[rule]]
    name = "org"
    action = "allow"
    protocols = ["connect"]
    hosts = ["example.org", "203.0.113.7"]
    ports = [443, "8000-9000"]

    [[rule]]
    name = "udp-dns"
    action = "allow"
    protocols = ["connect-udp"]
    ports = [53]
"#;

#[test]
fn rule_matching() {
    #[rustfmt::skip]
    let cases = [
        connect("first match wins: exact deny before wildcard allow", "evil.example.com", 443, PUBLIC, Deny, Some("deny-evil"), RuleDeny),
        connect("exact deny does not cover subdomains", "x.evil.example.com", 443, PUBLIC, Allow, Some("example"), RuleAllow),
        connect("wildcard matches one level", "api.example.com", 443, PUBLIC, Allow, Some("example"), RuleAllow),
        connect("wildcard matches any depth", "a.b.c.example.com", 443, PUBLIC, Allow, Some("example"), RuleAllow),
        connect("wildcard does not match the bare suffix", "example.com", 443, PUBLIC, Deny, None, DefaultDeny),
        connect("wildcard does not match a lookalike", "badexample.com", 443, PUBLIC, Deny, None, DefaultDeny),
        connect("host matching is case-insensitive", "API.Example.COM.", 443, PUBLIC, Allow, Some("example"), RuleAllow),
        connect("exact host and single port", "example.org", 443, PUBLIC, Allow, Some("org"), RuleAllow),
        connect("exact host does not cover subdomains", "www.example.org", 443, PUBLIC, Deny, None, DefaultDeny),
        connect("port range start", "example.org", 8000, PUBLIC, Allow, Some("org"), RuleAllow),
        connect("port range middle", "example.org", 8500, PUBLIC, Allow, Some("org"), RuleAllow),
        connect("port range end", "example.org", 9000, PUBLIC, Allow, Some("org"), RuleAllow),
        connect("port below range", "example.org", 7999, PUBLIC, Deny, None, DefaultDeny),
        connect("port above range", "example.org", 9001, PUBLIC, Deny, None, DefaultDeny),
        connect("port not listed", "example.org", 80, PUBLIC, Deny, None, DefaultDeny),
        connect("exact ip literal", "203.0.113.7", 443, &["203.0.113.7"], Deny, Some("org"), Prohibited(AddrClass::Reserved)),
        connect("ip literal spelled oddly", "0xcb.0.113.7", 443, &[], Deny, Some("org"), Prohibited(AddrClass::Reserved)),
        Case { name: "protocol filter excludes http", protocol: Protocol::Http, host: "example.org", port: 443, addrs: PUBLIC, verdict: Deny, rule: None, reason: DefaultDeny },
        Case { name: "omitted protocols match http", protocol: Protocol::Http, host: "api.example.com", port: 80, addrs: PUBLIC, verdict: Allow, rule: Some("example"), reason: RuleAllow },
        Case { name: "omitted protocols match reverse", protocol: Protocol::Reverse, host: "api.example.com", port: 80, addrs: PUBLIC, verdict: Allow, rule: Some("example"), reason: RuleAllow },
        Case { name: "omitted hosts match any host", protocol: Protocol::ConnectUdp, host: "resolver.example.net", port: 53, addrs: &["9.9.9.9"], verdict: Allow, rule: Some("udp-dns"), reason: RuleAllow },
        Case { name: "udp rule needs its port", protocol: Protocol::ConnectUdp, host: "resolver.example.net", port: 443, addrs: &["9.9.9.9"], verdict: Deny, rule: None, reason: DefaultDeny },
        Case { name: "udp rule needs its protocol", protocol: Protocol::Connect, host: "resolver.example.net", port: 53, addrs: &["9.9.9.9"], verdict: Deny, rule: None, reason: DefaultDeny },
    ];
    run(MATCHING, &cases);
}

const DEFAULT_ALLOW: &str = r#"
    default = "allow"

    [[rule]]
    name = "block-ads"
    action = "deny"
    hosts = ["*.ads.example"]

    [[rule]]
    name = "no-udp"
    action = "deny"
    protocols = ["connect-udp"]

    [[rule]]
    name = "internal"
    action = "deny"
    cidrs = ["198.51.100.0/24"]
"#;

#[test]
fn default_allow() {
    #[rustfmt::skip]
    let cases = [
        connect("no rule matches", "example.com", 443, PUBLIC, Allow, None, DefaultAllow),
        connect("public v6", "example.com", 443, &["2606:4700::1111"], Allow, None, DefaultAllow),
        connect("deny rule", "x.ads.example", 443, PUBLIC, Deny, Some("block-ads"), RuleDeny),
        Case { name: "deny by protocol", protocol: Protocol::ConnectUdp, host: "example.com", port: 443, addrs: PUBLIC, verdict: Deny, rule: Some("no-udp"), reason: RuleDeny },
        connect("deny rule with cidrs", "example.com", 443, &["198.51.100.1"], Deny, Some("internal"), RuleDeny),
        connect("deny rule with cidrs needs every address inside", "example.com", 443, &["198.51.100.1", "8.8.8.8"], Deny, None, Prohibited(AddrClass::Reserved)),
        connect("no addresses yet: name only", "example.com", 443, &[], Allow, None, DefaultAllow),
    ];
    run(DEFAULT_ALLOW, &cases);
}

#[test]
fn default_deny() {
    #[rustfmt::skip]
    let cases = [
        connect("empty policy denies", "example.com", 443, PUBLIC, Deny, None, DefaultDeny),
        connect("even with no addresses", "example.com", 443, &[], Deny, None, DefaultDeny),
    ];
    run("", &cases);
    run("default = \"deny\"", &cases);
}

// ===== SSRF =====

/// Each non-public address with its class; checked under a default allow and under a
/// `"*"` allow rule without cidrs.
const NON_PUBLIC: &[(&str, &str, AddrClass)] = &[
    ("loopback v4", "127.0.0.1", AddrClass::Loopback),
    (
        "loopback v4, top of range",
        "127.255.255.254",
        AddrClass::Loopback,
    ),
    ("loopback v6", "::1", AddrClass::Loopback),
    ("private 10/8", "10.1.2.3", AddrClass::Private),
    ("private 172.16/12", "172.16.0.1", AddrClass::Private),
    ("private 192.168/16", "192.168.1.1", AddrClass::Private),
    ("link-local v4", "169.254.1.1", AddrClass::LinkLocal),
    ("link-local v6", "fe80::1", AddrClass::LinkLocal),
    ("cgnat", "100.64.0.1", AddrClass::SharedCgnat),
    ("ula", "fd12:3456::1", AddrClass::UniqueLocal),
    ("metadata v4", "169.254.169.254", AddrClass::Metadata),
    ("metadata v6", "fd00:ec2::254", AddrClass::Metadata),
    ("mapped loopback", "::ffff:127.0.0.1", AddrClass::MappedV4),
    (
        "mapped metadata",
        "::ffff:169.254.169.254",
        AddrClass::MappedV4,
    ),
    ("compat loopback", "::127.0.0.1", AddrClass::MappedV4),
    ("nat64 private", "64:ff9b::10.0.0.1", AddrClass::MappedV4),
    ("6to4 loopback", "2002:7f00:1::1", AddrClass::MappedV4),
    ("unspecified v4", "0.0.0.0", AddrClass::Unspecified),
    ("unspecified v6", "::", AddrClass::Unspecified),
    ("multicast v4", "224.0.0.1", AddrClass::Multicast),
    ("multicast v6", "ff02::1", AddrClass::Multicast),
    ("broadcast", "255.255.255.255", AddrClass::Broadcast),
    ("reserved class e", "240.0.0.1", AddrClass::Reserved),
    ("benchmarking", "198.18.0.1", AddrClass::Reserved),
    ("documentation v6", "2001:db8::1", AddrClass::Reserved),
];

const STAR_ALLOW: &str = r#"
    [[rule]]
    name = "any"
    action = "allow"
    hosts = ["*"]
"#;

#[test]
fn non_public_addresses_are_denied_without_cidrs() {
    let policies = [
        ("default allow", "default = \"allow\"", None),
        ("\"*\" allow rule", STAR_ALLOW, Some("any")),
    ];
    for (policy_name, policy_toml, rule) in policies {
        let policy = policy(policy_toml);
        for &(case, addr, class) in NON_PUBLIC {
            let ip: IpAddr = addr.parse().expect(addr);
            // Resolved from a name, and as the literal itself.
            for (host, addrs) in [(host("target.example"), [ip]), (Host::Ip(ip), [ip])] {
                let decision = policy.evaluate(&Request {
                    protocol: Protocol::Connect,
                    host: &host,
                    port: 443,
                    addrs: &addrs,
                    client: None,
                    identity: None,
                });
                assert_eq!(
                    (decision.verdict, decision.rule.as_deref(), decision.reason),
                    (Deny, rule, Prohibited(class)),
                    "{policy_name}: {case} ({addr}) via {host}"
                );
            }
        }
    }
}

#[test]
fn ssrf_under_default_allow() {
    #[rustfmt::skip]
    let cases = [
        connect("mapped public is public", "example.com", 443, &["::ffff:8.8.8.8"], Allow, None, DefaultAllow),
        connect("nat64 public is public", "example.com", 443, &["64:ff9b::8.8.8.8"], Allow, None, DefaultAllow),
        connect("6to4 public is public", "example.com", 443, &["2002:808:808::1"], Allow, None, DefaultAllow),
        connect("one bad address denies all", "example.com", 443, &["8.8.8.8", "127.0.0.1"], Deny, None, Prohibited(AddrClass::Loopback)),
        connect("first offending address is reported", "example.com", 443, &["10.0.0.1", "127.0.0.1"], Deny, None, Prohibited(AddrClass::Private)),
        connect("literal without addresses is checked", "127.0.0.1", 443, &[], Deny, None, Prohibited(AddrClass::Loopback)),
        connect("odd literal spelling is checked", "0x7f.1", 80, &[], Deny, None, Prohibited(AddrClass::Loopback)),
        connect("decimal literal is checked", "2130706433", 80, &[], Deny, None, Prohibited(AddrClass::Loopback)),
        connect("bracketed mapped literal is checked", "[::ffff:127.0.0.1]", 80, &[], Deny, None, Prohibited(AddrClass::MappedV4)),
        connect("localhost resolving to loopback", "localhost", 80, &["127.0.0.1", "::1"], Deny, None, Prohibited(AddrClass::Loopback)),
    ];
    run("default = \"allow\"", &cases);
}

const CIDRS: &str = r#"
    default = "deny"

    [[rule]]
    name = "lab"
    action = "allow"
    hosts = ["lab.internal", "*.lab.internal"]
    cidrs = ["10.0.0.0/8", "127.0.0.0/8", "fd00::/8"]

    [[rule]]
    name = "loopback-literal"
    action = "allow"
    hosts = ["127.0.0.1", "[::1]"]
    ports = [8080]
    cidrs = ["127.0.0.1", "::1/128"]

    [[rule]]
    name = "metadata"
    action = "deny"
    cidrs = ["169.254.169.254/32"]

    [[rule]]
    name = "web"
    action = "allow"
    hosts = ["*"]
"#;

#[test]
fn cidrs() {
    #[rustfmt::skip]
    let cases = [
        connect("cidrs name a private address", "db.lab.internal", 5432, &["10.1.2.3"], Allow, Some("lab"), RuleAllow),
        connect("cidrs name loopback", "lab.internal", 80, &["127.0.0.1"], Allow, Some("lab"), RuleAllow),
        connect("cidrs name every address", "db.lab.internal", 5432, &["10.1.2.3", "127.0.0.5", "fd00::1"], Allow, Some("lab"), RuleAllow),
        connect("cidrs must contain every address", "db.lab.internal", 5432, &["10.1.2.3", "8.8.8.8"], Deny, Some("web"), Prohibited(AddrClass::Private)),
        connect("address outside cidrs falls through", "db.lab.internal", 5432, &["192.168.1.1"], Deny, Some("web"), Prohibited(AddrClass::Private)),
        connect("public address outside cidrs falls through", "db.lab.internal", 443, &["8.8.8.8"], Allow, Some("web"), RuleAllow),
        connect("mapped v6 matched by v4 cidr", "db.lab.internal", 5432, &["::ffff:10.0.0.1"], Allow, Some("lab"), RuleAllow),
        connect("mapped loopback matched by v4 cidr", "db.lab.internal", 5432, &["::ffff:127.0.0.1"], Allow, Some("lab"), RuleAllow),
        connect("compat form is not matched by v4 cidr", "db.lab.internal", 5432, &["::10.0.0.1"], Deny, Some("web"), Prohibited(AddrClass::MappedV4)),
        connect("cidrs may name metadata explicitly", "db.lab.internal", 5432, &["fd00:ec2::254"], Allow, Some("lab"), RuleAllow),
        connect("loopback literal", "127.0.0.1", 8080, &["127.0.0.1"], Allow, Some("loopback-literal"), RuleAllow),
        connect("loopback literal, no addresses given", "127.0.0.1", 8080, &[], Allow, Some("loopback-literal"), RuleAllow),
        connect("loopback v6 literal", "[::1]", 8080, &["::1"], Allow, Some("loopback-literal"), RuleAllow),
        connect("loopback literal, wrong port", "127.0.0.1", 8081, &["127.0.0.1"], Deny, Some("web"), Prohibited(AddrClass::Loopback)),
        connect("deny rule by cidr", "anything.example", 80, &["169.254.169.254"], Deny, Some("metadata"), RuleDeny),
        connect("deny rule by cidr beats a later allow", "db.lab.internal", 80, &["169.254.169.254"], Deny, Some("metadata"), RuleDeny),
        connect("rules with cidrs do not match before resolution", "db.lab.internal", 5432, &[], Allow, Some("web"), RuleAllow),
        connect("public via star rule", "example.com", 443, PUBLIC, Allow, Some("web"), RuleAllow),
    ];
    run(CIDRS, &cases);
}

// ===== precheck =====

#[test]
fn precheck() {
    // (case, policy, protocol, host, port, None = Resolve / Some((rule, reason)) = Deny)
    type Want = Option<(Option<&'static str>, Reason)>;
    #[rustfmt::skip]
    let cases: &[(&str, &str, Protocol, &str, u16, Want)] = &[
        ("empty policy denies", "", Protocol::Connect, "example.com", 443, Some((None, DefaultDeny))),
        ("default allow resolves", "default = \"allow\"", Protocol::Connect, "example.com", 443, None),
        ("deny rule without cidrs decides", MATCHING, Protocol::Connect, "evil.example.com", 443, Some((Some("deny-evil"), RuleDeny))),
        ("allow rule without cidrs resolves", MATCHING, Protocol::Connect, "api.example.com", 443, None),
        ("no rule matches: default deny", MATCHING, Protocol::Connect, "example.com", 443, Some((None, DefaultDeny))),
        ("protocol mismatch falls to default", MATCHING, Protocol::Http, "example.org", 443, Some((None, DefaultDeny))),
        ("port mismatch falls to default", MATCHING, Protocol::Connect, "example.org", 22, Some((None, DefaultDeny))),
        ("allow rule with cidrs resolves", CIDRS, Protocol::Connect, "db.lab.internal", 5432, None),
        ("deny rule with cidrs resolves", DEFAULT_ALLOW, Protocol::Connect, "example.com", 443, None),
        ("deny by protocol before resolution", DEFAULT_ALLOW, Protocol::ConnectUdp, "example.com", 443, Some((Some("no-udp"), RuleDeny))),
        ("deny rule without cidrs under default allow", DEFAULT_ALLOW, Protocol::Connect, "x.ads.example", 443, Some((Some("block-ads"), RuleDeny))),
        ("loopback literal under default allow", "default = \"allow\"", Protocol::Connect, "127.0.0.1", 80, Some((None, Prohibited(AddrClass::Loopback)))),
        ("odd loopback literal under default allow", "default = \"allow\"", Protocol::Connect, "0177.1", 80, Some((None, Prohibited(AddrClass::Loopback)))),
        ("metadata literal under star allow", STAR_ALLOW, Protocol::Http, "169.254.169.254", 80, Some((Some("any"), Prohibited(AddrClass::Metadata)))),
        ("public literal under default allow", "default = \"allow\"", Protocol::Connect, "8.8.8.8", 443, None),
        ("literal named by cidrs", CIDRS, Protocol::Connect, "127.0.0.1", 8080, None),
        ("literal not named by cidrs", CIDRS, Protocol::Connect, "127.0.0.1", 8081, Some((Some("web"), Prohibited(AddrClass::Loopback)))),
        ("metadata literal hits the deny rule", CIDRS, Protocol::Connect, "169.254.169.254", 80, Some((Some("metadata"), RuleDeny))),
    ];
    for &(case, policy_toml, protocol, host_text, port, want) in cases {
        let policy = policy(policy_toml);
        let h = host(host_text);
        let got = policy.precheck(&Request {
            protocol,
            host: &h,
            port,
            addrs: &[],
            client: None,
            identity: None,
        });
        let want = match want {
            None => Precheck::Resolve,
            Some((rule, reason)) => Precheck::Deny(Decision {
                verdict: Deny,
                rule: rule.map(Arc::from),
                reason,
            }),
        };
        assert_eq!(got, want, "case {case:?}");
    }
}

// ===== compile =====

#[test]
fn compile_errors() {
    // (case, policy, substrings the message must contain)
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[&str])] = &[
        ("empty name", r#"[[rule]]
            name = ""
            action = "allow""#, &[r#"rule #1 (""): name: must not be empty"#]),
        ("reserved name ssrf_guard", r#"[[rule]]
            name = "ssrf_guard"
            action = "allow""#, &[r#"rule #1 ("ssrf_guard"): name: "ssrf_guard" is reserved"#]),
        ("reserved name default", r#"[[rule]]
            name = "default"
            action = "deny""#, &[r#"rule #1 ("default"): name: "default" is reserved"#]),
        ("duplicate name", r#"[[rule]]
            name = "a"
            action = "allow"
            [[rule]]
            name = "b"
            action = "allow"
            [[rule]]
            name = "a"
            action = "deny""#, &[r#"rule #3 ("a"): name: "a" is already used by rule #1"#]),
        ("empty hosts", r#"[[rule]]
            name = "r"
            action = "allow"
            hosts = []"#, &[r#"rule #1 ("r"): hosts: empty list matches nothing; omit the key"#]),
        ("empty protocols", r#"[[rule]]
            name = "r"
            action = "allow"
            protocols = []"#, &["protocols: empty list matches nothing; omit the key"]),
        ("empty ports", r#"[[rule]]
            name = "r"
            action = "allow"
            ports = []"#, &["ports: empty list matches nothing; omit the key"]),
        ("empty cidrs", r#"[[rule]]
            name = "r"
            action = "allow"
            cidrs = []"#, &["cidrs: empty list matches nothing; omit the key"]),
        ("wildcard with nothing after", r#"[[rule]]
            name = "r"
            action = "allow"
            hosts = ["*."]"#, &[r#"rule #1 ("r"): hosts: "*.": nothing follows "*.""#]),
        ("wildcard inside a label", r#"[[rule]]
            name = "r"
            action = "allow"
            hosts = ["ok.example", "a*.b"]"#, &[r#"hosts: "a*.b": '*' is allowed only as the whole pattern or as a leading "*.""#]),
        ("trailing wildcard", r#"[[rule]]
            name = "r"
            action = "allow"
            hosts = ["foo.*"]"#, &[r#"hosts: "foo.*": '*' is allowed only"#]),
        ("wildcard ip", r#"[[rule]]
            name = "r"
            action = "allow"
            hosts = ["*.10.0.0.1"]"#, &[r#"hosts: "*.10.0.0.1": a wildcard suffix must be a DNS name"#]),
        ("bad host", r#"[[rule]]
            name = "r"
            action = "allow"
            hosts = ["a..b"]"#, &[r#"hosts: "a..b": host has an empty label"#]),
        ("bad ipv4 host", r#"[[rule]]
            name = "r"
            action = "allow"
            hosts = ["1.2.3.999"]"#, &[r#"hosts: "1.2.3.999": host ends in a number but is not a valid IPv4 address"#]),
        ("reversed port range, second rule", r#"[[rule]]
            name = "ok"
            action = "allow"
            [[rule]]
            name = "lab"
            action = "allow"
            ports = [443, "9000-8000"]"#, &[r#"rule #2 ("lab"): ports: "9000-8000": range start is greater than end"#]),
        ("port zero", r#"[[rule]]
            name = "r"
            action = "allow"
            ports = [0]"#, &[r#"rule #1 ("r"): ports: 0: port must be in 1..=65535"#]),
        ("port too big", r#"[[rule]]
            name = "r"
            action = "allow"
            ports = [65536]"#, &["ports: 65536: port must be in 1..=65535"]),
        ("negative port", r#"[[rule]]
            name = "r"
            action = "allow"
            ports = [-1]"#, &["ports: -1: port must be in 1..=65535"]),
        ("port range end too big", r#"[[rule]]
            name = "r"
            action = "allow"
            ports = ["1000-70000"]"#, &[r#"ports: "1000-70000": port must be in 1..=65535"#]),
        ("malformed port", r#"[[rule]]
            name = "r"
            action = "allow"
            ports = ["https"]"#, &[r#"ports: "https": expected a port like 443"#]),
        ("cidr host bits", r#"[[rule]]
            name = "r"
            action = "allow"
            cidrs = ["10.0.0.1/8"]"#, &[r#"rule #1 ("r"): cidrs: "10.0.0.1/8": has host bits set; did you mean 10.0.0.0/8"#]),
        ("v6 cidr host bits", r#"[[rule]]
            name = "r"
            action = "allow"
            cidrs = ["fd00::1/8"]"#, &["has host bits set; did you mean fd00::/8"]),
        ("v4 prefix too long", r#"[[rule]]
            name = "r"
            action = "allow"
            cidrs = ["10.0.0.0/33"]"#, &[r#"cidrs: "10.0.0.0/33": prefix length 33 is longer than 32"#]),
        ("v6 prefix too long", r#"[[rule]]
            name = "r"
            action = "allow"
            cidrs = ["::/129"]"#, &["prefix length 129 is longer than 128"]),
        ("malformed cidr", r#"[[rule]]
            name = "r"
            action = "allow"
            cidrs = ["localhost/8"]"#, &[r#"cidrs: "localhost/8": not an address or a CIDR"#]),
        ("name with quotes is escaped", r#"[[rule]]
            name = 'say "hi"'
            action = "allow"
            hosts = []"#, &[r#"rule #1 ("say \"hi\""): hosts"#]),
    ];
    for &(case, policy_toml, substrings) in cases {
        let cfg: PolicyConfig = toml::from_str(policy_toml).expect(case);
        let message = Policy::compile(&cfg).expect_err(case).to_string();
        for substring in substrings {
            assert!(
                message.contains(substring),
                "case {case:?}: {message:?} lacks {substring:?}"
            );
        }
    }
}

#[test]
fn compiles() {
    let policy = policy(CIDRS);
    assert_eq!(policy.rule_count(), 4);
    assert_eq!(policy.default_verdict(), Deny);
    let policy = self::policy("default = \"allow\"");
    assert_eq!((policy.rule_count(), policy.default_verdict()), (0, Allow));
}

#[test]
fn policy_is_send_sync() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Policy>();
    shareable::<Arc<Policy>>();
}

#[test]
fn fixed_strings() {
    #[rustfmt::skip]
    let cases: &[(Reason, &str)] = &[
        (RuleAllow, "rule allows"),
        (RuleDeny, "rule denies"),
        (DefaultAllow, "no rule matched; default allow"),
        (DefaultDeny, "no rule matched; default deny"),
        (Prohibited(AddrClass::Loopback), "destination address is loopback and no matching rule's cidrs names it"),
        (Prohibited(AddrClass::MappedV4), "destination address is mapped_v4 and no matching rule's cidrs names it"),
    ];
    for &(reason, text) in cases {
        assert_eq!(reason.as_str(), text);
        assert_eq!(reason.to_string(), text);
        assert_eq!(
            reason.is_address_prohibited(),
            text.starts_with("destination")
        );
    }
    assert_eq!((Allow.as_str(), Deny.as_str()), ("allow", "deny"));
    let labels: Vec<_> = Protocol::ALL.iter().map(Protocol::as_str).collect();
    assert_eq!(labels, ["connect", "connect-udp", "http", "reverse"]);
}

// ===== properties =====

fn arb_protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(&Protocol::ALL[..])
}

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|bits| IpAddr::V4(bits.into())),
        any::<u128>().prop_map(|bits| IpAddr::V6(bits.into())),
        // Addresses near the interesting ranges.
        prop::sample::select(NON_PUBLIC).prop_map(|(_, addr, _)| addr.parse().expect("table")),
        prop::sample::select(&["8.8.8.8", "10.0.0.1", "::ffff:10.0.0.1", "fd00::1"][..])
            .prop_map(|addr| addr.parse().expect("literal")),
    ]
}

fn arb_host() -> impl Strategy<Value = Host> {
    prop_oneof![
        "[a-z0-9.*-]{0,24}".prop_filter_map("valid host", |s| Host::parse(&s).ok()),
        prop::sample::select(
            &[
                "evil.example.com",
                "a.example.com",
                "example.org",
                "db.lab.internal",
                "x.ads.example"
            ][..]
        )
        .prop_map(|s| Host::parse(s).expect("literal")),
        arb_addr().prop_map(Host::Ip),
    ]
}

const ALL_POLICIES: &[&str] = &[
    MATCHING,
    DEFAULT_ALLOW,
    STAR_ALLOW,
    CIDRS,
    "",
    "default = \"allow\"",
];

proptest! {
    #[test]
    fn evaluate_never_panics(
        which in 0..ALL_POLICIES.len(),
        protocol in arb_protocol(),
        host in arb_host(),
        port in any::<u16>(),
        addrs in prop::collection::vec(arb_addr(), 0..4),
    ) {
        let policy = policy(ALL_POLICIES[which]);
        let _ = policy.evaluate(&Request { protocol, host: &host, port, addrs: &addrs, client: None, identity: None });
        let _ = policy.precheck(&Request { protocol, host: &host, port, addrs: &[], client: None, identity: None });
    }

    /// A precheck `Deny` is final: whatever the addresses, `evaluate` returns the same
    /// decision.
    #[test]
    fn precheck_deny_is_final(
        which in 0..ALL_POLICIES.len(),
        protocol in arb_protocol(),
        host in arb_host(),
        port in any::<u16>(),
        addrs in prop::collection::vec(arb_addr(), 1..4),
    ) {
        let policy = policy(ALL_POLICIES[which]);
        // The proxy resolves an IP literal to itself.
        let addrs = match host { Host::Ip(ip) => vec![ip], Host::Name(_) => addrs };
        if let Precheck::Deny(early) = policy.precheck(&Request { protocol, host: &host, port, addrs: &[], client: None, identity: None }) {
            let late = policy.evaluate(&Request { protocol, host: &host, port, addrs: &addrs, client: None, identity: None });
            prop_assert_eq!(late, early);
        }
    }

    /// An `Allow` never reaches a non-public address its rule does not name.
    #[test]
    fn allow_implies_public_or_named(
        which in 0..ALL_POLICIES.len(),
        protocol in arb_protocol(),
        host in arb_host(),
        port in any::<u16>(),
        addrs in prop::collection::vec(arb_addr(), 0..4),
    ) {
        let policy = policy(ALL_POLICIES[which]);
        let decision = policy.evaluate(&Request { protocol, host: &host, port, addrs: &addrs, client: None, identity: None });
        if decision.verdict == Allow {
            let rule = decision.rule.as_deref().and_then(|name| {
                policy.rules.iter().find(|rule| &*rule.name == name)
            });
            for &addr in &addrs {
                let named = rule
                    .and_then(|rule| rule.cidrs.as_ref())
                    .is_some_and(|cidrs| cidrs.contains(addr));
                prop_assert!(classify(addr) == AddrClass::Public || named, "{addr} allowed by {decision:?}");
            }
        }
    }
}

// === the index agrees with the linear scan ===

/// Hosts, suffixes and addresses from a small vocabulary, so that random rules
/// and requests often meet.
const NAMES: &[&str] = &[
    "example.com",
    "a.example.com",
    "b.a.example.com",
    "example.org",
    "x.example.org",
    "lab.internal",
    "db.lab.internal",
    "com",
];
const IPS: &[&str] = &["10.0.0.1", "192.0.2.7", "8.8.8.8", "::1", "2001:db8::1"];
const CIDR_VOCAB: &[&str] = &[
    "10.0.0.0/8",
    "192.0.2.0/24",
    "8.8.8.8/32",
    "::1/128",
    "2001:db8::/32",
];

/// Exact names and prefixes (trailing `*`) for rules' `identities`.
const IDENTITY_PATTERNS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "spiffe://corp/payments/api",
    "spiffe://corp/web",
    "spiffe://corp/payments/*",
    "spiffe://corp/*",
    "ali*",
];
/// `[groups]` of every generated policy: exact names, prefixes, both, none.
const GROUPS: &[(&str, &[&str])] = &[
    ("payments", &["spiffe://corp/payments/*", "alice"]),
    ("ops", &["bob", "dave"]),
    ("web", &["spiffe://corp/web", "spiffe://corp/web/*"]),
    ("nobody", &[]),
];
/// Request identities: named exactly, matched only by a prefix, unknown to
/// every rule; anonymous requests come from `prop::option::of`.
const IDENTITIES: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "dave",
    "spiffe://corp/payments/api",
    "spiffe://corp/payments/batch",
    "spiffe://corp/web",
    "spiffe://corp/web/x",
    "alicia",
    "mallory",
    "spiffe://other/web",
];

fn arb_host_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        prop::sample::select(NAMES).prop_map(str::to_string),
        prop::sample::select(NAMES).prop_map(|n| format!("*.{n}")),
        prop::sample::select(IPS).prop_map(str::to_string),
    ]
}

fn arb_rule_config(i: usize) -> impl Strategy<Value = RuleConfig> {
    (
        prop::sample::select(&[Allow, Deny, Report][..]),
        prop::option::of(prop::collection::vec(arb_protocol(), 1..3)),
        prop::option::of(prop::collection::vec(arb_host_pattern(), 1..4)),
        prop::option::of(prop::collection::vec(
            prop::sample::select(&[80i64, 443, 8080][..]).prop_map(PortSpec::Single),
            1..3,
        )),
        prop::option::of(prop::collection::vec(
            prop_oneof![
                prop::sample::select(CIDR_VOCAB).prop_map(str::to_string),
                prop::sample::select(NET_VOCAB).prop_map(str::to_string),
            ],
            1..3,
        )),
        prop::option::of(prop::collection::vec(
            prop_oneof![
                prop::sample::select(CIDR_VOCAB).prop_map(str::to_string),
                prop::sample::select(NET_VOCAB).prop_map(str::to_string),
            ],
            1..3,
        )),
        prop::option::of(prop::collection::vec(
            prop::sample::select(IDENTITY_PATTERNS).prop_map(str::to_string),
            1..4,
        )),
        prop::option::of(prop::collection::vec(
            prop::sample::select(GROUPS).prop_map(|(name, _)| name.to_string()),
            1..3,
        )),
    )
        .prop_map(
            move |(action, protocols, hosts, ports, cidrs, clients, identities, groups)| {
                RuleConfig {
                    name: format!("r{i}"),
                    action,
                    protocols,
                    hosts,
                    ports,
                    cidrs,
                    clients,
                    identities,
                    groups,
                }
            },
        )
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        prop::sample::select(&[Allow, Deny, Report][..]),
        prop::collection::vec(any::<u8>(), 0..40).prop_flat_map(|seeds| {
            seeds
                .iter()
                .enumerate()
                .map(|(i, _)| arb_rule_config(i))
                .collect::<Vec<_>>()
        }),
    )
        .prop_map(|(default, rules)| {
            let groups = GROUPS
                .iter()
                .map(|(name, members)| {
                    let members = members.iter().map(|m| m.to_string()).collect();
                    (name.to_string(), members)
                })
                .collect();
            let cfg = PolicyConfig {
                default,
                rules,
                groups,
            };
            Policy::compile(&cfg).expect("generated policy compiles")
        })
}

fn arb_request_host() -> impl Strategy<Value = Host> {
    prop_oneof![
        prop::sample::select(NAMES).prop_map(host),
        prop::sample::select(NAMES).prop_map(|n| host(&format!("deep.z.{n}"))),
        prop::sample::select(IPS).prop_map(host),
        arb_host(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// The indexed `evaluate` and the linear walk give the same decision for
    /// every policy and request.
    #[test]
    fn index_agrees_with_linear_scan(
        policy in arb_policy(),
        protocol in arb_protocol(),
        host in arb_request_host(),
        port in prop::sample::select(&[80u16, 443, 8080, 22][..]),
        addrs in prop::collection::vec(
            prop_oneof![
                prop::sample::select(IPS).prop_map(|a| a.parse::<IpAddr>().expect("ip")),
                arb_vocab_addr(),
            ],
            0..4,
        ),
        client in prop::option::of(prop_oneof![
            prop::sample::select(IPS).prop_map(|a| a.parse::<IpAddr>().expect("ip")),
            arb_vocab_addr(),
        ]),
        identity in prop::option::of(prop::sample::select(IDENTITIES)),
    ) {
        let req = Request { protocol, host: &host, port, addrs: &addrs, client, identity };
        agrees_with_linear_scan(&policy, &req)?;
    }

    /// The same with policies of many any-host rules that differ by
    /// overlapping `cidrs` and `clients` (v4, v6, IPv4-mapped), the prefix
    /// tries' ground.
    #[test]
    fn cidr_index_agrees_with_linear_scan(
        policy in arb_net_policy(),
        protocol in arb_protocol(),
        host in prop_oneof![
            prop::sample::select(&["a.example.com", "example.org", "db.lab.internal"][..]).prop_map(host),
            prop::sample::select(ADDR_VOCAB).prop_map(host),
        ],
        port in prop::sample::select(&[80u16, 443][..]),
        addrs in prop::collection::vec(arb_vocab_addr(), 0..4),
        client in prop::option::weighted(0.9, arb_vocab_addr()),
        identity in prop::option::of(prop::sample::select(&["alice", "bob"][..])),
    ) {
        let req = Request { protocol, host: &host, port, addrs: &addrs, client, identity };
        agrees_with_linear_scan(&policy, &req)?;
    }
}

/// `evaluate` is `evaluate_linear`; `precheck` is the linear walk with the
/// addresses unknown; a precheck deny is `evaluate`'s answer.
fn agrees_with_linear_scan(policy: &Policy, req: &Request<'_>) -> Result<(), TestCaseError> {
    let (protocol, host, port, client, identity) =
        (req.protocol, req.host, req.port, req.client, req.identity);
    prop_assert_eq!(policy.evaluate(req), policy.evaluate_linear(req));
    // precheck's indexed rule match is the linear walk's, addresses unknown.
    if let Host::Name(_) = host {
        let probe = HostProbe::new(host);
        let who = policy.identities.who(identity);
        let expected = match policy.rules.iter().find(|rule| {
            rule.matches_target(protocol, &probe, port) && rule.matches_who(client, who)
        }) {
            Some(rule) if rule.cidrs.is_none() && rule.action == Deny => {
                Precheck::Deny(Decision::deny_by(rule))
            }
            Some(_) => Precheck::Resolve,
            None if policy.default == Deny => Precheck::Deny(Decision::deny_by_default()),
            None => Precheck::Resolve,
        };
        prop_assert_eq!(policy.precheck(&Request { addrs: &[], ..*req }), expected);
    }
    // precheck agrees with evaluate: a precheck deny is evaluate's answer.
    if let Precheck::Deny(early) = policy.precheck(&Request { addrs: &[], ..*req }) {
        let addrs = match host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(_) => req.addrs.to_vec(),
        };
        if !addrs.is_empty() {
            let late = policy.evaluate(&Request {
                addrs: &addrs,
                ..*req
            });
            prop_assert_eq!(late, early);
        }
    }
    Ok(())
}

/// Nested and overlapping networks: v4, v6, IPv4-mapped (`::ffff:...`, which
/// a v4 network also covers) and IPv4-compatible (`::a00:0/104`, which it
/// does not).
const NET_VOCAB: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/7",
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.0.0.0/24",
    "10.0.0.1",
    "10.0.1.0/24",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "192.0.2.0/24",
    "8.8.8.8/32",
    "::/0",
    "::1/128",
    "::ffff:0:0/96",
    "::ffff:10.0.0.0/104",
    "::ffff:10.0.0.1/128",
    "::a00:0/104",
    "2001:db8::/32",
    "2001:db8::/48",
    "2001:db8:0:1::/64",
    "fd00::/8",
];
/// Addresses in, between and outside [`NET_VOCAB`], in every form.
const ADDR_VOCAB: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.0.1.7",
    "10.1.2.3",
    "11.0.0.1",
    "192.0.2.7",
    "8.8.8.8",
    "93.184.216.34",
    "::ffff:10.0.0.1",
    "::ffff:10.1.2.3",
    "::ffff:8.8.8.8",
    "::a00:1",
    "::1",
    "2001:db8::1",
    "2001:db8:0:1::5",
    "2001:db8:1::1",
    "fd00::1",
];

fn arb_vocab_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => prop::sample::select(ADDR_VOCAB).prop_map(|a| a.parse::<IpAddr>().expect("ip")),
        1 => arb_addr(),
    ]
}

fn arb_nets() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(NET_VOCAB).prop_map(str::to_string),
        1..3,
    )
}

/// Mostly any-host rules, mostly with `cidrs` or `clients`; now and then a
/// host, protocol, port or identity besides.
fn arb_net_rule_config(i: usize) -> impl Strategy<Value = RuleConfig> {
    (
        prop::sample::select(&[Allow, Deny, Report][..]),
        prop::option::weighted(0.1, prop::collection::vec(arb_protocol(), 1..3)),
        prop::sample::select(&[None, Some("*"), Some("*.example.com")][..]),
        prop::option::weighted(
            0.1,
            prop::sample::select(&[80i64, 443][..]).prop_map(|p| vec![PortSpec::Single(p)]),
        ),
        prop::option::weighted(0.7, arb_nets()),
        prop::option::weighted(0.4, arb_nets()),
        prop::option::weighted(
            0.1,
            prop::sample::select(&["alice", "ali*"][..]).prop_map(|p| vec![p.to_string()]),
        ),
    )
        .prop_map(
            move |(action, protocols, hosts, ports, cidrs, clients, identities)| RuleConfig {
                name: format!("r{i}"),
                action,
                protocols,
                hosts: hosts.map(|h| vec![h.to_string()]),
                ports,
                cidrs,
                clients,
                identities,
                groups: None,
            },
        )
}

fn arb_net_policy() -> impl Strategy<Value = Policy> {
    (
        prop::sample::select(&[Allow, Deny, Report][..]),
        (0..60usize).prop_flat_map(|n| (0..n).map(arb_net_rule_config).collect::<Vec<_>>()),
    )
        .prop_map(|(default, rules)| {
            let cfg = PolicyConfig {
                default,
                rules,
                groups: Default::default(),
            };
            Policy::compile(&cfg).expect("generated policy compiles")
        })
}

// === clients and report ===

const CLIENTS_AND_REPORT: &str = r#"
    default = "deny"

    [[rule]]
    name = "office"
    action = "allow"
    hosts = ["*.example.com"]
    clients = ["10.0.0.0/8", "fd00::/8"]

    [[rule]]
    name = "rollout"
    action = "report"
    hosts = ["*.example.com", "example.org"]
"#;

#[test]
fn clients_and_report() {
    let policy = policy(CLIENTS_AND_REPORT);
    let public = addrs(&["93.184.216.34"]);
    let decide = |h: &str, client: Option<&str>| {
        let h = host(h);
        let client = client.map(|c| c.parse::<IpAddr>().expect("client"));
        policy.evaluate(&Request {
            protocol: Protocol::Connect,
            host: &h,
            port: 443,
            addrs: &public,
            client,
            identity: None,
        })
    };
    // (host, client, verdict, rule, reason)
    let cases: &[(&str, Option<&str>, Verdict, &str, Reason)] = &[
        (
            "a.example.com",
            Some("10.1.2.3"),
            Allow,
            "office",
            RuleAllow,
        ),
        ("a.example.com", Some("fd00::7"), Allow, "office", RuleAllow),
        // Outside `clients`: the next rule (report) decides.
        (
            "a.example.com",
            Some("192.0.2.1"),
            Report,
            "rollout",
            Reason::RuleReport,
        ),
        // Unknown client: a rule with `clients` never matches.
        ("a.example.com", None, Report, "rollout", Reason::RuleReport),
        (
            "example.org",
            Some("10.1.2.3"),
            Report,
            "rollout",
            Reason::RuleReport,
        ),
        ("other.net", Some("10.1.2.3"), Deny, "default", DefaultDeny),
    ];
    for &(h, client, verdict, rule, reason) in cases {
        let d = decide(h, client);
        assert_eq!(
            (d.verdict, d.rule_name(), d.reason),
            (verdict, rule, reason),
            "{h} from {client:?}"
        );
        assert_eq!(Reason::RuleReport.as_str(), "rule reports; allowed");
    }
    // Report allows, so the address check still applies.
    let h = host("a.example.com");
    let loopback = addrs(&["127.0.0.1"]);
    let d = policy.evaluate(&Request {
        protocol: Protocol::Connect,
        host: &h,
        port: 443,
        addrs: &loopback,
        client: None,
        identity: None,
    });
    assert_eq!(d.verdict, Deny);
    assert_eq!(d.rule_name(), "rollout");
    assert!(d.reason.is_address_prohibited(), "{d:?}");
    // precheck: a report rule never denies before DNS.
    assert_eq!(
        policy.precheck(&Request {
            protocol: Protocol::Connect,
            host: &h,
            port: 443,
            addrs: &[],
            client: None,
            identity: None
        }),
        Precheck::Resolve
    );
    // A default `report` allows what no rule matches.
    let lenient = crate::tests::policy("default = \"report\"");
    let d = lenient.evaluate(&Request {
        protocol: Protocol::Connect,
        host: &host("x.test"),
        port: 443,
        addrs: &public,
        client: None,
        identity: None,
    });
    assert_eq!((d.verdict, d.reason), (Report, Reason::DefaultReport));
}

#[test]
fn clients_must_be_cidrs() {
    let cfg: PolicyConfig = toml::from_str(
        r#"
        [[rule]]
        name = "bad"
        action = "allow"
        clients = ["not-an-address"]
    "#,
    )
    .expect("parses");
    let err = Policy::compile(&cfg).expect_err("bad clients");
    assert!(
        err.to_string()
            .starts_with("rule #1 (\"bad\"): clients: \"not-an-address\""),
        "{err}"
    );
}

#[test]
fn identities_match_exactly_or_by_prefix_and_never_anonymous() {
    let policy = policy(
        r#"
        default = "deny"

        [[rule]]
        name = "payments"
        action = "allow"
        identities = ["spiffe://corp/payments/*", "alice"]
    "#,
    );
    let public = addrs(&["93.184.216.34"]);
    let h = host("psp.example");
    let decide = |identity: Option<&str>| {
        policy
            .evaluate(&Request {
                protocol: Protocol::Connect,
                host: &h,
                port: 443,
                addrs: &public,
                client: None,
                identity,
            })
            .rule_name()
            .to_string()
    };
    assert_eq!(decide(Some("spiffe://corp/payments/api")), "payments");
    assert_eq!(decide(Some("spiffe://corp/payments/")), "payments");
    assert_eq!(decide(Some("alice")), "payments");
    assert_eq!(decide(Some("alice2")), "default");
    assert_eq!(decide(Some("spiffe://corp/web")), "default");
    assert_eq!(
        decide(None),
        "default",
        "anonymous matches no identities rule"
    );
}

#[test]
fn groups_name_sets_of_identities() {
    let policy = policy(
        r#"
        default = "deny"

        [groups]
        payments = ["spiffe://corp/payments/*", "alice"]
        ops = ["bob"]

        [[rule]]
        name = "psp"
        action = "allow"
        groups = ["payments"]
        identities = ["carol"]
    "#,
    );
    let public = addrs(&["93.184.216.34"]);
    let h = host("psp.example");
    let rule = |identity: Option<&str>| {
        policy
            .evaluate(&Request {
                protocol: Protocol::Connect,
                host: &h,
                port: 443,
                addrs: &public,
                client: None,
                identity,
            })
            .rule_name()
            .to_string()
    };
    assert_eq!(
        rule(Some("spiffe://corp/payments/api")),
        "psp",
        "group prefix"
    );
    assert_eq!(rule(Some("alice")), "psp", "group member");
    assert_eq!(rule(Some("carol")), "psp", "identities beside groups");
    assert_eq!(rule(Some("bob")), "default", "another group");
    assert_eq!(rule(None), "default", "anonymous");

    let cfg: PolicyConfig = toml::from_str(
        r#"
        [[rule]]
        name = "r"
        action = "allow"
        groups = ["nobody"]
    "#,
    )
    .expect("parses");
    let err = Policy::compile(&cfg).expect_err("unknown group");
    assert_eq!(
        err.to_string(),
        "rule #1 (\"r\"): groups: \"nobody\" is not defined in [groups]"
    );
}

#[test]
fn identity_index_keeps_first_match_order() {
    // Rules on one host key that differ only by identity, with an open rule,
    // a prefix rule and exact rules interleaved: the first in config order
    // that matches wins, whichever list it is filed in.
    let policy = policy(
        r#"
        default = "deny"

        [groups]
        ops = ["bob", "spiffe://corp/ops/*"]

        [[rule]]
        name = "bob-udp"
        action = "allow"
        protocols = ["connect-udp"]
        identities = ["bob"]

        [[rule]]
        name = "payments"
        action = "report"
        hosts = ["*"]
        identities = ["spiffe://corp/payments/*"]

        [[rule]]
        name = "alice"
        action = "allow"
        hosts = ["*"]
        identities = ["alice", "spiffe://corp/payments/api"]

        [[rule]]
        name = "ops"
        action = "allow"
        groups = ["ops"]

        [[rule]]
        name = "anyone-443"
        action = "deny"
        ports = [443]

        [[rule]]
        name = "bob-late"
        action = "allow"
        identities = ["bob"]
    "#,
    );
    // Interned: the exact names, those from groups too; prefixes are not.
    assert_eq!(policy.identities.len(), 3, "bob, alice, payments/api");
    let public = addrs(&["93.184.216.34"]);
    let h = host("svc.example");
    let rule = |protocol: Protocol, port: u16, identity: Option<&str>| {
        let req = Request {
            protocol,
            host: &h,
            port,
            addrs: &public,
            client: None,
            identity,
        };
        let decision = policy.evaluate(&req);
        assert_eq!(decision, policy.evaluate_linear(&req), "{identity:?}");
        decision.rule_name().to_string()
    };
    let c = Protocol::Connect;
    assert_eq!(rule(c, 443, Some("spiffe://corp/payments/api")), "payments");
    assert_eq!(rule(c, 443, Some("alice")), "alice");
    assert_eq!(rule(c, 443, Some("bob")), "ops");
    assert_eq!(rule(Protocol::ConnectUdp, 443, Some("bob")), "bob-udp");
    assert_eq!(rule(c, 443, Some("spiffe://corp/ops/x")), "ops");
    assert_eq!(rule(c, 443, Some("mallory")), "anyone-443");
    assert_eq!(rule(c, 443, None), "anyone-443");
    assert_eq!(rule(c, 80, None), "default");
    assert_eq!(rule(c, 80, Some("mallory")), "default");
}

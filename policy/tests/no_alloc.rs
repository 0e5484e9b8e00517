//! `evaluate` and `precheck` do not allocate. A counting allocator needs a binary of
//! its own, hence this integration test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;

use bauta_policy::{Host, Policy, PolicyConfig, Protocol, Request};

/// Counts allocations made by the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const POLICY: &str = r#"
    default = "allow"

    [[rule]]
    name = "exact"
    action = "deny"
    hosts = ["blocked.example", "203.0.113.9"]
    ports = [443, "8000-9000"]

    [[rule]]
    name = "lab"
    action = "allow"
    hosts = ["*.lab.internal"]
    cidrs = ["10.0.0.0/8"]

    [[rule]]
    name = "udp"
    action = "deny"
    protocols = ["connect-udp"]

    [groups]
    payments = ["spiffe://corp/payments/*", "alice"]

    [[rule]]
    name = "who"
    action = "deny"
    hosts = ["*"]
    ports = [8443]
    identities = ["bob"]
    groups = ["payments"]
"#;

#[test]
fn evaluate_and_precheck_do_not_allocate() {
    let cfg: PolicyConfig = toml::from_str(POLICY).expect("parses");
    let policy = Policy::compile(&cfg).expect("compiles");
    // (host, port, addrs): rule hits, default, address denials, literals.
    let cases: Vec<(Host, u16, Vec<IpAddr>)> = [
        ("blocked.example", 443, &["8.8.8.8"][..]),
        ("db.lab.internal", 5432, &["10.1.2.3"]),
        ("db.lab.internal", 5432, &["10.1.2.3", "8.8.8.8"]),
        ("example.com", 443, &["8.8.8.8"]),
        ("example.com", 8443, &["8.8.8.8"]),
        ("example.com", 443, &["127.0.0.1", "::ffff:10.0.0.1"]),
        ("example.com", 443, &[]),
        ("203.0.113.9", 443, &[]),
        ("[::1]", 80, &[]),
    ]
    .into_iter()
    .map(|(host, port, addrs)| {
        (
            Host::parse(host).expect("host"),
            port,
            addrs.iter().map(|a| a.parse().expect("addr")).collect(),
        )
    })
    .collect();

    // Anonymous, named exactly, matched by a prefix, unknown.
    let identities = [
        None,
        Some("bob"),
        Some("spiffe://corp/payments/api"),
        Some("eve"),
    ];
    for ((host, port, addrs), identity) in cases
        .iter()
        .flat_map(|case| identities.iter().map(move |&identity| (case, identity)))
    {
        for protocol in Protocol::ALL {
            let req = Request {
                protocol,
                host,
                port: *port,
                addrs,
                client: Some(IpAddr::from([10, 1, 2, 3])),
                identity,
            };
            let mut decision = None;
            let n = allocations_during(|| decision = Some(policy.evaluate(&req)));
            assert_eq!(n, 0, "evaluate allocated for {host} {port} {addrs:?}");
            drop(decision);
            let mut precheck = None;
            let n = allocations_during(|| {
                precheck = Some(policy.precheck(&Request {
                    protocol,
                    host,
                    port: *port,
                    addrs: &[],
                    client: None,
                    identity,
                }))
            });
            assert_eq!(n, 0, "precheck allocated for {host} {port}");
            drop(precheck);
        }
    }
}

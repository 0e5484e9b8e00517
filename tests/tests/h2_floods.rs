//! HTTP/2 attacks, sent for real, each on its own connection; the exact
//! GOAWAY code is asserted, and a normal client on another connection
//! still gets a working CONNECT tunnel afterwards (README "HTTP/2 memory and
//! floods"):
//!
//! * PING, SETTINGS and PRIORITY floods: our flood
//!   guard (`[limits] h2_control_frames_per_s` / `_burst`, defaults) answers
//!   GOAWAY ENHANCE_YOUR_CALM "control frame flood", counted in
//!   `bauta_protocol_floods_total{front="h2",frame=…}` — over TLS (ALPN h2,
//!   no secondary certificates), h2c by prior knowledge on an h2-only
//!   plaintext listener, and h2c on a sniffed listener that also serves
//!   HTTP/1.1 (which still works there).
//! * Rapid reset (CVE-2023-44487, HEADERS + RST_STREAM in a loop), a
//!   CONTINUATION flood (HEADERS without END_HEADERS, then CONTINUATION
//!   frames without end) and empty DATA frames: h2's own limits, on in our
//!   configuration, answer GOAWAY ENHANCE_YOUR_CALM and close.

use std::net::SocketAddr;
use std::time::Duration;

use bauta_tests::h2_raw::{self, GoAway, ENHANCE_YOUR_CALM};
use bauta_tests::masque::metric;
use bauta_tests::*;
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(40);
/// How long an attack may run before the GOAWAY must have come.
const ATTACK: Duration = Duration::from_secs(15);
const FLOODS: &str = "bauta_protocol_floods_total";

struct Env {
    certs: Certs,
    proxy: TestProxy,
    echo: EchoServer,
}

impl Env {
    async fn start() -> Env {
        let certs = make_certs();
        let extra = format!(
            "[[listener]]\nname = \"h2c\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"h2\"]\n\n\
             [[listener]]\nname = \"sniffed\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\", \"h2\"]\n\n\
             {ALLOW_LOOPBACK}"
        );
        let proxy = start_proxy_tls(&certs, &extra).await;
        Env {
            certs,
            proxy,
            echo: EchoServer::start().await,
        }
    }

    fn echo_authority(&self) -> String {
        format!("127.0.0.1:{}", self.echo.port())
    }

    /// A normal HTTP/2 client (TLS, ALPN h2) gets a working tunnel.
    async fn assert_normal_client_served(&self) {
        let tls = tls_connect(self.proxy.secure(), &self.certs, &[b"h2"]).await;
        let client = h2_client(tls).await;
        let (parts, tunnel) = h2_connect(&client, &self.echo_authority()).await;
        assert_eq!(parts.status, 200, "CONNECT after the attack");
        let mut tunnel = tunnel.expect("tunnel");
        tunnel.assert_echo(b"still served").await;
        // And h2c on the h2-only listener.
        let tcp = TcpStream::connect(self.proxy.listener("h2c"))
            .await
            .expect("connect h2c");
        let client = h2_client(tcp).await;
        let (parts, tunnel) = h2_connect(&client, &self.echo_authority()).await;
        assert_eq!(parts.status, 200, "h2c CONNECT after the attack");
        tunnel.expect("tunnel").assert_echo(b"h2c too").await;
    }

    /// Waits (bounded) until the flood of `frame` has been counted `n` times.
    async fn assert_counted(&self, frame: &str, n: f64) {
        let labels = [("front", "h2"), ("frame", frame)];
        for _ in 0..100 {
            let text = fetch_metrics(self.proxy.admin).await;
            if metric(&text, FLOODS, &labels) >= n {
                assert_eq!(metric(&text, FLOODS, &labels), n, "{frame}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let text = fetch_metrics(self.proxy.admin).await;
        panic!(
            "{FLOODS}{{frame={frame}}} = {}, want {n}",
            metric(&text, FLOODS, &labels)
        );
    }
}

fn assert_calm(goaway: Option<GoAway>, what: &str, debug: &str) {
    let goaway = goaway.unwrap_or_else(|| panic!("{what}: no GOAWAY within {ATTACK:?}"));
    assert_eq!(
        goaway.code, ENHANCE_YOUR_CALM,
        "{what}: GOAWAY code (ENHANCE_YOUR_CALM): {goaway:?}"
    );
    assert!(
        goaway.debug.contains(debug),
        "{what}: GOAWAY debug data {:?} should contain {debug:?}",
        goaway.debug
    );
}

async fn h2c(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_end_in_goaway_enhance_your_calm() {
    bounded_for(LIMIT, async {
        let env = Env::start().await;
        // The series exist at 0 before any flood.
        let text = fetch_metrics(env.proxy.admin).await;
        for frame in ["ping", "settings", "priority", "empty"] {
            assert_eq!(
                metric(&text, FLOODS, &[("front", "h2"), ("frame", frame)]),
                0.0
            );
        }

        // PING flood over TLS (ALPN h2, no secondary certificates).
        let tls = tls_connect(env.proxy.secure(), &env.certs, &[b"h2"]).await;
        let goaway =
            h2_raw::flood_until_goaway(tls, h2_raw::hello(&[]), |_| h2_raw::ping(), ATTACK).await;
        assert_calm(goaway, "PING flood over TLS", "control frame flood");
        env.assert_counted("ping", 1.0).await;
        env.assert_normal_client_served().await;

        // SETTINGS flood, h2c by prior knowledge.
        let tcp = h2c(env.proxy.listener("h2c")).await;
        let goaway = h2_raw::flood_until_goaway(
            tcp,
            h2_raw::hello(&[]),
            |_| h2_raw::settings(&[(h2_raw::SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]),
            ATTACK,
        )
        .await;
        assert_calm(goaway, "SETTINGS flood over h2c", "control frame flood");
        env.assert_counted("settings", 1.0).await;
        env.assert_normal_client_served().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_and_empty_frame_floods_on_the_sniffed_listener() {
    bounded_for(LIMIT, async {
        let env = Env::start().await;
        let sniffed = env.proxy.listener("sniffed");
        let tcp = h2c(sniffed).await;
        let goaway = h2_raw::flood_until_goaway(
            tcp,
            h2_raw::hello(&[]),
            |i| {
                let stream = u32::try_from(2 * (i % 1000) + 1).expect("stream id");
                h2_raw::frame(h2_raw::PRIORITY, 0, stream, &[0, 0, 0, 0, 16])
            },
            ATTACK,
        )
        .await;
        assert_calm(
            goaway,
            "PRIORITY flood over sniffed h2c",
            "control frame flood",
        );
        env.assert_counted("priority", 1.0).await;

        // Empty DATA frames on an open tunnel.
        let tcp = h2c(sniffed).await;
        let mut hello = h2_raw::hello(&[]);
        hello.extend(h2_raw::headers(
            1,
            &h2_raw::connect_block(&env.echo_authority()),
            false,
        ));
        let goaway = h2_raw::flood_until_goaway(
            tcp,
            hello,
            |_| h2_raw::frame(h2_raw::DATA, 0, 1, &[]),
            ATTACK,
        )
        .await;
        // h2 counts empty DATA frames itself (100 per connection) before
        // our guard's burst is used up.
        assert_calm(goaway, "empty DATA flood", "too_many_data_frames");

        // HTTP/1.1 on the same sniffed listener is untouched by the guard.
        let (head, mut stream) = connect_h1(sniffed, &env.echo_authority()).await;
        assert_eq!(head.status, 200, "HTTP/1.1 CONNECT on the sniffed listener");
        assert_echo(&mut stream, &h2_raw::ping().repeat(2000)).await;
        env.assert_normal_client_served().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_in_goaway_enhance_your_calm() {
    bounded_for(LIMIT, async {
        let env = Env::start().await;
        let block = h2_raw::connect_block(&env.echo_authority());
        let tls = tls_connect(env.proxy.secure(), &env.certs, &[b"h2"]).await;
        let goaway = h2_raw::flood_until_goaway(
            tls,
            h2_raw::hello(&[]),
            move |i| {
                // Stream ids run out at 2^31: the limit comes long before.
                let stream = u32::try_from(2 * i + 1).expect("stream id");
                let mut out = h2_raw::headers(stream, &block, false);
                out.extend(h2_raw::rst_stream(stream, h2_raw::CANCEL));
                out
            },
            ATTACK,
        )
        .await;
        // h2: more than `max_pending_accept_reset_streams` streams reset
        // before they were accepted.
        assert_calm(goaway, "rapid reset", "too_many_resets");
        env.assert_normal_client_served().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_ends_in_goaway_enhance_your_calm() {
    bounded_for(LIMIT, async {
        let env = Env::start().await;
        let tcp = h2c(env.proxy.listener("h2c")).await;
        let mut hello = h2_raw::hello(&[]);
        hello.extend(h2_raw::frame(
            h2_raw::HEADERS,
            0,
            1,
            &h2_raw::connect_block(&env.echo_authority()),
        ));
        let pad = "a".repeat(1000);
        let goaway = h2_raw::flood_until_goaway(
            tcp,
            hello,
            move |i| {
                let field = h2_raw::literal(0, &format!("x-pad-{i}"), &pad);
                h2_raw::frame(h2_raw::CONTINUATION, 0, 1, &field)
            },
            ATTACK,
        )
        .await;
        // h2 bounds the CONTINUATION frames of one header block.
        assert_calm(goaway, "CONTINUATION flood", "too_many_continuations");
        env.assert_normal_client_served().await;
    })
    .await;
}

//! One client, 8 HTTP/2 connections that grant 2^31-1 windows and never
//! read, each with 128 streams whose upstream sends as fast as it can,
//! cannot push the proxy's RSS past a documented bound (README "HTTP/2
//! memory and floods"): per connection, `[limits] connection_buffer_bytes`
//! (4 MiB by default: windows and h2's per-stream send buffers are sized
//! from it, not from the client's windows) plus a fixed allowance per stream
//! for what is not HTTP/2 buffering (relay buffers, the upstream's HTTP/1.1
//! read buffer, task and stream state).
//!
//! Before the budget, h2 reserved ≈ 400 KB per stream whatever the
//! connection, and the upstream's HTTP/1.1 read buffer grew to ≈ 400 KB: this
//! attack grew RSS by ≈ 500 MiB (CONNECT) and 400–470 MiB (reverse), against
//! ≈ 100 and 35–110 MiB now and a bound of 144 MiB.
//!
//! The real binary is measured (`VmRSS` of the child), CONNECT tunnels over
//! h2c by prior knowledge, and reverse-proxied GETs over TLS (ALPN h2).
//!
//! And the budget is what the proxy advertises: its SETTINGS and first
//! WINDOW_UPDATE follow `[limits]`, not the client's windows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bauta_tests::h2_raw::{self, MAX_WINDOW, SETTINGS_INITIAL_WINDOW_SIZE};
use bauta_tests::readme_env::origin_listener_certs;
use bauta_tests::seccert_env::Pki;
use bauta_tests::*;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(120);
const CONNECTIONS: usize = 8;
/// `h2_max_concurrent_streams`' default.
const STREAMS: u32 = 128;
/// `connection_buffer_bytes`' default.
const BUDGET: u64 = 4 << 20;
/// What one stream may hold besides HTTP/2 buffering: two 16 KiB relay
/// buffers for a tunnel, or the upstream's 32 KiB HTTP/1.1 read buffer and
/// the chunk read before it for a reverse-proxied request, plus task,
/// stream and socket state.
const PER_STREAM: u64 = 96 << 10;
/// Allocator slack, thread stacks and the like.
const SLACK: u64 = 16 << 20;

/// The two attacks run one after the other: each measures one process, and
/// neither should slow the other down on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The documented bound on what the attack may add to the proxy's RSS.
fn bound() -> u64 {
    CONNECTIONS as u64 * (BUDGET + u64::from(STREAMS) * PER_STREAM) + SLACK
}

/// Accepts connections and sends as fast as it can on each: an HTTP/1.1
/// response head announcing a huge body, then the body, without end. It
/// accepts on a thread of its own, so that the writers never keep a
/// connection waiting in the backlog.
struct Firehose {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    writers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Firehose {
    async fn start() -> Firehose {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writers = Arc::new(Mutex::new(Vec::new()));
        let (counter, stopped, tasks) = (
            Arc::clone(&accepted),
            Arc::clone(&stop),
            Arc::clone(&writers),
        );
        let runtime = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = s else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let task = runtime.spawn(async move {
                    let _ = s.set_nonblocking(true);
                    let Ok(mut s) = TcpStream::from_std(s) else {
                        return;
                    };
                    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\n";
                    if s.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 << 10];
                    while s.write_all(&chunk).await.is_ok() {}
                });
                tasks.lock().expect("writers").push(task);
            }
        });
        Firehose {
            addr,
            accepted,
            stop,
            writers,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Firehose {
    fn drop(&mut self) {
        // Wake the accepting thread so that it sees `stop`.
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        for task in self.writers.lock().expect("writers").drain(..) {
            task.abort();
        }
    }
}

/// Resident memory of `pid` in bytes.
fn rss_bytes(pid: u32) -> u64 {
    bauta_tests::faults_env::rss_kib(pid) * 1024
}

/// Waits (bounded) until `n` upstream connections were accepted, then until
/// the RSS stops growing (less than 1 MiB over 2 s); returns it.
async fn settled_rss(proxy: &BautaProcess, firehose: &Firehose, n: usize) -> u64 {
    let pid = proxy.pid;
    for _ in 0..300 {
        if firehose.accepted() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        firehose.accepted() >= n,
        "the attack opened {} of {n} upstream connections",
        firehose.accepted()
    );
    let mut samples = vec![rss_bytes(pid)];
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push(rss_bytes(pid));
        if let [.., a, _, _, b] = samples[..] {
            if b < a + (1 << 20) {
                return b;
            }
        }
    }
    *samples.last().expect("a sample")
}

/// An attacking connection: `streams` (HEADERS frames), opened while the
/// stream windows are 0 so that the proxy takes them all before its socket
/// fills (h2 stops reading while it cannot write); then windows of 2^31-1
/// for every stream and the connection.
fn greedy(streams: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = h2_raw::hello(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]);
    out.extend(h2_raw::window_update(0, MAX_WINDOW - 65_535));
    out.extend(streams.into_iter().flatten());
    out.extend(h2_raw::settings(&[(
        SETTINGS_INITIAL_WINDOW_SIZE,
        MAX_WINDOW,
    )]));
    out
}

/// Writes `bytes` and then holds the connection without ever reading.
async fn open_and_stall<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) {
    io.write_all(bytes).await.expect("write the streams");
    io.flush().await.expect("flush");
}

fn config(dir: &TempDir, firehose: SocketAddr, tls: Option<(&Certs, &str)>) -> std::path::PathBuf {
    let mut text = String::from(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"h2c\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"h2\"]\n\n",
    );
    if let Some((certs, origin)) = tls {
        text.push_str(&format!(
            "[[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"h2\"]\n\
             tls_cert = '{cert}'\ntls_key = '{key}'\n\n\
             [[origin]]\nhost = \"{origin}\"\ncert = '{cert}'\nkey = '{key}'\nupstream = \"http://{firehose}\"\n\n",
            cert = certs.cert_pem.display(),
            key = certs.key_pem.display(),
        ));
    }
    text.push_str(ALLOW_LOOPBACK);
    dir.write("bauta.toml", &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connect_streams_stay_within_the_connection_budget() {
    let _serial = SERIAL.lock().await;
    // Built (once) outside the time bound.
    bauta_bin();
    bounded_for(LIMIT, async {
        init();
        let firehose = Firehose::start().await;
        let dir = TempDir::new("h2-memory-connect");
        let proxy = BautaProcess::start(&config(&dir, firehose.addr, None)).await;
        let base = rss_bytes(proxy.pid);
        let target = format!("127.0.0.1:{}", firehose.addr.port());
        let block = h2_raw::connect_block(&target);
        let mut held = Vec::new();
        for _ in 0..CONNECTIONS {
            let mut tcp = TcpStream::connect(proxy.listener("h2c"))
                .await
                .expect("connect");
            let bytes = greedy((0..STREAMS).map(|i| h2_raw::headers(2 * i + 1, &block, false)));
            open_and_stall(&mut tcp, &bytes).await;
            held.push(tcp);
        }
        let rss = settled_rss(&proxy, &firehose, CONNECTIONS * STREAMS as usize).await;
        let grown = rss.saturating_sub(base);
        eprintln!(
            "CONNECT: RSS {} MiB at start, {} MiB under attack (+{} MiB; bound +{} MiB)",
            base >> 20,
            rss >> 20,
            grown >> 20,
            bound() >> 20
        );
        assert!(
            grown <= bound(),
            "RSS grew by {} MiB under {CONNECTIONS} stalled connections × {STREAMS} CONNECT streams; bound {} MiB",
            grown >> 20,
            bound() >> 20
        );
        drop(held);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reverse_streams_stay_within_the_connection_budget() {
    let _serial = SERIAL.lock().await;
    // Built (once) outside the time bound.
    bauta_bin();
    bounded_for(LIMIT, async {
        init();
        let firehose = Firehose::start().await;
        let pki = Pki::new();
        let (certs, _origin) = origin_listener_certs(&pki, "origin.test");
        let dir = TempDir::new("h2-memory-reverse");
        let path = config(&dir, firehose.addr, Some((&certs, "origin.test")));
        let proxy = BautaProcess::start(&path).await;
        let base = rss_bytes(proxy.pid);
        let block = h2_raw::get_block("origin.test", "/firehose");
        let connector = tokio_rustls::TlsConnector::from(tls_client_config(&certs, &[b"h2"]));
        let mut held = Vec::new();
        for _ in 0..CONNECTIONS {
            let tcp = TcpStream::connect(proxy.listener("secure"))
                .await
                .expect("connect");
            let name = ServerName::try_from("origin.test").expect("server name");
            let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
            let bytes = greedy((0..STREAMS).map(|i| h2_raw::headers(2 * i + 1, &block, true)));
            open_and_stall(&mut tls, &bytes).await;
            held.push(tls);
        }
        let rss = settled_rss(&proxy, &firehose, CONNECTIONS * STREAMS as usize).await;
        let grown = rss.saturating_sub(base);
        eprintln!(
            "reverse: RSS {} MiB at start, {} MiB under attack (+{} MiB; bound +{} MiB)",
            base >> 20,
            rss >> 20,
            grown >> 20,
            bound() >> 20
        );
        assert!(
            grown <= bound(),
            "RSS grew by {} MiB under {CONNECTIONS} stalled connections × {STREAMS} reverse streams; bound {} MiB",
            grown >> 20,
            bound() >> 20
        );
        drop(held);
    })
    .await;
}

#[tokio::test]
async fn advertised_settings_and_windows_follow_the_configured_budget() {
    bounded_for(Duration::from_secs(20), async {
        let proxy = start_proxy_opts(ProxyOpts {
            plain_protocols: &["h2"],
            extra: "[limits]\nh2_max_concurrent_streams = 7\nconnection_buffer_bytes = 1048576\n\
                    max_header_list_size = 8192\n"
                .to_string(),
            ..ProxyOpts::default()
        })
        .await;
        let mut tcp = TcpStream::connect(proxy.plain).await.expect("connect");
        tcp.write_all(&greedy(None)).await.expect("hello");
        let mut settings = None;
        let mut connection_window = None;
        while settings.is_none() || connection_window.is_none() {
            let f = h2_raw::read_frame(&mut tcp).await.expect("a frame");
            match (f.kind, f.stream) {
                (h2_raw::SETTINGS, 0) if f.flags & 1 == 0 => settings = Some(f.settings()),
                (h2_raw::WINDOW_UPDATE, 0) => {
                    let inc = u32::from_be_bytes(f.payload[..4].try_into().expect("4 bytes"));
                    connection_window = Some(65_535 + inc);
                }
                _ => {}
            }
        }
        let settings = settings.expect("SETTINGS");
        // Half of the 1 MiB budget is the receive window.
        for want in [(0x3, 7), (0x4, 512 << 10), (0x6, 8192)] {
            assert!(settings.contains(&want), "{want:?} in {settings:?}");
        }
        assert_eq!(connection_window, Some(512 << 10), "connection window");
        drop(tcp);
        proxy.shutdown().await;
    })
    .await;
}

//! The access log is written by a thread of its own: a log reader that
//! stalls (a full stdout pipe) does not stall the requests, and once it
//! reads again every line is there, in JSON, one per request.

use std::time::Duration;

use bauta_tests::load::targets::FixedOrigin;
use bauta_tests::*;
use tokio::net::TcpStream;

/// Requests sent while nobody reads stdout: about 330 bytes of log each,
/// ten times what a 64 KiB pipe holds.
const REQUESTS: usize = 2_000;
const CONNECTIONS: usize = 4;

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_log_reader_does_not_stall_requests_and_loses_no_line() {
    let bin = bauta_bin(); // built before the clock starts
    assert!(bin.exists());
    bounded_for(Duration::from_secs(90), async {
        let origin = FixedOrigin::start(16).await.expect("origin");
        let dir = TempDir::new("access-log");
        let config = dir.write(
            "bauta.toml",
            &format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
                 [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
                 {ALLOW_LOOPBACK}"
            ),
        );
        let proc = BautaProcess::start(&config).await;
        let proxy = proc.listener("plain");
        proc.pause_stdout();
        let url = format!("http://{}/logged", origin.addr);
        // The requests must all be answered while stdout is not read.
        let sent = tokio::time::timeout(Duration::from_secs(30), async {
            let mut tasks = Vec::new();
            for _ in 0..CONNECTIONS {
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    let s = TcpStream::connect(proxy).await.expect("connect");
                    let mut sender = h1_client(s).await;
                    for _ in 0..REQUESTS / CONNECTIONS {
                        let (parts, body) = h1_send(&mut sender, get_absolute(&url)).await;
                        assert_eq!(parts.status, 200);
                        assert_eq!(body.len(), 16);
                    }
                }));
            }
            for t in tasks {
                t.await.expect("client task");
            }
        })
        .await;
        assert!(
            sent.is_ok(),
            "requests stalled while the access-log reader was stalled"
        );
        proc.resume_stdout();
        let mut seen = 0;
        for _ in 0..200 {
            seen = proc
                .access_log()
                .iter()
                .filter(|v| v["target"].as_str() == Some(origin.addr.to_string().as_str()))
                .count();
            if seen >= REQUESTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, REQUESTS, "one access-log line per request, none lost");
        let line = proc
            .access_log()
            .into_iter()
            .find(|v| v["target"].as_str() == Some(origin.addr.to_string().as_str()))
            .expect("a line");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["method"], "GET", "{line}");
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    })
    .await
}

//! A short soak in the test suite (`tests/soak.sh` runs the long one): all
//! traffic kinds at once with faults and reloads, then nothing corrupted,
//! nothing leaked, fds back to the start's, no ERROR/WARN log line.

use std::time::Duration;

use bauta_tests::bounded_for;
use bauta_tests::soak::{run, SoakOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_soak_loses_nothing() {
    bounded_for(Duration::from_secs(120), async {
        let report = run(SoakOptions {
            duration: Duration::from_secs(20),
            // Debug build, short run: allocator warm-up dominates.
            rss_growth_limit_kib: 64 * 1024,
            max_payload: 128 * 1024,
        })
        .await;
        println!("{}", report.summary());
        assert!(report.ok(), "{}", report.summary());
    })
    .await;
}

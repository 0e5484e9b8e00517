//! `soak [SECONDS] [RSS_GROWTH_LIMIT_MIB]`: the mixed soak of
//! `bauta_tests::soak` against the `bauta` binary that `$BAUTA_BIN` names
//! (tests/soak.sh builds a release one). Prints the figures; exit 0 when
//! nothing was corrupted, leaked or logged as a problem, 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;

use bauta_tests::soak::{run, SoakOptions};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut opts = SoakOptions::default();
    if let Some(s) = args.next() {
        match s.parse::<u64>() {
            Ok(secs) if secs >= 10 => opts.duration = Duration::from_secs(secs),
            _ => {
                eprintln!("usage: soak [SECONDS >= 10] [RSS_GROWTH_LIMIT_MIB]");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(s) = args.next() {
        match s.parse::<u64>() {
            Ok(mib) => opts.rss_growth_limit_kib = mib * 1024,
            Err(_) => {
                eprintln!("usage: soak [SECONDS >= 10] [RSS_GROWTH_LIMIT_MIB]");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run(opts));
    println!("{}", report.summary());
    if report.ok() {
        println!("soak: PASS");
        ExitCode::SUCCESS
    } else {
        println!("soak: FAIL");
        ExitCode::FAILURE
    }
}

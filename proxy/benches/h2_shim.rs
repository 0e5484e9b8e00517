//! The cost of the HTTP/2 secondary-certificate shim on the write path:
//! the same HTTP/2 byte stream (server SETTINGS, then HEADERS and 16 KiB DATA
//! frames, as h2 writes them — one frame per vectored write of header and
//! payload) written straight into a sink and through `h2_shim::wrap` into the
//! same sink, in one run. The summary prints the shim's cost as a ratio.
//!
//! `cargo bench -p bauta --bench h2_shim`.

use std::hint::black_box;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bauta::seccert::h2_shim::{self, FloodLimits, H2ShimConfig};
use bauta::seccert::negotiation::Codepoints;
use criterion::{Criterion, Throughput};
use tokio::io::{AsyncWrite, AsyncWriteExt};

const FRAMES: usize = 256;
const DATA: usize = 16 * 1024;

/// (header, payload) pairs: SETTINGS, one HEADERS, then DATA frames.
fn frames() -> Vec<(Vec<u8>, Vec<u8>)> {
    let head = |len: usize, ty: u8, flags: u8, stream: u32| {
        let mut h = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
        h.extend_from_slice(&stream.to_be_bytes());
        h
    };
    let mut out = vec![
        (head(6, 0x4, 0, 0), vec![0, 3, 0, 0, 0, 100]),
        (head(3, 0x1, 0x4, 1), vec![0x88, 0x5f, 0x00]),
    ];
    for _ in 0..FRAMES {
        out.push((head(DATA, 0x0, 0, 1), vec![0xab; DATA]));
    }
    out
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, frames: &[(Vec<u8>, Vec<u8>)]) {
    for (h, p) in frames {
        let (mut h, mut p) = (&h[..], &p[..]);
        while !h.is_empty() || !p.is_empty() {
            let bufs = [IoSlice::new(h), IoSlice::new(p)];
            let n = match w.write_vectored(&bufs).await {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            let from_h = n.min(h.len());
            h = &h[from_h..];
            p = &p[(n - from_h).min(p.len())..];
        }
    }
    let _ = w.flush().await;
}

fn run_direct(rt: &tokio::runtime::Runtime, frames: &[(Vec<u8>, Vec<u8>)]) {
    rt.block_on(async {
        let mut sink = tokio::io::join(tokio::io::empty(), tokio::io::sink());
        write_all_vectored(&mut sink, black_box(frames)).await;
    })
}

fn run_shim(rt: &tokio::runtime::Runtime, frames: &[(Vec<u8>, Vec<u8>)]) {
    rt.block_on(async {
        let (mut shim, _control) = h2_shim::wrap(
            tokio::io::join(tokio::io::empty(), tokio::io::sink()),
            H2ShimConfig {
                codepoints: Codepoints::default(),
                enabled: true,
                flood: FloodLimits {
                    per_s: 100,
                    burst: 1000,
                },
                max_header_block: 64 * 1024,
            },
        );
        write_all_vectored(&mut shim, black_box(frames)).await;
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let frames = frames();
    let bytes: usize = frames.iter().map(|(h, p)| h.len() + p.len()).sum();
    let mut g = c.benchmark_group("h2_write_path");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("direct", |b| b.iter(|| run_direct(&rt, &frames)));
    g.bench_function("through_shim", |b| b.iter(|| run_shim(&rt, &frames)));
    g.finish();

    // The ratio, from one timing loop over both.
    let secs = if std::env::args().any(|a| a == "--bench") {
        1.0
    } else {
        0.05
    };
    let time = |f: &dyn Fn()| {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_secs_f64(secs) {
            f();
            n += 1;
        }
        start.elapsed().as_secs_f64() / f64::from(n.max(1))
    };
    let direct = time(&|| run_direct(&rt, &frames));
    let shim = time(&|| run_shim(&rt, &frames));
    // Against a null sink the ratio only shows the shim's own work; what
    // matters is the added time per frame and per GiB relayed.
    let added = (shim - direct).max(0.0);
    println!(
        "h2_shim: {} frames, {} KiB per run: direct {:.1} µs, through shim {:.1} µs (ratio {:.2} over a null sink); added {:.0} ns per frame, {:.2} ms CPU per GiB",
        frames.len(),
        bytes / 1024,
        direct * 1e6,
        shim * 1e6,
        shim / direct,
        added * 1e9 / frames.len() as f64,
        added * 1e3 * (1u64 << 30) as f64 / bytes as f64
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}

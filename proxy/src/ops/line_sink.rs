//! Lines written by a thread of their own, so that a request never waits
//! for `write(2)` on a log pipe, and in batches: the first line of a batch
//! wakes the writer, which lets lines gather for [`GATHER`] (or until
//! [`HIGH_WATER`] bytes) and writes them in one call. Under load that is one
//! wake-up and one syscall per batch instead of one per line; a line waits
//! at most [`GATHER`] before it is written.
//!
//! Bounded: when the writer falls `MAX_BACKLOG` bytes behind (the reader of
//! the pipe has stalled), callers wait until it has caught up, as a direct
//! write would have waited — access-log lines are never dropped.
//! [`LineSink::flush`] writes what is pending now and waits until it is
//! written (shutdown).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bytes a stalled writer may fall behind before appends wait.
const MAX_BACKLOG: usize = 4 << 20;
/// How long the lines of a batch may gather before they are written.
pub const GATHER: Duration = Duration::from_millis(10);
/// A batch this large is written at once.
const HIGH_WATER: usize = 64 << 10;

#[derive(Default)]
struct State {
    /// Appended, not yet taken by the writer.
    pending: Vec<u8>,
    /// The writer is writing a batch (taken out of `pending`).
    writing: bool,
    /// The writer is asleep, waiting for a first line.
    idle: bool,
    /// The writer is letting a batch gather.
    gathering: bool,
    /// `flush` wants the pending lines written now.
    flush_now: bool,
    /// The output failed for good: lines are discarded from now on.
    broken: bool,
}

pub struct LineSink {
    state: Mutex<State>,
    /// Lines arrived (the writer waits on it).
    arrived: Condvar,
    /// A batch was written (appenders over the bound and `flush` wait on it).
    written: Condvar,
}

impl LineSink {
    /// Start the writer thread over `out`.
    pub fn spawn<W: Write + Send + 'static>(out: W) -> std::io::Result<Arc<LineSink>> {
        let sink = Arc::new(LineSink {
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            written: Condvar::new(),
        });
        let writer = Arc::clone(&sink);
        std::thread::Builder::new()
            .name("bauta-log-writer".into())
            .spawn(move || writer.run(out))?;
        Ok(sink)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain bytes: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue one line (it must end with its newline).
    pub fn append(&self, line: &[u8]) {
        let mut st = self.lock();
        while st.pending.len() >= MAX_BACKLOG && !st.broken {
            st = self.written.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.broken {
            return;
        }
        st.pending.extend_from_slice(line);
        if st.idle || (st.gathering && st.pending.len() >= HIGH_WATER) {
            st.idle = false;
            self.arrived.notify_one();
        }
    }

    /// Wait until every line appended so far has been written (or the
    /// output has failed).
    pub fn flush(&self) {
        let mut st = self.lock();
        while (!st.pending.is_empty() || st.writing) && !st.broken {
            st.flush_now = true;
            self.arrived.notify_one();
            st = self.written.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn run<W: Write>(&self, mut out: W) {
        let mut batch = Vec::new();
        loop {
            {
                let mut st = self.lock();
                while st.pending.is_empty() {
                    st.idle = true;
                    st = self.arrived.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                st.idle = false;
                // Let the batch gather.
                let until = Instant::now() + GATHER;
                st.gathering = true;
                while st.pending.len() < HIGH_WATER && !st.flush_now {
                    let Some(left) = until.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    st = match self.arrived.wait_timeout(st, left) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                st.gathering = false;
                st.flush_now = false;
                std::mem::swap(&mut batch, &mut st.pending);
                st.writing = true;
            }
            let ok = out.write_all(&batch).and_then(|()| out.flush()).is_ok();
            batch.clear();
            // Give back a buffer a burst made large.
            if batch.capacity() > MAX_BACKLOG {
                batch = Vec::new();
            }
            let mut st = self.lock();
            st.writing = false;
            if !ok {
                // stdout closed (EPIPE): nobody reads the log any more.
                st.broken = true;
                st.pending = Vec::new();
            }
            self.written.notify_all();
            if st.broken {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Collects what the writer writes, counting write calls.
    #[derive(Clone, Default)]
    struct Collect {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
    }

    impl Write for Collect {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.bytes.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_in_order_after_flush() {
        let out = Collect::default();
        let sink = LineSink::spawn(out.clone()).expect("spawn");
        let mut want = Vec::new();
        for i in 0..10_000 {
            let line = format!("line {i}\n");
            sink.append(line.as_bytes());
            want.extend_from_slice(line.as_bytes());
        }
        sink.flush();
        assert_eq!(*out.bytes.lock().expect("lock"), want);
        // 10,000 lines appended at once: a handful of batches.
        let writes = out.writes.load(Ordering::Relaxed);
        assert!(writes <= 10, "{writes} writes");
    }

    #[test]
    fn a_lone_line_is_written_within_the_gather_time() {
        let out = Collect::default();
        let sink = LineSink::spawn(out.clone()).expect("spawn");
        sink.append(b"alone\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.bytes.lock().expect("lock").is_empty() {
            assert!(Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(*out.bytes.lock().expect("lock"), b"alone\n");
    }

    #[test]
    fn lines_from_many_threads_stay_whole() {
        let out = Collect::default();
        let sink = LineSink::spawn(out.clone()).expect("spawn");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        sink.append(format!("t{t} {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        sink.flush();
        let text = String::from_utf8(out.bytes.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8_000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("t{t} ")))
                .map(|n| n.parse().expect("number"))
                .collect();
            assert_eq!(mine, (0..2_000).collect::<Vec<_>>(), "thread {t} in order");
        }
    }

    /// A writer that blocks until released: appends past the bound wait,
    /// nothing is lost.
    #[test]
    fn a_stalled_output_holds_appends_back_and_loses_nothing() {
        struct Gate {
            open: Arc<(Mutex<bool>, Condvar)>,
            inner: Collect,
        }
        impl Write for Gate {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let (m, c) = &*self.open;
                let mut open = m.lock().expect("lock");
                while !*open {
                    open = c.wait(open).expect("wait");
                }
                self.inner.write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let inner = Collect::default();
        let sink = LineSink::spawn(Gate {
            open: Arc::clone(&open),
            inner: inner.clone(),
        })
        .expect("spawn");
        let line = vec![b'x'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        let appended = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (sink, appended, line) = (Arc::clone(&sink), Arc::clone(&appended), line.clone());
            std::thread::spawn(move || {
                for _ in 0..(3 * MAX_BACKLOG / 1024) {
                    sink.append(&line);
                    appended.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // The producer stops at the bound while the output is stalled.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let held = appended.load(Ordering::Relaxed);
        assert!(held < 3 * MAX_BACKLOG / 1024, "appends wait at the bound");
        assert!(
            held * 1024 >= MAX_BACKLOG / 2,
            "but only at the bound: {held}"
        );
        {
            let (m, c) = &*open;
            *m.lock().expect("lock") = true;
            c.notify_all();
        }
        producer.join().expect("join");
        sink.flush();
        assert_eq!(inner.bytes.lock().expect("lock").len(), 3 * MAX_BACKLOG);
    }

    #[test]
    fn a_broken_output_discards_instead_of_blocking() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = LineSink::spawn(Broken).expect("spawn");
        sink.append(b"first\n");
        sink.flush();
        for _ in 0..(2 * MAX_BACKLOG / 6) {
            sink.append(b"again\n");
        }
        sink.flush();
    }
}

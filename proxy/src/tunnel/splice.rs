//! Zero-copy relay between two plain TCP sockets (Linux): each direction
//! moves bytes socket → pipe → socket with splice(2), so they never enter
//! user space. A direction holds a pipe only while it has bytes in flight;
//! when its source has nothing to read it gives the (empty) pipe back to a
//! small process-wide pool, so an idle tunnel costs no pipe, no buffer and
//! no extra file descriptor.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::ops::metrics::SPLICE_PIPES_POOLED;

/// The most one splice call is asked to move; the pipe's capacity (64 KiB
/// by default) bounds what it takes from the socket.
const CHUNK: usize = 1 << 20;
/// Empty pipes kept for the next busy direction: enough for the tunnels
/// that are busy at once on a loaded proxy, few enough that an idle proxy
/// holds at most 2 × this many descriptors for them.
const POOL_MAX: usize = 64;
/// The user-space buffer of one turn when no pipe can be had.
const FALLBACK_BUFFER: usize = 16 * 1024;

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// Which side of one direction failed.
#[derive(Debug)]
pub enum Failure {
    /// Reading the source socket (or getting a pipe for it).
    Source(io::Error),
    /// Writing to, or shutting down, the destination socket.
    Sink(io::Error),
}

/// A kernel pipe: the buffer of one direction while bytes are in flight.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn take() -> io::Result<Pipe> {
        #[cfg(test)]
        if NO_PIPES.load(Ordering::Relaxed) {
            return Err(nix::errno::Errno::EMFILE.into());
        }
        if let Ok(mut pool) = POOL.lock() {
            if let Some(p) = pool.pop() {
                SPLICE_PIPES_POOLED.store(pool.len(), Ordering::Relaxed);
                return Ok(p);
            }
        }
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Pipe { read, write })
    }

    /// Only an empty pipe may be given back: one that still holds bytes is
    /// dropped (closed) instead.
    fn give_back(self) {
        if let Ok(mut pool) = POOL.lock() {
            if pool.len() < POOL_MAX {
                pool.push(self);
                SPLICE_PIPES_POOLED.store(pool.len(), Ordering::Relaxed);
            }
        }
    }
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

/// Move bytes from `src` to `dst` until `src` ends (then shut `dst`'s
/// write side, as a FIN passes through) or either fails. `moved` is told
/// each chunk's size as it is read.
pub async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    mut moved: impl FnMut(u64),
) -> Result<(), Failure> {
    loop {
        src.readable().await.map_err(Failure::Source)?;
        let pipe = match Pipe::take() {
            Ok(pipe) => pipe,
            // Out of descriptors for a pipe (EMFILE, ENFILE): this turn
            // copies through user space instead of failing the tunnel.
            Err(_) => match copy_ready(src, dst, &mut moved).await? {
                Ready::Ended => return finish(dst),
                Ready::Drained => continue,
            },
        };
        loop {
            let read = src.try_io(Interest::READABLE, || {
                splice(src.as_fd(), None, pipe.write.as_fd(), None, CHUNK, FLAGS)
                    .map_err(io::Error::from)
            });
            let n = match read {
                Ok(0) => {
                    pipe.give_back();
                    return finish(dst);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Drained for now: the pipe is empty, give it back.
                    pipe.give_back();
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Source(e)),
            };
            moved(n as u64);
            drain(&pipe, n, dst).await?;
        }
    }
}

/// The source ended: pass the FIN on.
fn finish(dst: &TcpStream) -> Result<(), Failure> {
    match shutdown(dst.as_raw_fd(), Shutdown::Write) {
        // The destination is already gone: its own direction reports that.
        Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(Failure::Sink(e.into())),
    }
}

/// What [`copy_ready`] found at the source.
enum Ready {
    /// Nothing more to read for now.
    Drained,
    /// End of stream.
    Ended,
}

/// Copy what `src` has ready to `dst` through a user-space buffer: the
/// fallback when no pipe can be had.
async fn copy_ready(
    src: &TcpStream,
    dst: &TcpStream,
    moved: &mut impl FnMut(u64),
) -> Result<Ready, Failure> {
    let mut buf = vec![0u8; FALLBACK_BUFFER];
    loop {
        match src.try_read(&mut buf) {
            Ok(0) => return Ok(Ready::Ended),
            Ok(n) => {
                moved(n as u64);
                write_all(dst, &buf[..n]).await.map_err(Failure::Sink)?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Ready::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::Source(e)),
        }
    }
}

/// Write the `left` bytes the pipe holds to `dst`.
async fn drain(pipe: &Pipe, mut left: usize, dst: &TcpStream) -> Result<(), Failure> {
    while left > 0 {
        dst.writable().await.map_err(Failure::Sink)?;
        let wrote = dst.try_io(Interest::WRITABLE, || {
            splice(pipe.read.as_fd(), None, dst.as_fd(), None, left, FLAGS).map_err(io::Error::from)
        });
        match wrote {
            Ok(0) => return Err(Failure::Sink(io::ErrorKind::WriteZero.into())),
            Ok(m) => left -= m,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(Failure::Sink(e)),
        }
    }
    Ok(())
}

/// Write `bytes` (what the client sent before the tunnel began) to `dst`.
pub async fn write_all(dst: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        dst.writable().await?;
        match dst.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Empty pipes in the pool now (tests).
#[cfg(test)]
pub fn pooled() -> usize {
    POOL.lock().map(|p| p.len()).unwrap_or(0)
}

/// Tests: `Pipe::take` fails as if the process were out of descriptors.
#[cfg(test)]
pub static NO_PIPES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tests that look at the pool (or set `NO_PIPES`) take this first: both
/// are process-wide.
#[cfg(test)]
pub static TEST_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

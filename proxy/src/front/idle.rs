//! Is a client connection carrying anything? Each request (until its
//! response body is sent) and each tunnel (until it ends) holds a [`Busy`]
//! guard; [`Activity::idle_for`] resolves once the connection has had none
//! for the whole client idle timeout (`[limits] client_idle_timeout_s`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::body::{Body, BoxError};

/// One connection's requests and tunnels in progress.
pub struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    busy: usize,
    /// When `busy` last became 0 (or the connection started).
    idle_since: Instant,
}

/// A request or tunnel in progress; the connection is idle again when the
/// last one is dropped.
pub struct Busy {
    activity: Arc<Activity>,
}

// === impl Activity ===

impl Activity {
    /// A connection starting now, idle.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State {
                busy: 0,
                idle_since: Instant::now(),
            }),
            changed: Notify::new(),
        })
    }

    pub fn busy(self: &Arc<Self>) -> Busy {
        self.lock().busy += 1;
        self.changed.notify_waiters();
        Busy {
            activity: Arc::clone(self),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.lock().busy == 0
    }

    /// Resolves when nothing has been in progress for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let deadline = {
                let s = self.lock();
                (s.busy == 0).then(|| s.idle_since + timeout)
            };
            match deadline {
                Some(at) if at <= Instant::now() => return,
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut s = self.activity.lock();
            s.busy = s.busy.saturating_sub(1);
            if s.busy == 0 {
                s.idle_since = Instant::now();
            }
        }
        self.activity.changed.notify_waiters();
    }
}

/// `body`, keeping the connection busy until it is sent (or dropped).
pub fn hold(body: Body, busy: Busy) -> Body {
    Held { body, _busy: busy }.boxed()
}

struct Held {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_guard_plus_the_timeout() {
        let a = Activity::new();
        let t = Duration::from_secs(10);
        let busy = a.busy();
        let waiting = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.idle_for(t).await }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiting.is_finished(), "busy: never idle");
        drop(busy);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!waiting.is_finished(), "idle 9 s of 10");
        let again = a.busy();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(again);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(
            !waiting.is_finished(),
            "the timer restarts at the last guard"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(waiting.is_finished());
        assert!(a.is_idle());
    }
}

//! Answers that finish later ([`crate::Responder::send_later`]): the futures that produce
//! them are polled by the lane reader that received their asks, so that waiting for an
//! actor's answer needs no task of its own (a spawn per ask, and the wake-up of that task
//! on its own worker, cost more than the wait).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;

/// A reply in progress: it sends its answer through the responder it owns.
pub(crate) type ReplyFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where responders hand their futures to the reader that created them. Its size is bounded
/// by the lane's reply slots: every future owns a responder, and every responder a slot.
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    /// Set after every push, before the wake: while it is clear (and nothing runs) the
    /// reader's poll has nothing to do and takes no lock.
    queued: AtomicBool,
}

struct Queue {
    /// `None` once the reader is gone.
    futures: Option<Vec<ReplyFuture>>,
    /// The reader's waker. Kept, not taken, by a push's wake, so that a reader that saw
    /// nothing queued can rely on the next push waking it.
    reader: Option<Waker>,
}

impl Inbox {
    /// Hands `f` to the reader; gives it back when the reader is gone.
    pub(crate) fn push(&self, f: ReplyFuture) -> Result<(), ReplyFuture> {
        let reader = {
            let mut q = self.queue.lock();
            match q.futures.as_mut() {
                Some(v) => v.push(f),
                None => return Err(f),
            }
            q.reader.clone()
        };
        self.queued.store(true, Ordering::Release);
        if let Some(w) = reader {
            w.wake();
        }
        Ok(())
    }
}

/// The reader's side: the replies in progress it polls.
pub(crate) struct Replies {
    inbox: Arc<Inbox>,
    running: FuturesUnordered<ReplyFuture>,
    /// The waker this reader last put in the inbox.
    last: Option<Waker>,
}

impl Replies {
    pub(crate) fn new() -> Self {
        Self {
            inbox: Arc::new(Inbox {
                queue: Mutex::new(Queue {
                    futures: Some(Vec::new()),
                    reader: None,
                }),
                queued: AtomicBool::new(false),
            }),
            running: FuturesUnordered::new(),
            last: None,
        }
    }

    /// What responders created by this reader push to.
    pub(crate) fn inbox(&self) -> Arc<Inbox> {
        self.inbox.clone()
    }

    /// Takes new futures and polls those that were woken; wakes `cx` for more.
    fn poll(&mut self, cx: &mut Context<'_>) {
        // The reader polls here at every read: in the common case (no `send_later` in
        // flight) this is one load, not a lock and a waker registration.
        let queued = self.inbox.queued.load(Ordering::Acquire);
        if !queued && self.running.is_empty() && self.registered(cx.waker()) {
            return;
        }
        // Cleared before the queue is drained: a push after the drain sets it again.
        self.inbox.queued.store(false, Ordering::Release);
        let changed = !self.registered(cx.waker());
        {
            let mut q = self.inbox.queue.lock();
            if changed {
                q.reader = Some(cx.waker().clone());
            }
            if let Some(v) = q.futures.as_mut() {
                self.running.extend(v.drain(..));
            }
        }
        if changed {
            self.last = Some(cx.waker().clone());
        }
        // Ready(None) once empty; Pending when the rest wait (or it yielded after a long
        // run, having woken this task again).
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
    }

    /// Whether the inbox holds `waker` (then a push wakes this reader). Read without the lock
    /// through a copy the reader keeps: only the reader writes the inbox's waker.
    fn registered(&mut self, waker: &Waker) -> bool {
        self.last.as_ref().is_some_and(|w| w.will_wake(waker))
    }

    /// Awaits `fut` while polling the replies in progress: every wait of the reader goes
    /// through here, so that a reader waiting for a reply slot (which only replies free)
    /// still sends them.
    pub(crate) async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            self.poll(cx);
            fut.as_mut().poll(cx)
        })
        .await
    }

    /// Waits until every reply in progress has been sent (each bounds its own wait).
    pub(crate) async fn finish(&mut self) {
        poll_fn(|cx| {
            self.poll(cx);
            let idle = self.running.is_empty()
                && self
                    .inbox
                    .queue
                    .lock()
                    .futures
                    .as_ref()
                    .is_none_or(Vec::is_empty);
            if idle { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        // Dropped outside the lock: each future's responder answers `ActorStopped` (which
        // goes nowhere once the connection is closed).
        let left = {
            let mut q = self.inbox.queue.lock();
            q.reader = None;
            q.futures.take()
        };
        drop(left);
    }
}

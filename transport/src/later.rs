//! Answers that finish later ([`crate::Responder::send_later`]): the futures that produce
//! them are polled by the lane reader that received their asks, so that waiting for an
//! actor's answer needs no task of its own (a spawn per ask, and the wake-up of that task
//! on its own worker, cost more than the wait).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use parking_lot::Mutex;

/// A reply in progress: it sends its answer through the responder it owns.
pub(crate) type ReplyFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where responders hand their futures to the reader that created them. Its size is bounded
/// by the lane's reply slots: every future owns a responder, and every responder a slot.
pub(crate) struct Inbox {
    /// `None` once the reader is gone.
    queue: Mutex<Option<Vec<ReplyFuture>>>,
    reader: AtomicWaker,
}

impl Inbox {
    /// Hands `f` to the reader; gives it back when the reader is gone.
    pub(crate) fn push(&self, f: ReplyFuture) -> Result<(), ReplyFuture> {
        match self.queue.lock().as_mut() {
            Some(q) => q.push(f),
            None => return Err(f),
        }
        self.reader.wake();
        Ok(())
    }
}

/// The reader's side: the replies in progress it polls.
pub(crate) struct Replies {
    inbox: Arc<Inbox>,
    running: FuturesUnordered<ReplyFuture>,
}

impl Replies {
    pub(crate) fn new() -> Self {
        Self {
            inbox: Arc::new(Inbox {
                queue: Mutex::new(Some(Vec::new())),
                reader: AtomicWaker::new(),
            }),
            running: FuturesUnordered::new(),
        }
    }

    /// What responders created by this reader push to.
    pub(crate) fn inbox(&self) -> Arc<Inbox> {
        self.inbox.clone()
    }

    /// Takes new futures and polls those that were woken; wakes `cx` for more.
    fn poll(&mut self, cx: &mut Context<'_>) {
        self.inbox.reader.register(cx.waker());
        if let Some(q) = self.inbox.queue.lock().as_mut() {
            self.running.extend(q.drain(..));
        }
        // Ready(None) once empty; Pending when the rest wait (or it yielded after a long
        // run, having woken this task again).
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
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
                && self.inbox.queue.lock().as_ref().is_none_or(Vec::is_empty);
            if idle { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        // Dropped outside the lock: each future's responder answers `ActorStopped` (which
        // goes nowhere once the connection is closed).
        let left = self.inbox.queue.lock().take();
        drop(left);
    }
}

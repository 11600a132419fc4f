//! Unit tests of the mailbox: bound, control lane, batches, spares, wake-ups.

use std::time::Duration;

use super::*;
use crate::envelope::TellEnvelope;
use crate::{Actor, Context, Handler, Message};

struct A;
impl Actor for A {}
struct M(u32);
impl Message for M {
    type Reply = ();
}
impl Handler<M> for A {
    async fn handle(&mut self, _: M, _: &mut Context<Self>) {}
}

fn env(i: u32) -> M {
    M(i)
}

impl Mailbox<A> {
    fn try_push_m(&self, m: M) -> Result<(), PushError<M>> {
        self.try_push::<TellEnvelope<M>>(m)
    }
}

/// The payload of a popped user message (panics on a control message).
fn payload(item: Option<Item<A>>) -> u32 {
    match item {
        Some(Item::Msg(e)) => {
            let Ok(e) = e.recycle().downcast::<TellEnvelope<M>>() else {
                panic!("expected an M");
            };
            e.0.expect("not yet handled").0
        }
        Some(Item::Control(c)) => panic!("expected a user message, got {c:?}"),
        None => panic!("expected a user message, got nothing"),
    }
}

#[test]
fn bounded_and_control_first() {
    let mb = Arc::new(Mailbox::<A>::new(1, 2));
    let mut batch = Batch::default();
    assert!(mb.try_push_m(env(1)).is_ok());
    assert!(mb.try_push_m(env(2)).is_ok());
    assert!(matches!(mb.try_push_m(env(3)), Err(PushError::Full(_))));
    mb.push_control(Control::Restart);
    assert!(matches!(
        mb.try_recv(&mut batch, true),
        Some(Item::Control(Control::Restart))
    ));
    assert!(mb.try_recv(&mut batch, false).is_none());
    assert_eq!(payload(mb.try_recv(&mut batch, true)), 1);
    // A stop closes the mailbox at once, before the actor reads it.
    mb.push_control(Control::Stop);
    assert!(matches!(mb.try_push_m(env(4)), Err(PushError::Closed(_))));
    assert!(matches!(
        mb.try_recv(&mut batch, true),
        Some(Item::Control(Control::Stop))
    ));
    assert_eq!(mb.len(), 1);
    batch.clear();
    mb.mark_terminated();
    assert_eq!(mb.len(), 0);
    assert!(mb.is_terminated());
}

#[test]
fn fifo_across_batches_and_refills() {
    let mb = Arc::new(Mailbox::<A>::new(1, 1000));
    let mut batch = Batch::default();
    let mut next_in = 0;
    let mut next_out = 0;
    // Pushes and pops interleave so that refills meet a queue that grew meanwhile.
    for round in 0..20 {
        for _ in 0..(round * 7 % 150) {
            assert!(mb.try_push_m(env(next_in)).is_ok());
            next_in += 1;
        }
        for _ in 0..(round * 5 % 90) {
            if next_out == next_in {
                break;
            }
            assert_eq!(payload(mb.try_recv(&mut batch, true)), next_out);
            next_out += 1;
        }
    }
    while next_out < next_in {
        assert_eq!(payload(mb.try_recv(&mut batch, true)), next_out);
        next_out += 1;
    }
    assert!(mb.try_recv(&mut batch, true).is_none());
    assert_eq!(mb.len(), 0);
}

#[test]
fn the_batch_counts_against_capacity_until_the_next_refill() {
    let cap = 100;
    let mb = Arc::new(Mailbox::<A>::new(1, cap));
    let mut batch = Batch::default();
    for i in 0..cap as u32 {
        assert!(mb.try_push_m(env(i)).is_ok());
    }
    assert!(matches!(mb.try_push_m(env(999)), Err(PushError::Full(_))));
    // The first pop takes one message and a batch of TAKE more.
    assert_eq!(payload(mb.try_recv(&mut batch, true)), 0);
    assert_eq!(mb.len(), cap - 1);
    assert!(mb.try_push_m(env(100)).is_ok());
    assert!(matches!(mb.try_push_m(env(999)), Err(PushError::Full(_))));
    // Pops from the batch free no room: the bound holds at every step.
    for i in 1..=TAKE as u32 {
        assert_eq!(payload(mb.try_recv(&mut batch, true)), i);
        assert!(matches!(mb.try_push_m(env(999)), Err(PushError::Full(_))));
        assert!(mb.len() <= cap);
    }
    // The next pop returns the spent batch's room.
    assert_eq!(payload(mb.try_recv(&mut batch, true)), TAKE as u32 + 1);
    assert_eq!(mb.len(), cap - TAKE - 1);
    for i in 0..=TAKE as u32 {
        assert!(mb.try_push_m(env(101 + i)).is_ok());
    }
    assert!(matches!(mb.try_push_m(env(999)), Err(PushError::Full(_))));
    // Everything comes out once, in order.
    for i in TAKE as u32 + 2..=101 + TAKE as u32 {
        assert_eq!(payload(mb.try_recv(&mut batch, true)), i);
    }
    assert!(mb.try_recv(&mut batch, true).is_none());
}

struct Other;
impl Message for Other {
    type Reply = ();
}
impl Handler<Other> for A {
    async fn handle(&mut self, _: Other, _: &mut Context<Self>) {}
}

#[test]
fn spent_envelopes_are_reused_by_senders_of_their_type() {
    let mb = Arc::new(Mailbox::<A>::new(1, 16));
    let mut batch = Batch::default();
    let spares = |mb: &Mailbox<A>| mb.state.lock().spare.len();
    for i in 0..3 {
        assert!(mb.try_push_m(env(i)).is_ok());
    }
    for _ in 0..3 {
        let Some(Item::Msg(e)) = mb.try_recv(&mut batch, true) else {
            panic!("expected a user message");
        };
        batch.spend(e.recycle());
    }
    assert_eq!(spares(&mb), 0, "spent envelopes wait for the next lock");
    assert!(mb.try_recv(&mut batch, true).is_none());
    assert_eq!(spares(&mb), 3);
    // Another message type allocates afresh; the same type refills a spare.
    assert!(mb.try_push::<TellEnvelope<Other>>(Other).is_ok());
    assert_eq!(spares(&mb), 3);
    assert!(mb.try_push_m(env(7)).is_ok());
    assert_eq!(spares(&mb), 2);
    assert!(matches!(mb.try_recv(&mut batch, true), Some(Item::Msg(_))));
    assert_eq!(payload(mb.try_recv(&mut batch, true)), 7);
    // An idle mailbox keeps only a few spares; a stopped one none.
    for _ in 0..40 {
        assert!(mb.try_push_m(env(1)).is_ok());
        let Some(Item::Msg(e)) = mb.try_recv(&mut batch, true) else {
            panic!("expected a user message");
        };
        batch.spend(e.recycle());
    }
    assert!(mb.try_recv(&mut batch, true).is_none());
    assert!(spares(&mb) <= SPARE_IDLE);
    mb.mark_terminated();
    assert_eq!(spares(&mb), 0);
}

#[test]
fn control_overtakes_a_taken_batch() {
    let mb = Arc::new(Mailbox::<A>::new(1, 64));
    let mut batch = Batch::default();
    for i in 0..10 {
        assert!(mb.try_push_m(env(i)).is_ok());
    }
    assert_eq!(payload(mb.try_recv(&mut batch, true)), 0);
    mb.push_control(Control::ChildTerminated { id: 7 });
    mb.push_control(Control::Restart);
    assert!(matches!(
        mb.try_recv(&mut batch, true),
        Some(Item::Control(Control::ChildTerminated { id: 7 }))
    ));
    assert!(matches!(
        mb.try_recv(&mut batch, true),
        Some(Item::Control(Control::Restart))
    ));
    // A suspended receiver gets nothing from its batch, and its batch keeps its room.
    assert!(mb.try_recv(&mut batch, false).is_none());
    assert_eq!(mb.len(), 9);
    for i in 1..10 {
        assert_eq!(payload(mb.try_recv(&mut batch, true)), i);
    }
    assert!(mb.try_recv(&mut batch, true).is_none());
    assert_eq!(mb.len(), 0);
}

/// Senders contending for a tiny mailbox, some waiting with `push`, some with
/// `try_push` plus `wait_room` under a timeout that gets cancelled; the receiver parks
/// whenever it runs dry. Every message must arrive once, in per-sender order, without
/// anyone sleeping forever (a lost wake-up would trip the deadline).
#[test]
fn no_lost_wake_ups_under_contention() {
    const SENDERS: u32 = 4;
    const EACH: u32 = 20_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for cap in [1, 3, 70] {
        rt.block_on(async {
            let mb = Arc::new(Mailbox::<A>::new(1, cap));
            let receiver = {
                let mb = mb.clone();
                tokio::spawn(async move {
                    let mut batch = Batch::default();
                    let mut next = [0u32; SENDERS as usize];
                    for _ in 0..SENDERS * EACH {
                        let v = payload(Some(mb.recv(&mut batch, true).await));
                        let (s, seq) = ((v / EACH) as usize, v % EACH);
                        assert_eq!(seq, next[s], "sender {s} out of order");
                        next[s] += 1;
                        assert!(mb.len() <= cap);
                    }
                    // Coming back for more returns the last batch's room.
                    assert!(mb.try_recv(&mut batch, true).is_none());
                    assert_eq!(mb.len(), 0);
                })
            };
            let senders: Vec<_> = (0..SENDERS)
                .map(|s| {
                    let mb = mb.clone();
                    tokio::spawn(async move {
                        for seq in 0..EACH {
                            let mut e = env(s * EACH + seq);
                            if s % 2 == 0 {
                                assert!(mb.push::<TellEnvelope<M>>(e).await.is_ok());
                                continue;
                            }
                            loop {
                                match mb.try_push_m(e) {
                                    Ok(()) => break,
                                    Err(PushError::Full(back)) => e = back,
                                    Err(PushError::Closed(_)) => panic!("closed"),
                                }
                                // Half of these waits are abandoned at once.
                                if seq % 2 == 0 {
                                    let _ =
                                        tokio::time::timeout(Duration::ZERO, mb.wait_room()).await;
                                } else {
                                    mb.wait_room().await;
                                }
                            }
                        }
                    })
                })
                .collect();
            let all = async {
                for s in senders {
                    s.await.unwrap();
                }
                receiver.await.unwrap();
            };
            tokio::time::timeout(Duration::from_secs(120), all)
                .await
                .expect("every sender and the receiver finished (no lost wake-up)");
        });
    }
}

/// The lock under oversubscription: sender tasks on 2 workers plus sender OS threads (more
/// runnable threads than the machine has cores, so lock holders get preempted), a
/// 4-message mailbox, control messages pushed in between, and a receiver that parks
/// whenever it runs dry. Every user message arrives exactly once and in per-sender order,
/// every control message arrives, the bound holds at every observation, and nobody hangs.
#[test]
fn many_senders_on_threads_and_tasks_keep_the_bound() {
    const TASKS: u32 = 12;
    const THREADS: u32 = 4;
    const EACH: u32 = 5_000;
    /// Each sender also pushes a control message every this many messages.
    const CONTROL_EVERY: u32 = 50;
    const CAP: usize = 4;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mb = Arc::new(Mailbox::<A>::new(1, CAP));
    let senders = TASKS + THREADS;
    let controls_expected = senders * EACH / CONTROL_EVERY;
    let threads: Vec<_> = (TASKS..senders)
        .map(|s| {
            let mb = mb.clone();
            std::thread::spawn(move || {
                for seq in 0..EACH {
                    let mut e = env(s * EACH + seq);
                    loop {
                        match mb.try_push_m(e) {
                            Ok(()) => break,
                            Err(PushError::Full(back)) => e = back,
                            Err(PushError::Closed(_)) => panic!("closed"),
                        }
                        assert!(std::time::Instant::now() < deadline, "thread sender hung");
                        std::thread::yield_now();
                    }
                    assert!(mb.len() <= CAP);
                    if seq % CONTROL_EVERY == 0 {
                        mb.push_control(Control::ChildTerminated { id: s.into() });
                    }
                }
            })
        })
        .collect();
    rt.block_on(async {
        let receiver = {
            let mb = mb.clone();
            tokio::spawn(async move {
                let mut batch = Batch::default();
                let mut next = vec![0u32; senders as usize];
                let (mut msgs, mut controls) = (0, 0);
                while msgs < senders * EACH || controls < controls_expected {
                    match mb.recv(&mut batch, true).await {
                        Item::Msg(e) => {
                            let v = payload(Some(Item::Msg(e)));
                            let (s, seq) = ((v / EACH) as usize, v % EACH);
                            assert_eq!(seq, next[s], "sender {s}: lost, doubled or reordered");
                            next[s] += 1;
                            msgs += 1;
                        }
                        Item::Control(Control::ChildTerminated { .. }) => controls += 1,
                        Item::Control(c) => panic!("unexpected control {c:?}"),
                    }
                    assert!(mb.len() <= CAP, "the bound was exceeded");
                }
                assert!(
                    mb.try_recv(&mut batch, true).is_none(),
                    "nothing extra arrived"
                );
                assert_eq!(mb.len(), 0);
            })
        };
        let tasks: Vec<_> = (0..TASKS)
            .map(|s| {
                let mb = mb.clone();
                tokio::spawn(async move {
                    for seq in 0..EACH {
                        assert!(
                            mb.push::<TellEnvelope<M>>(env(s * EACH + seq))
                                .await
                                .is_ok()
                        );
                        assert!(mb.len() <= CAP);
                        if seq % CONTROL_EVERY == 0 {
                            mb.push_control(Control::ChildTerminated { id: s.into() });
                        }
                    }
                })
            })
            .collect();
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
            receiver.await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("every sender and the receiver finished (no hang, no lost wake-up)");
    });
    for t in threads {
        t.join().unwrap();
    }
}

/// [`Mailbox::pop_slow`] without registering with the trim thread: the lock part, then
/// the free of what the spares had no room for.
fn pop_parked(mb: &Arc<Mailbox<A>>, batch: &mut Batch<A>) -> (Option<Item<A>>, Option<Idle>) {
    let (item, _, idle) = mb.pop_locked(batch, true, Some(Waker::noop()), None);
    if let Some(b) = batch.0.as_mut() {
        b.spent.clear();
    }
    (item, idle)
}

/// Pushes `n` messages and pops them all as the actor's task does, parking at the end;
/// returns the take count the pause asks `trim` to check against, if it asks.
fn burst(mb: &Arc<Mailbox<A>>, batch: &mut Batch<A>, n: u32) -> Option<u32> {
    for i in 0..n {
        assert!(mb.try_push_m(env(i)).is_ok());
    }
    loop {
        let (item, idle) = pop_parked(mb, batch);
        match item {
            Some(Item::Msg(e)) => batch.spend(e.recycle()),
            Some(Item::Control(c)) => panic!("unexpected {c:?}"),
            None => {
                return match idle {
                    Some(Idle::Defer(epoch)) => Some(epoch),
                    _ => None,
                };
            }
        }
    }
}

#[test]
fn a_burst_is_released_only_once_the_actor_has_stayed_idle() {
    use super::trim::Trim;
    let mb = Arc::new(Mailbox::<A>::new(1, 512));
    let mut batch = Batch::default();
    let spares = |mb: &Mailbox<A>| mb.state.lock().spare.len();
    let queue_cap = |mb: &Mailbox<A>| mb.state.lock().queue.capacity();

    // A burst leaves spares and queue room in place at the pause, for the next burst.
    let first = burst(&mb, &mut batch, 300).expect("a burst registers for a trim");
    assert!(spares(&mb) > SPARE_IDLE_MAX);
    assert!(queue_cap(&mb) > IDLE_QUEUE_MAX);
    // A second wake-up with nothing to take registers nothing more, and keeps it all.
    assert_eq!(pop_parked(&mb, &mut batch).1, Some(Idle::Keep));

    // Idle since: released to an idle actor's allowance, and the actor is woken so that
    // its pause releases the batch buffers in its task too.
    assert_eq!(mb.trim(first), None);
    assert!(spares(&mb) <= SPARE_IDLE);
    assert!(queue_cap(&mb) <= IDLE_QUEUE_MAX);
    assert!(
        mb.state.lock().rx_waker.is_none(),
        "the trim woke the actor"
    );
    assert_eq!(pop_parked(&mb, &mut batch).1, Some(Idle::Release));

    // Busy again after registering: nothing is released, and the trim asks to look
    // again from the latest pause (which found it pending and did not register).
    let second = burst(&mb, &mut batch, 300).expect("registers again");
    assert_eq!(burst(&mb, &mut batch, 300), None);
    let again = mb.trim(second).expect("busy in between: check again");
    assert!(spares(&mb) > SPARE_IDLE_MAX);
    assert_eq!(mb.trim(again), None);
    assert!(spares(&mb) <= SPARE_IDLE);

    // Busy at the trim (a sender woke it): nothing released, nothing asked; its next
    // pause registers it.
    let third = burst(&mb, &mut batch, 300).expect("registers again");
    assert!(mb.try_push_m(env(1)).is_ok());
    assert_eq!(mb.trim(third), None);
    assert!(spares(&mb) > SPARE_IDLE_MAX);
    assert!(burst(&mb, &mut batch, 0).is_some());

    // A stopped mailbox keeps nothing, trim pending or not.
    mb.mark_terminated();
    assert_eq!(spares(&mb), 0);
}

/// The trim thread releases a real actor's burst on its own once the actor stays idle
/// (polled under a generous deadline, not timed).
#[test]
fn the_trim_thread_releases_an_idle_burst() {
    /// Records a wake: nothing but the trim thread wakes this receiver (no sender is left).
    struct Woken(std::sync::atomic::AtomicBool);
    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let woken = Arc::new(Woken(std::sync::atomic::AtomicBool::new(false)));
    let waker = Waker::from(woken.clone());
    let mb = Arc::new(Mailbox::<A>::new(1, 512));
    let mut batch = Batch::default();
    for i in 0..300 {
        assert!(mb.try_push_m(env(i)).is_ok());
    }
    loop {
        match mb.pop(&mut batch, true, Some(&waker)) {
            Some(Item::Msg(e)) => batch.spend(e.recycle()),
            Some(Item::Control(c)) => panic!("unexpected {c:?}"),
            None => break,
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (spare, trim_queued) = {
            let st = mb.state.lock();
            (st.spare.len(), st.trim_queued)
        };
        // Woken: released by the trim thread, not at the pause.
        if woken.0.load(Ordering::SeqCst) && spare <= SPARE_IDLE && !trim_queued {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {spare} spares after 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

//! send_after, interval, cancellation, and timers dying with their actor (paused time).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cortex_runtime::{Actor, Context, Handler, Message, System, TimerHandle};

use super::common::settle;

#[derive(Default)]
struct Ticker {
    ticks: Arc<AtomicUsize>,
    handle: Option<TimerHandle>,
}
impl Actor for Ticker {}

/// Carries a token so a test can see when no timer holds a copy any more.
#[derive(Clone)]
struct Tick(#[allow(dead_code)] Option<Arc<()>>);
impl Message for Tick {
    type Reply = ();
}
impl Handler<Tick> for Ticker {
    async fn handle(&mut self, _: Tick, _: &mut Context<Self>) {
        self.ticks.fetch_add(1, Ordering::SeqCst);
    }
}

enum Arm {
    Once(Duration),
    Every(Duration),
    OnceWith(Duration, Arc<()>),
    EveryWith(Duration, Arc<()>),
    Cancel,
}
impl Message for Arm {
    type Reply = usize;
}
impl Handler<Arm> for Ticker {
    async fn handle(&mut self, a: Arm, ctx: &mut Context<Self>) -> usize {
        match a {
            Arm::Once(d) => self.handle = Some(ctx.send_after(Tick(None), d)),
            Arm::Every(d) => self.handle = Some(ctx.interval(Tick(None), d)),
            Arm::OnceWith(d, token) => self.handle = Some(ctx.send_after(Tick(Some(token)), d)),
            Arm::EveryWith(d, token) => self.handle = Some(ctx.interval(Tick(Some(token)), d)),
            Arm::Cancel => {
                if let Some(h) = self.handle.take() {
                    h.cancel();
                }
            }
        }
        ctx.timers()
    }
}

async fn advance(d: Duration) {
    tokio::time::advance(d).await;
    // Let the timer tasks and the actor run.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn send_after_fires_once_after_delay() {
    let system = System::new(Default::default());
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = system.spawn(Ticker {
        ticks: ticks.clone(),
        handle: None,
    });
    assert_eq!(
        t.ask(Arm::Once(Duration::from_secs(1)), Duration::from_secs(1))
            .await,
        Ok(1)
    );
    advance(Duration::from_millis(999)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 0);
    advance(Duration::from_millis(1)).await;
    assert!(settle(|| ticks.load(Ordering::SeqCst) == 1).await);
    advance(Duration::from_secs(10)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn interval_ticks_until_cancelled() {
    let system = System::new(Default::default());
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = system.spawn(Ticker {
        ticks: ticks.clone(),
        handle: None,
    });
    t.ask(
        Arm::Every(Duration::from_millis(100)),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    for expected in 1..=5 {
        advance(Duration::from_millis(100)).await;
        assert!(settle(|| ticks.load(Ordering::SeqCst) == expected).await);
    }
    t.ask(Arm::Cancel, Duration::from_secs(1)).await.unwrap();
    advance(Duration::from_secs(1)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn timers_die_with_their_actor() {
    let system = System::new(Default::default());
    let ticks = Arc::new(AtomicUsize::new(0));
    let token = Arc::new(());
    let t = system.spawn(Ticker {
        ticks: ticks.clone(),
        handle: None,
    });
    let every = Arm::EveryWith(Duration::from_millis(100), token.clone());
    t.ask(every, Duration::from_secs(1)).await.unwrap();
    let once = Arm::OnceWith(Duration::from_secs(3600), token.clone());
    assert_eq!(t.ask(once, Duration::from_secs(1)).await, Ok(2));
    advance(Duration::from_millis(100)).await;
    assert!(settle(|| ticks.load(Ordering::SeqCst) == 1).await);
    t.stop();
    t.wait_stopped(Duration::from_secs(1)).await.unwrap();
    // Without advancing time: both timer tasks were aborted, dropping their copies.
    assert!(settle(|| Arc::strong_count(&token) == 1).await);
    advance(Duration::from_secs(5)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 1);
}

//! What actors hold after a burst: the burst's queue room and spare message boxes stay
//! while the actors are busy in bursts, and go once the actors have stayed idle (the
//! mailbox trim thread). Heap measured with `stats_alloc`'s counting allocator, which this
//! test binary alone installs.

use std::alloc::System as SystemAlloc;
use std::time::{Duration, Instant};

use cortex_runtime::{Actor, Context, Handler, Message, System, SystemConfig};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<SystemAlloc> = &INSTRUMENTED_SYSTEM;

/// Live heap bytes of the whole process. (`bytes_reallocated` is not added: `stats_alloc`
/// already counts a realloc's growth or shrink in the other two.)
fn live() -> isize {
    let s = GLOBAL.stats();
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

struct Counter(u64);
impl Actor for Counter {}

struct Add(u64);
impl Message for Add {
    type Reply = ();
}
impl Handler<Add> for Counter {
    async fn handle(&mut self, m: Add, _: &mut Context<Self>) {
        self.0 += m.0;
    }
}

struct Get;
impl Message for Get {
    type Reply = u64;
}
impl Handler<Get> for Counter {
    async fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.0
    }
}

const ACTORS: usize = 200;
const BURST: u64 = 600;
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn a_burst_is_held_while_busy_and_released_once_idle() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let system = System::new(SystemConfig::default());
        let refs: Vec<_> = (0..ACTORS).map(|_| system.spawn(Counter(0))).collect();
        // Every actor handled one message: their buffers are an idle actor's.
        for r in &refs {
            r.tell(Add(1)).await.expect("running");
            assert_eq!(r.ask(Get, DEADLINE).await.expect("answers"), 1);
        }
        let idle = live();

        // A burst to each actor, from one task that runs ahead of them.
        for r in &refs {
            for _ in 0..BURST {
                r.tell(Add(1)).await.expect("running");
            }
        }
        for r in &refs {
            assert_eq!(r.ask(Get, DEADLINE).await.expect("answers"), 1 + BURST);
        }
        let after_burst = live();
        // Kept for the next burst: a grown queue and spare boxes, at least 16 KB per actor
        // (measured: 26 to 30).
        assert!(
            after_burst - idle > (ACTORS * 16 * 1024) as isize,
            "the burst's buffers were released at once: {idle} -> {after_burst} bytes"
        );

        // Idle now: the trim thread releases them, back to within a few hundred bytes per
        // actor of where they started after one message each (measured: at or below it).
        let allowance = (ACTORS * 512) as isize;
        let start = Instant::now();
        loop {
            let now = live();
            if now - idle <= allowance {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "still {} bytes above idle after {DEADLINE:?} ({idle} idle, {after_burst} after the burst)",
                now - idle
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        system.shutdown(Duration::from_secs(10)).await;
    });
}

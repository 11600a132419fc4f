//! `cortex-chaos nfq-hold`: a tiny NFQUEUE holder that adds latency. It runs inside a
//! node's namespace (`ip netns exec`), takes the packets an `-j NFQUEUE --queue-num Q`
//! rule sends it, holds each for the delay (± jitter) and accepts it. It exits when its
//! stdin closes (the harness holds the pipe), and the rule's `--queue-bypass` lets packets
//! through unharmed whenever no holder is bound.

use std::collections::VecDeque;
use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::ChaosError;
use crate::scenario::SplitMix;

/// Most packets held at once; past it new ones pass at once (no unbounded queue).
const MAX_HELD: usize = 20_000;

/// Runs the holder until stdin closes.
///
/// # Errors
/// [`ChaosError::State`] if the queue cannot be opened or bound (not root, no
/// `nfnetlink_queue` in the kernel, the queue number taken).
pub fn run(queue: u16, delay: Duration, jitter: Duration) -> Result<(), ChaosError> {
    let err = |what: &str, e: std::io::Error| {
        ChaosError::State(format!(
            "nfq-hold: {what} queue {queue}: {e} (needs root and the kernel's nfnetlink_queue)"
        ))
    };
    let mut q = nfq::Queue::open().map_err(|e| err("opening", e))?;
    q.bind(queue).map_err(|e| err("binding", e))?;
    let _ = q.set_fail_open(queue, true);
    let _ = q.set_queue_max_len(queue, 8192);
    q.set_nonblocking(true);
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    // Owned by the process: it ends when stdin closes, and then the process exits.
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        d2.store(true, Ordering::Release);
    });
    let mut rng = SplitMix::new(u64::from(queue) ^ 0xde1a);
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    while !done.load(Ordering::Acquire) {
        let mut got = false;
        loop {
            match q.recv() {
                Ok(mut msg) => {
                    got = true;
                    if held.len() >= MAX_HELD {
                        msg.set_verdict(nfq::Verdict::Accept);
                        let _ = q.verdict(msg);
                        continue;
                    }
                    let j = if jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        jitter.mul_f64(rng.unit() * 2.0)
                    };
                    let due = Instant::now() + delay.saturating_sub(jitter) + j;
                    held.push_back((due, msg));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(err("receiving from", e)),
            }
        }
        let now = Instant::now();
        // With jitter, due times are not monotone: release every due packet, in order.
        let mut i = 0;
        while i < held.len() {
            if held[i].0 <= now {
                if let Some((_, mut msg)) = held.remove(i) {
                    msg.set_verdict(nfq::Verdict::Accept);
                    let _ = q.verdict(msg);
                }
            } else if jitter.is_zero() {
                break;
            } else {
                i += 1;
            }
        }
        if !got {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    for (_, mut msg) in held.drain(..) {
        msg.set_verdict(nfq::Verdict::Accept);
        let _ = q.verdict(msg);
    }
    let _ = q.unbind(queue);
    Ok(())
}

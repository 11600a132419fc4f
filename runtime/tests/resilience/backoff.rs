//! Backoff bounds: every delay lies in `[0, cap]` under its envelope, and the envelope doubles
//! per attempt until it reaches the cap.

use std::time::Duration;

use cortex_runtime::resilience::{RetryConfig, RetryPolicy};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

fn policy(base: Duration, cap: Duration, max_attempts: u32, seed: u64) -> RetryPolicy<()> {
    let cfg = RetryConfig {
        max_attempts,
        base_delay: base,
        max_delay: cap,
        deadline: None,
    };
    RetryPolicy::new(cfg, SmallRng::seed_from_u64(seed)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn delays_stay_within_envelope_and_cap(
        base_ns in 0u64..10_000_000_000,
        cap_ns in 0u64..100_000_000_000,
        max_attempts in 1u32..80,
        seed in any::<u64>(),
    ) {
        let cap = Duration::from_nanos(cap_ns);
        let p = policy(Duration::from_nanos(base_ns), cap, max_attempts, seed);
        let delays: Vec<Duration> = p.delays().collect();
        prop_assert_eq!(delays.len() as u32, max_attempts - 1);
        for (k, delay) in delays.iter().enumerate() {
            let envelope = p.envelope(k as u32);
            prop_assert!(*delay <= envelope, "delay {:?} above envelope {:?}", delay, envelope);
            prop_assert!(envelope <= cap);
        }
    }

    #[test]
    fn envelope_doubles_until_the_cap(
        base_ns in 0u64..10_000_000_000,
        cap_ns in 0u64..100_000_000_000,
        k in 0u32..200,
    ) {
        let base = Duration::from_nanos(base_ns);
        let cap = Duration::from_nanos(cap_ns);
        let p = policy(base, cap, 1, 0);
        // Closed form, in u128 nanoseconds.
        let exact = if base_ns == 0 {
            Some(0)
        } else {
            1u128.checked_shl(k).and_then(|f| u128::from(base_ns).checked_mul(f))
        };
        let expected = exact.map_or(u128::from(cap_ns), |e| e.min(u128::from(cap_ns)));
        prop_assert_eq!(p.envelope(k).as_nanos(), expected);
        // Recurrence: the next envelope is twice this one, clipped at the cap.
        let next = (p.envelope(k) * 2).min(cap);
        prop_assert_eq!(p.envelope(k + 1), next);
    }
}

#[test]
fn envelope_grows_exponentially_from_base() {
    let p = policy(Duration::from_millis(10), Duration::from_secs(1), 10, 0);
    let envelopes: Vec<u128> = (0..9).map(|k| p.envelope(k).as_millis()).collect();
    assert_eq!(envelopes, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    assert_eq!(p.envelope(u32::MAX), Duration::from_secs(1));
}

/// Full jitter spreads delays over the whole envelope (fixed seed, so this is deterministic).
#[test]
fn jitter_covers_the_envelope() {
    let p = policy(Duration::from_millis(100), Duration::from_secs(10), 2, 42);
    let envelope = p.envelope(3);
    let samples: Vec<Duration> = (0..10_000).map(|_| p.next_delay(3)).collect();
    let max = *samples.iter().max().unwrap();
    let min = *samples.iter().min().unwrap();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    assert!(
        max <= envelope && max > envelope.mul_f64(0.99),
        "max {max:?}"
    );
    assert!(min < envelope.mul_f64(0.01), "min {min:?}");
    let half = envelope / 2;
    assert!(
        mean > half.mul_f64(0.95) && mean < half.mul_f64(1.05),
        "mean {mean:?}"
    );
}

#[test]
fn same_seed_same_delays() {
    let a = policy(Duration::from_millis(5), Duration::from_secs(1), 20, 9);
    let b = policy(Duration::from_millis(5), Duration::from_secs(1), 20, 9);
    let c = policy(Duration::from_millis(5), Duration::from_secs(1), 20, 10);
    let da: Vec<_> = a.delays().collect();
    assert_eq!(da, b.delays().collect::<Vec<_>>());
    assert_ne!(da, c.delays().collect::<Vec<_>>());
}

//! The retry policy against a reference model: the IO-free decision step on random failure
//! sequences and time advances, then the async driver on tokio's paused clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cortex_runtime::resilience::{
    GiveUpReason, PolicyError, RetryConfig, RetryDecision, RetryPolicy,
};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// The reference: full-jitter exponential backoff written out in integer nanoseconds.
struct Model {
    max_attempts: u32,
    base_ns: u128,
    cap_ns: u128,
    rng: SmallRng,
}

impl Model {
    fn new(cfg: &RetryConfig, seed: u64) -> Self {
        Self {
            max_attempts: cfg.max_attempts,
            base_ns: cfg.base_delay.as_nanos(),
            cap_ns: cfg.max_delay.as_nanos(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    fn envelope_ns(&self, k: u32) -> u128 {
        let doubled = 1u128
            .checked_shl(k)
            .and_then(|factor| self.base_ns.checked_mul(factor));
        doubled.map_or(self.cap_ns, |d| d.min(self.cap_ns))
    }

    /// Attempt `k` failed at `now_ns` (relative); `deadline_ns` relative to the same origin.
    fn decide(
        &mut self,
        k: u32,
        retryable: bool,
        now_ns: u128,
        deadline_ns: Option<u128>,
    ) -> RetryDecision {
        if !retryable {
            return RetryDecision::GiveUp(GiveUpReason::NotRetryable);
        }
        if k + 1 >= self.max_attempts {
            return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted);
        }
        let envelope = u64::try_from(self.envelope_ns(k)).unwrap();
        let delay = self.rng.random_range(0..=envelope);
        if deadline_ns.is_some_and(|d| now_ns + u128::from(delay) >= d) {
            return RetryDecision::GiveUp(GiveUpReason::DeadlineReached);
        }
        RetryDecision::RetryAfter(Duration::from_nanos(delay))
    }
}

fn retry_config() -> impl Strategy<Value = RetryConfig> {
    (1u32..12, 0u64..50_000_000, 0u64..2_000_000_000).prop_map(|(max_attempts, base, cap)| {
        RetryConfig {
            max_attempts,
            base_delay: Duration::from_nanos(base),
            max_delay: Duration::from_nanos(cap),
            deadline: None,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random failure sequences (retryable or not, each attempt taking random time) and an
    /// optional deadline: the policy's decisions, delays included, equal the model's.
    #[test]
    fn decisions_match_reference_model(
        cfg in retry_config(),
        seed in any::<u64>(),
        deadline_ms in prop::option::of(0u64..3_000),
        steps in prop::collection::vec((prop::bool::weighted(0.85), 0u64..200_000_000), 1..16),
    ) {
        let policy = RetryPolicy::new(cfg.clone(), SmallRng::seed_from_u64(seed))
            .unwrap()
            .retry_if(|retryable: &bool| *retryable);
        let mut model = Model::new(&cfg, seed);
        let base = Instant::now();
        let deadline_ns = deadline_ms.map(|ms| u128::from(ms) * 1_000_000);
        let deadline = deadline_ms.map(|ms| base + Duration::from_millis(ms));
        let mut now_ns = 0u128;
        let mut attempt = 0u32;

        for (retryable, work_ns) in steps {
            now_ns += u128::from(work_ns);
            let now = base + Duration::from_nanos(now_ns as u64);
            let real = policy.decide(attempt, &retryable, now, deadline);
            let expected = model.decide(attempt, retryable, now_ns, deadline_ns);
            prop_assert_eq!(real, expected);
            match real {
                RetryDecision::RetryAfter(delay) => {
                    prop_assert!(delay <= policy.envelope(attempt));
                    prop_assert!(delay <= cfg.max_delay);
                    now_ns += delay.as_nanos();
                    attempt += 1;
                }
                RetryDecision::GiveUp(_) => break,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Ok,
    Retryable,
    Fatal,
}

fn attempt() -> impl Strategy<Value = Attempt> {
    prop_oneof![1 => Just(Attempt::Ok), 4 => Just(Attempt::Retryable), 1 => Just(Attempt::Fatal)]
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The async driver makes exactly the attempts the model predicts, returns the predicted
    /// outcome, and sleeps the predicted delays (tokio's timer rounds up to the millisecond).
    #[test]
    fn run_matches_reference_model(
        max_attempts in 1u32..8,
        base_ms in 0u64..50,
        cap_ms in 0u64..400,
        seed in any::<u64>(),
        script in prop::collection::vec((attempt(), 0u64..30), 8),
    ) {
        let cfg = RetryConfig {
            max_attempts,
            base_delay: Duration::from_millis(base_ms),
            max_delay: Duration::from_millis(cap_ms),
            deadline: None,
        };
        // Model: which attempt ends the run, how, and the delays in between.
        let mut model = Model::new(&cfg, seed);
        let mut expected_delays = Vec::new();
        let mut expected_end = None;
        for (k, (outcome, _)) in script.iter().enumerate() {
            let k = k as u32;
            let decision = match outcome {
                Attempt::Ok => { expected_end = Some((k + 1, Ok(k))); break; }
                Attempt::Retryable => model.decide(k, true, 0, None),
                Attempt::Fatal => model.decide(k, false, 0, None),
            };
            match decision {
                RetryDecision::RetryAfter(d) => expected_delays.push(d),
                RetryDecision::GiveUp(reason) => {
                    expected_end = Some((k + 1, Err(reason)));
                    break;
                }
            }
        }
        let (expected_calls, expected_result) = expected_end.expect("max_attempts <= script length");

        let policy = RetryPolicy::new(cfg, SmallRng::seed_from_u64(seed))
            .unwrap()
            .retry_if(|e: &Attempt| *e == Attempt::Retryable);
        let starts = Arc::new(Mutex::new(Vec::new()));
        let result = paused_runtime().block_on(async {
            let origin = tokio::time::Instant::now();
            let outcome = policy
                .run(|k| {
                    let starts = Arc::clone(&starts);
                    let (outcome, work_ms) = script[k as usize];
                    async move {
                        starts.lock().unwrap().push(tokio::time::Instant::now());
                        tokio::time::sleep(Duration::from_millis(work_ms)).await;
                        match outcome {
                            Attempt::Ok => Ok(k),
                            failure => Err(failure),
                        }
                    }
                })
                .await;
            (origin, outcome)
        });
        let (origin, outcome) = result;
        let starts = starts.lock().unwrap().clone();

        prop_assert_eq!(starts.len() as u32, expected_calls);
        prop_assert_eq!(starts[0], origin);
        match (outcome, expected_result) {
            (Ok(k), Ok(expected)) => prop_assert_eq!(k, expected),
            (Err(PolicyError::Inner(Attempt::Fatal)), Err(GiveUpReason::NotRetryable)) => {}
            (
                Err(PolicyError::RetriesExhausted { last, attempts }),
                Err(GiveUpReason::AttemptsExhausted),
            ) => {
                prop_assert_eq!(attempts, expected_calls);
                prop_assert!(matches!(*last, PolicyError::Inner(Attempt::Retryable)));
            }
            (real, expected) => prop_assert!(false, "real {:?}, model {:?}", real, expected),
        }
        for (k, delay) in expected_delays.iter().enumerate() {
            let gap = starts[k + 1] - starts[k];
            let work = Duration::from_millis(script[k].1);
            prop_assert!(gap >= work + *delay, "gap {:?} < work {:?} + delay {:?}", gap, work, delay);
            prop_assert!(
                gap <= work + *delay + Duration::from_millis(1),
                "gap {:?} > work {:?} + delay {:?} + 1ms", gap, work, delay
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn run_gives_up_before_sleeping_past_the_deadline() {
    let cfg = RetryConfig {
        max_attempts: 100,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(10),
        deadline: Some(Duration::from_secs(1)),
    };
    let policy = RetryPolicy::new(cfg, SmallRng::seed_from_u64(3)).unwrap();
    let start = tokio::time::Instant::now();
    let mut calls = 0;
    let outcome: Result<(), _> = policy
        .run(|_| {
            calls += 1;
            async { Err("unavailable") }
        })
        .await;
    let Err(PolicyError::RetriesExhausted { last, attempts }) = outcome else {
        panic!("expected RetriesExhausted, got {outcome:?}");
    };
    assert!(matches!(*last, PolicyError::Inner("unavailable")));
    assert_eq!(attempts, calls);
    assert!(calls > 1 && calls < 100, "calls = {calls}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn run_until_times_out_a_hanging_attempt_at_the_deadline() {
    let policy: RetryPolicy<&str> =
        RetryPolicy::new(RetryConfig::default(), SmallRng::seed_from_u64(5)).unwrap();
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_millis(300);
    let outcome: Result<(), _> = policy
        .run_until(deadline, |attempt| async move {
            if attempt == 0 {
                return Err("reset");
            }
            std::future::pending().await
        })
        .await;
    assert!(matches!(outcome, Err(PolicyError::Timeout)));
    assert_eq!(tokio::time::Instant::now(), deadline);
}

#[test]
fn zero_attempts_is_a_config_error() {
    let cfg = RetryConfig {
        max_attempts: 0,
        ..RetryConfig::default()
    };
    let err = RetryPolicy::<()>::new(cfg, SmallRng::seed_from_u64(0)).unwrap_err();
    assert_eq!(err.field, "max_attempts");
}

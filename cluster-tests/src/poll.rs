//! Waiting for a condition under a deadline, instead of sleeping a fixed time.

use std::time::{Duration, Instant};

use crate::HarnessError;

/// Time between two checks of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Ok`, for at most `deadline`.
///
/// `check` returns `Err(observation)` while the condition does not hold; the last
/// observation goes into the timeout error so a failing test says what it saw.
///
/// # Errors
/// [`HarnessError::Timeout`] naming `what` and the last observation.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let mut n = 0;
/// let v = cortex_cluster_tests::poll_until(Duration::from_secs(5), "n reaches 3", || {
///     n += 1;
///     if n >= 3 { Ok(n) } else { Err(format!("n = {n}")) }
/// }).unwrap();
/// assert_eq!(v, 3);
/// ```
pub fn poll_until<T>(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, HarnessError> {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        if start.elapsed() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                after: deadline,
                last,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

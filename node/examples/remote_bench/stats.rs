//! Latency summaries and the JSON lines every mode prints.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of every result line on stdout; the rest of the line is one JSON object.
pub(crate) const PREFIX: &str = "BENCH ";

/// Prints `BENCH {"event": event, ...v}` on stdout and flushes it.
pub(crate) fn emit(event: &str, mut v: serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("event".into(), event.into());
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) must not take the node down.
    let _ = writeln!(out, "{PREFIX}{v}");
    let _ = out.flush();
}

/// Wall-clock now, unix microseconds (every process on the machine shares this clock).
pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Percentiles (microseconds) of `samples`, as JSON: count, p50, p90, p99, p999, max, mean.
pub(crate) fn summary(mut samples: Vec<u64>) -> serde_json::Value {
    if samples.is_empty() {
        return serde_json::json!({ "count": 0 });
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
    serde_json::json!({
        "count": samples.len(),
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": at(1.0),
        "mean_us": (mean * 10.0).round() / 10.0,
    })
}

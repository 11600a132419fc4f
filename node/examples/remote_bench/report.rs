//! The markdown table of a `bench` summary, with each Cortex figure beside its raw quinn
//! baseline from the same run.

use serde_json::Value;

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn fmt(x: Option<f64>, unit: &str) -> String {
    match x {
        Some(x) if unit == "/s" && x >= 1e6 => format!("{:.2} M/s", x / 1e6),
        Some(x) if unit == "/s" => format!("{:.0} k/s", x / 1e3),
        Some(x) => format!("{x:.0} {unit}"),
        None => "n/a".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

/// The table.
pub(crate) fn markdown(s: &Value) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let raw_rate = num(s, &["raw_throughput", "rate"]);
    let tell = num(s, &["tell", "rate"]);
    rows.push([
        "one-way 64-byte messages, 2 processes".into(),
        fmt(tell, "/s"),
        fmt(raw_rate, "/s"),
        ratio(tell, raw_rate),
    ]);
    for (label, ours, base, field) in [
        (
            "closed-loop round trip p50",
            "ask_closed",
            "raw_closed",
            "latency",
        ),
        (
            "open-loop round trip p50",
            "ask_open",
            "raw_open",
            "latency",
        ),
        (
            "open-loop round trip p50, from schedule",
            "ask_open",
            "raw_open",
            "from_schedule",
        ),
    ] {
        for q in ["p50_us", "p99_us"] {
            let a = num(s, &[ours, field, q]);
            let b = num(s, &[base, field, q]);
            rows.push([
                label.replace("p50", &q[..3]),
                fmt(a, "µs"),
                fmt(b, "µs"),
                ratio(a, b),
            ]);
        }
    }
    for (label, ours, base) in [
        (
            "CPU per one-way message, both processes",
            "tell",
            "raw_throughput",
        ),
        (
            "CPU per round trip at 10k/s, both processes",
            "ask_open",
            "raw_open",
        ),
    ] {
        let a = num(s, &[ours, "cpu", "cpu_us_per_msg"]);
        let b = num(s, &[base, "cpu", "cpu_us_per_msg"]);
        rows.push([
            label.into(),
            a.map_or("n/a".into(), |x| format!("{x:.2} µs")),
            b.map_or("n/a".into(), |x| format!("{x:.2} µs")),
            ratio(a, b),
        ]);
    }
    let a = num(s, &["ask_open", "cpu", "voluntary_switches_per_msg"]);
    let b = num(s, &["raw_open", "cpu", "voluntary_switches_per_msg"]);
    rows.push([
        "thread sleeps (voluntary switches) per round trip at 10k/s".into(),
        a.map_or("n/a".into(), |x| format!("{x:.2}")),
        b.map_or("n/a".into(), |x| format!("{x:.2}")),
        ratio(a, b),
    ]);
    for q in ["p50_us", "p99_us"] {
        let a = num(s, &["forward", "forwarded", "latency", q]);
        let b = num(s, &["forward", "direct", "latency", q]);
        rows.push([
            format!("client ask, forwarded (2 hops) vs direct {}", &q[..3]),
            fmt(a, "µs"),
            fmt(b, "µs"),
            ratio(a, b),
        ]);
    }
    let mut t = String::from(
        "| Measurement | Cortex | Baseline | Cortex / baseline |\n|---|---|---|---|\n",
    );
    for r in rows {
        t.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
    }
    t
}

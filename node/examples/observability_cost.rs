//! What the node's observability costs per request, measured in CPU time of this process
//! (the machines are shared: wall time is not what a call costs). See BENCHMARKS.md,
//! "Observability".
//!
//! ```sh
//! cargo run --release -p cortex-node --example observability_cost -- metrics
//! OTEL_TRACES_SAMPLER_ARG=0.01 cargo run --release -p cortex-node --example observability_cost -- spans shipped
//! ```
//! - `metrics`: the `NodeMetrics` calls one forwarded ask makes (forwarded on the entry
//!   node, received and the ask latency on the owner), on 1 and 2 threads.
//! - `spans VARIANT`: the three request spans of one forwarded ask, made as
//!   `node/src/node/inner.rs` makes them (route on the entry node, forward, route on the
//!   owner), each entered twice like an instrumented future polled twice, under: `off` (no
//!   OTLP endpoint), `shipped` (`trace::init` with an endpoint), `otel-only` (the
//!   OpenTelemetry layer alone), `fmt-only` (the log layer alone, with request spans enabled
//!   as `trace::init` enables them), `no-fmt` (both layers, the log layer without request
//!   spans). The endpoint is a closed port: exports fail, so span creation and sampling are
//!   measured, not export. `NO_RECORD=1` skips recording the `trace_id` field.
// A command line tool: results go to stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cortex_node::config::LogFormat;
use cortex_node::metrics::NodeMetrics;
use cortex_node::trace::{self, TARGET};
use cortex_protocol::TraceContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter::Targets};

const USAGE: &str =
    "usage: observability_cost metrics | spans off|shipped|otel-only|fmt-only|no-fmt";
/// Nothing listens on the discard port of loopback.
const CLOSED_ENDPOINT: &str = "http://127.0.0.1:9";

static NO_RECORD: AtomicBool = AtomicBool::new(false);

/// CPU nanoseconds (user + system) of this process so far, from `/proc/self/stat`.
fn cpu_ns() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .ok_or("unexpected /proc/self/stat")?;
    let f: Vec<&str> = rest.split(' ').collect();
    let tick = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("unexpected /proc/self/stat")
    };
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks/s.
    Ok((tick(11)? + tick(12)?) as f64 * 1e7)
}

/// CPU nanoseconds per call of `f`, over `threads` threads each making `iters` calls.
fn per_call(threads: usize, iters: u64, f: impl Fn(u64) + Sync) -> Result<f64, String> {
    let before = cpu_ns()?;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for i in 0..iters {
                    f(black_box(i));
                }
            });
        }
    });
    Ok((cpu_ns()? - before) / (iters as f64 * threads as f64))
}

fn metrics() -> Result<(), String> {
    let m = NodeMetrics::new("bench");
    m.register_kind("account");
    let iters = 20_000_000;
    let latency = |i: u64| Duration::from_micros(100 + i % 1000);
    for threads in [1, 2] {
        let ns = per_call(threads, iters, |i| {
            m.message_forwarded("account", true);
            m.message_received("account", true);
            m.record_ask("account", true, latency(i));
        })?;
        println!(
            "metrics, {threads} thread(s): one forwarded ask (forwarded + received + record_ask): {ns:.0} ns"
        );
        let ns = per_call(threads, iters, |_| m.message_received("account", true))?;
        println!("metrics, {threads} thread(s): message_received: {ns:.0} ns");
        let ns = per_call(threads, iters, |i| {
            m.record_ask("account", true, latency(i));
        })?;
        println!("metrics, {threads} thread(s): record_ask: {ns:.0} ns");
    }
    Ok(())
}

fn route_span(node: &str, hops: u8, tc: &TraceContext) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "cortex.route",
        otel.kind = "server",
        node = %node,
        message = %"bank.Deposit",
        hops,
        trace_id = tracing::field::Empty,
    );
    if !span.is_disabled() {
        trace::extract(&span, tc);
        if !NO_RECORD.load(Ordering::Relaxed) {
            span.record("trace_id", trace::trace_id(&span));
        }
    }
    span
}

/// The spans of one ask entering node a and forwarded to its owner b.
fn one_forwarded_ask() {
    let a = route_span("a", 0, &TraceContext::default());
    for _ in 0..2 {
        let _in = a.enter();
    }
    let tc = {
        let _in = a.enter();
        let fwd = tracing::info_span!(
            target: TARGET,
            "cortex.forward",
            otel.kind = "client",
            node = %"a",
            to = %"b",
            message = %"bank.Deposit",
            hops = 0u8,
        );
        for _ in 0..2 {
            let _in = fwd.enter();
        }
        if fwd.is_disabled() {
            TraceContext::default()
        } else {
            trace::inject(&fwd)
        }
    };
    let b = route_span("b", 1, &tc);
    for _ in 0..2 {
        let _in = b.enter();
    }
    black_box((a, b));
}

fn spans(variant: &str) -> Result<(), String> {
    NO_RECORD.store(std::env::var_os("NO_RECORD").is_some(), Ordering::Relaxed);
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    // The exporter's gRPC channel lives on this runtime.
    let _rt = rt.enter();
    let fmt = |filter: String| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(EnvFilter::new(filter))
    };
    let provider = match variant {
        "off" => trace::init(LogFormat::Human, "warn", None, "a")?,
        "shipped" => trace::init(LogFormat::Human, "warn", Some(CLOSED_ENDPOINT), "a")?,
        "otel-only" | "no-fmt" => {
            let p =
                trace::provider(CLOSED_ENDPOINT, "cortex-node", "a").map_err(|e| e.to_string())?;
            let log = (variant == "no-fmt").then(|| fmt(format!("warn,{TARGET}=off")));
            tracing_subscriber::registry()
                .with(log)
                .with(
                    trace::layer(&p)
                        .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO)),
                )
                .try_init()
                .map_err(|e| e.to_string())?;
            Some(p)
        }
        "fmt-only" => {
            tracing_subscriber::registry()
                .with(fmt(format!("warn,{TARGET}=info")))
                .try_init()
                .map_err(|e| e.to_string())?;
            None
        }
        _ => return Err(USAGE.into()),
    };
    let ratio = std::env::var("OTEL_TRACES_SAMPLER_ARG").unwrap_or_else(|_| "1.0 (default)".into());
    for _ in 0..2 {
        let ns = per_call(1, 500_000, |_| one_forwarded_ask())?;
        println!(
            "spans, {variant}, OTEL_TRACES_SAMPLER_ARG={ratio}: {:.2} µs per forwarded ask (3 spans)",
            ns / 1000.0
        );
    }
    drop(provider);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("metrics") => metrics(),
        Some("spans") => spans(args.get(2).map(String::as_str).unwrap_or("shipped")),
        _ => Err(USAGE.into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("observability_cost: {e}");
            ExitCode::from(2)
        }
    }
}

//! Distributed tracing: W3C trace context in envelopes, and OTLP export.
//!
//! Request spans use the target [`TARGET`] so that they cost nothing unless an OTLP endpoint
//! is configured: the log layer never enables that target, and the OpenTelemetry layer is
//! only installed with an endpoint. A span's context travels in every tell and ask
//! (`RequestMeta::trace`), so one request is one trace across nodes; the receiving node
//! starts its span as a child of the remote parent.
//!
//! Sampling follows the standard `OTEL_TRACES_SAMPLER_ARG` (a ratio, default 1.0), decided
//! at the head before any span is created, and parent based: a request sampled at its first
//! node is sampled everywhere, and an unsampled one costs no span work anywhere.

use std::str::FromStr;

use cortex_protocol::{TraceContext, TraceParent};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of request spans.
pub const TARGET: &str = "cortex_trace";

/// Head-sampling ratio of traces that start here (f64 bits); 0 until OTLP export is set up.
static RATIO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn sampler_ratio() -> f64 {
    std::env::var("OTEL_TRACES_SAMPLER_ARG")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(1.0)
        .clamp(0.0, 1.0)
}

/// Whether a request with context `tc` is traced: its parent's sampled flag when it has one,
/// else a draw at the configured ratio. Always false when tracing is off.
pub fn sampled(tc: &TraceContext) -> bool {
    let ratio = f64::from_bits(RATIO.load(std::sync::atomic::Ordering::Relaxed));
    if ratio <= 0.0 {
        return false;
    }
    match tc.parent {
        Some(p) => p.flags & 1 == 1,
        None => ratio >= 1.0 || rand::random::<f64>() < ratio,
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up OTLP export to {endpoint}: {reason}")]
pub struct TraceError {
    endpoint: String,
    reason: String,
}

/// Builds the OTLP/gRPC tracer provider for `endpoint` (such as `http://127.0.0.1:4317`)
/// with `service` as the service name and `node` as the `cortex.node` resource attribute.
///
/// # Errors
/// [`TraceError`] if the exporter cannot be built (a malformed endpoint).
pub fn provider(
    endpoint: &str,
    service: &str,
    node: &str,
) -> Result<SdkTracerProvider, TraceError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TraceError {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    // Sampling is decided at the head, before a span exists (see [`sampled`]): spans that
    // exist are exported.
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .with_attribute(opentelemetry::KeyValue::new("cortex.node", node.to_owned()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build())
}

/// The `tracing` layer exporting request spans through `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("cortex"))
}

/// The W3C context of `span`, for an outgoing envelope; empty when it is not traced.
pub fn inject(span: &Span) -> TraceContext {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return TraceContext::default();
    }
    let mut tc = TraceContext {
        parent: Some(TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        }),
        tracestate: sc.trace_state().header(),
    };
    tc.trim_tracestate();
    tc
}

/// Makes `span` a child of the remote parent in `tc`, if any.
pub fn extract(span: &Span, tc: &TraceContext) {
    let Some(p) = tc.parent else { return };
    let sc = SpanContext::new(
        TraceId::from_bytes(p.trace_id),
        SpanId::from_bytes(p.span_id),
        TraceFlags::new(p.flags),
        true,
        TraceState::from_str(&tc.tracestate).unwrap_or_default(),
    );
    if !sc.is_valid() {
        return;
    }
    let cx = opentelemetry::Context::new().with_remote_span_context(sc);
    let _ = span.set_parent(cx);
}

/// The trace id of `span` as 32 hex digits, for log correlation; empty when untraced.
pub fn trace_id(span: &Span) -> String {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        sc.trace_id().to_string()
    } else {
        String::new()
    }
}

/// Installs the global subscriber: logs to stderr (human or JSON, filtered by `filter`) and,
/// when `otlp_endpoint` is set, request spans exported over OTLP/gRPC. Returns the provider
/// to flush at exit.
///
/// # Errors
/// A bad filter, a bad endpoint, or a subscriber already installed.
pub fn init(
    format: crate::config::LogFormat,
    filter: &str,
    otlp_endpoint: Option<&str>,
    node: &str,
) -> Result<Option<SdkTracerProvider>, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, filter::Targets};

    // Request spans are for the exporter; logs show them (and so their trace ids) only when
    // tracing is on, so that untraced nodes pay nothing for them.
    let directives = if otlp_endpoint.is_some() {
        format!("{filter},{TARGET}=info")
    } else {
        format!("{filter},{TARGET}=off")
    };
    let env_filter = EnvFilter::try_new(&directives).map_err(|e| {
        format!("invalid log filter {filter:?}: {e}; use a level (error, warn, info, debug, trace) or directives like info,cortex_node=debug")
    })?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let fmt = match format {
        crate::config::LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        _ => {
            use std::io::IsTerminal;
            fmt.with_ansi(std::io::stderr().is_terminal()).boxed()
        }
    }
    .with_filter(env_filter);
    let provider = match otlp_endpoint {
        Some(ep) => Some(provider(ep, "cortex-node", node).map_err(|e| e.to_string())?),
        None => None,
    };
    if provider.is_some() {
        RATIO.store(
            sampler_ratio().max(f64::MIN_POSITIVE).to_bits(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    let otel = provider
        .as_ref()
        .map(|p| layer(p).with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO)));
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|_| "logging was already initialised".to_owned())?;
    Ok(provider)
}

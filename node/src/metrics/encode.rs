//! Text exposition of [`NodeMetrics`]: the Prometheus text format 0.0.4 by default, OpenMetrics
//! 1.0 for scrapers that ask for it.
//!
//! Both carry the same names: counters end in `_total`, units are name suffixes (`_seconds`,
//! `_bytes`). The Prometheus text format is the default because every scraper and tool reads it
//! (`promtool check metrics` lints exactly this format); Prometheus itself asks for OpenMetrics
//! in its `Accept` header and then gets it.

use super::NodeMetrics;

/// `Content-Type` of [`NodeMetrics::encode`]: the Prometheus text format, version 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `Content-Type` of [`NodeMetrics::encode_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an HTTP `Accept` header value prefers OpenMetrics over the Prometheus text format:
/// true when `application/openmetrics-text` is listed with a non-zero quality at least as
/// high as `text/plain`'s (and than `*/*`'s when `text/plain` is absent).
///
/// # Examples
/// ```
/// use cortex_node::metrics::prefers_openmetrics;
/// // What Prometheus 2.x sends:
/// assert!(prefers_openmetrics(
///     "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
/// ));
/// assert!(!prefers_openmetrics("*/*"));
/// assert!(!prefers_openmetrics("text/plain, application/openmetrics-text;q=0.5"));
/// ```
pub fn prefers_openmetrics(accept: &str) -> bool {
    let (mut om, mut text, mut any) = (0.0f32, 0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut om,
            "text/plain" => &mut text,
            "*/*" | "text/*" => &mut any,
            _ => continue,
        };
        *slot = slot.max(q);
    }
    let plain = if text > 0.0 { text } else { any };
    om > 0.0 && om >= plain
}

impl NodeMetrics {
    /// Every metric in the Prometheus text format, version 0.0.4 (serve it with
    /// [`TEXT_CONTENT_TYPE`]). `promtool check metrics` accepts it without warnings.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
        {
            // A String never fails to take text; this only happens if a metric's own encoder
            // fails, and then a partial exposition would be worse than an empty one.
            tracing::error!(error = %e, "encoding metrics failed");
            out.clear();
        }
        out
    }

    /// Every metric in the OpenMetrics 1.0 text format, ending in `# EOF` (serve it with
    /// [`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
            out.clear();
        }
        out
    }

    /// The body and `Content-Type` for a `GET /metrics` with the given `Accept` header:
    /// OpenMetrics if [`prefers_openmetrics`], else the Prometheus text format.
    ///
    /// # Examples
    /// ```
    /// use cortex_node::metrics::{NodeMetrics, TEXT_CONTENT_TYPE};
    /// let metrics = NodeMetrics::new("node-a");
    /// let (content_type, body) = metrics.encode_for_accept(None);
    /// assert_eq!(content_type, TEXT_CONTENT_TYPE);
    /// assert!(body.contains("cortex_membership_size"));
    /// ```
    pub fn encode_for_accept(&self, accept: Option<&str>) -> (&'static str, String) {
        if accept.is_some_and(prefers_openmetrics) {
            (OPENMETRICS_CONTENT_TYPE, self.encode_openmetrics())
        } else {
            (TEXT_CONTENT_TYPE, self.encode())
        }
    }
}

//! The live cluster dashboard: one static HTML page with its script and stylesheet, compiled
//! into the binary, that every node serves on its admin HTTP port.
//!
//! The page has no build step and makes no request outside its own node. In the browser it
//! polls, every 2 s, these endpoints of the node that served it:
//!
//! | endpoint | shape the page reads |
//! |---|---|
//! | `GET /cluster/members` | `[{name, incarnation, state, local?, quic \| quic_addr, gossip \| gossip_addr, http \| http_addr, roles, since \| since_unix_ms}]` |
//! | `GET /cluster/ring` | `{epoch, digest, vnodes, settled?, shares: [{node, share}]}`, `share` a fraction 0..1 |
//! | `GET /cluster/actors` | `[{node, kinds: [{kind, live}]}]`, every node (a single object is accepted too) |
//! | `GET /cluster/events` | `[{at, node, event}]`, `at` RFC 3339 or Unix ms, `event` joined/suspect/down/left |
//! | `GET /metrics` | Prometheus text; message rates are computed from successive scrapes |
//!
//! A 404 on any of them shows "n/a" in that section; other failures are listed in a banner.
//! Member rows carry `data-member="<name>"`, and `<body data-refreshes="N">` counts completed
//! refreshes, so a headless-browser test can wait for the first refresh and find every member.
//!
//! The router serves [`asset`] for every path in [`PATHS`], with the asset's content type and
//! the [`CONTENT_SECURITY_POLICY`] header (the page needs no inline script or style).
//!
//! # Examples
//! ```
//! use cortex_node::dashboard;
//! let page = dashboard::asset("/dashboard").expect("the page is served at /dashboard");
//! assert_eq!(page.content_type, "text/html; charset=utf-8");
//! assert_eq!(page.body, dashboard::page());
//! for path in dashboard::PATHS {
//!     assert!(dashboard::asset(path).is_some());
//! }
//! assert!(dashboard::asset("/dashboard/nope.js").is_none());
//! ```

/// The page itself.
const PAGE: &str = include_str!("index.html");
/// The page's script.
const SCRIPT: &str = include_str!("app.js");
/// The page's stylesheet.
const STYLE: &str = include_str!("style.css");

/// Path of the script, as the page references it.
pub const SCRIPT_PATH: &str = "/dashboard/app.js";
/// Path of the stylesheet, as the page references it.
pub const STYLE_PATH: &str = "/dashboard/style.css";

/// Every path [`asset`] answers: the page at `/`, `/dashboard` and `/dashboard/`, then the
/// script and the stylesheet.
pub const PATHS: [&str; 5] = ["/", "/dashboard", "/dashboard/", SCRIPT_PATH, STYLE_PATH];

/// The `Content-Security-Policy` to send with every dashboard response: scripts, styles and
/// fetches from the serving node only, nothing inline, no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One static file of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The `Content-Type` header value.
    pub content_type: &'static str,
    /// The file's contents.
    pub body: &'static str,
}

/// The dashboard page (HTML). It loads [`SCRIPT_PATH`] and [`STYLE_PATH`].
pub fn page() -> &'static str {
    PAGE
}

/// The dashboard script, served at [`SCRIPT_PATH`].
pub fn script() -> &'static str {
    SCRIPT
}

/// The dashboard stylesheet, served at [`STYLE_PATH`].
pub fn stylesheet() -> &'static str {
    STYLE
}

/// The asset for a request path (without query), or `None` if the dashboard has no such file.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/" | "/dashboard" | "/dashboard/" => ("text/html; charset=utf-8", PAGE),
        SCRIPT_PATH => ("text/javascript; charset=utf-8", SCRIPT),
        STYLE_PATH => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests;

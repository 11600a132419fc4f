//! The admin HTTP endpoint: health, readiness and membership, plus extension points.
//!
//! [`serve`] runs a small hyper server (HTTP/1.1 and HTTP/2) on a bound `TcpListener` until
//! its `CancellationToken` fires, answering from an [`AdminSource`] that the node
//! implements. Built-in routes:
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | `200 ok` while the process runs |
//! | `GET /ready` | `200 {"ready":true}` when joined and converged, else `503 {"ready":false,"reason":...}` |
//! | `GET /cluster/members` | JSON array of [`MemberJson`] |
//! | `GET /` | a plain-text index, unless an extension answers `/` |
//!
//! Anything else goes to [`AdminSource::route`]; later routes (metrics, dashboard,
//! activations, the gateway) plug in there, most easily through a [`Routes`] table.
//! Limits ([`HttpLimits`]): connections are bounded, headers must arrive within a deadline,
//! request bodies are capped and each request has a deadline.

mod members;
mod router;
mod server;
mod time;

use std::future::Future;
use std::pin::Pin;

pub use members::{MemberJson, MemberState};
pub use router::{AdminRequest, AdminResponse, Routes};
pub use server::{AdminServer, HttpLimits, serve};
pub use time::rfc3339_millis;

/// A boxed route future; `'static` so that handlers clone what they need out of `self`.
pub type RouteFuture = Pin<Box<dyn Future<Output = AdminResponse> + Send + 'static>>;

/// What the admin server asks the node. The node implements it; the server holds it as
/// `Arc<dyn AdminSource>`.
///
/// The methods are called on request tasks, concurrently: keep them quick and non-blocking
/// (read a snapshot, e.g. from a `watch` channel or behind a short lock).
///
/// # Examples
/// ```
/// use cortex_node::http::{AdminRequest, AdminSource, MemberJson, RouteFuture, Routes, AdminResponse};
/// struct Node { routes: Routes }
/// impl AdminSource for Node {
///     fn members(&self) -> Vec<MemberJson> { Vec::new() }
///     fn ready(&self) -> Result<(), String> { Err("still joining".into()) }
///     fn route(&self, req: &AdminRequest) -> Option<RouteFuture> { self.routes.dispatch(req) }
/// }
/// let routes = Routes::new().get("/metrics", |_req| async { AdminResponse::text(200, "up 1\n") });
/// let _node = Node { routes };
/// ```
pub trait AdminSource: Send + Sync + 'static {
    /// The current membership view, this node included, for `GET /cluster/members`.
    fn members(&self) -> Vec<MemberJson>;

    /// `Ok(())` when the node has joined and membership has settled; otherwise why not
    /// (shown to the caller of `GET /ready`, which answers 503).
    ///
    /// # Errors
    /// The reason the node is not ready, in words for an operator.
    fn ready(&self) -> Result<(), String>;

    /// Extension point for every path the built-in routes do not take: return `Some` to
    /// answer, `None` for 404. The default answers nothing.
    fn route(&self, _req: &AdminRequest) -> Option<RouteFuture> {
        None
    }
}

#[cfg(test)]
mod tests;

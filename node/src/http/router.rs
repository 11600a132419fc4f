//! Requests, responses and routing: the built-in routes, then the source's extensions.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Response, StatusCode};
use serde::Serialize;

use super::{AdminSource, RouteFuture};

/// A request as handed to routes: the body is already read (and capped).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdminRequest {
    /// Method.
    pub method: Method,
    /// Path, without the query (`/cluster/members`).
    pub path: String,
    /// Raw query string after `?`, if any.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// The whole body (at most [`super::HttpLimits::max_body_bytes`]).
    pub body: Bytes,
    /// The peer's address.
    pub peer: SocketAddr,
}

impl AdminRequest {
    /// A request for tests and in-process callers.
    pub fn new(method: Method, path_and_query: &str, peer: SocketAddr) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (path_and_query.to_string(), None),
        };
        AdminRequest {
            method,
            path,
            query,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            peer,
        }
    }

    /// The value of query parameter `name` (first occurrence, not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct AdminResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers (`content-type` included).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl AdminResponse {
    /// A response with `content_type` and `body`. An invalid status falls back to 500.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        AdminResponse {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers,
            body: body.into(),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    /// An `application/json` response; a value that does not serialize gives a 500.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(status, "application/json", body),
            Err(e) => Self::error(500, &format!("response does not serialize: {e}")),
        }
    }

    /// A JSON error body `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "error": message });
        Self::new(status, "application/json", body.to_string())
    }

    /// Adds a header (replacing one of the same name).
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub(crate) fn into_hyper(self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        let h = resp.headers_mut();
        h.entry(CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        h.insert(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        resp
    }
}

type Handler = Arc<dyn Fn(AdminRequest) -> RouteFuture + Send + Sync>;

/// A table of extension routes, matched by method and exact path, or by path prefix
/// (registered with a trailing `/*`). Use it from [`AdminSource::route`].
///
/// ```
/// # tokio_test_block_on(async {
/// use cortex_node::http::{AdminRequest, AdminResponse, Routes};
/// use hyper::Method;
/// let routes = Routes::new()
///     .get("/metrics", |_req| async { AdminResponse::text(200, "up 1\n") })
///     .get("/actors/*", |req| async move { AdminResponse::text(200, req.path) });
/// let req = AdminRequest::new(Method::GET, "/actors/order/1", "127.0.0.1:1".parse().unwrap());
/// let resp = routes.dispatch(&req).unwrap().await;
/// assert_eq!(&resp.body[..], b"/actors/order/1");
/// assert!(routes.dispatch(&AdminRequest::new(Method::GET, "/nope", req.peer)).is_none());
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Routes {
    exact: HashMap<(Method, String), Handler>,
    prefix: Vec<(Method, String, Handler)>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field(
                "prefix",
                &self
                    .prefix
                    .iter()
                    .map(|(m, p, _)| (m, p))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Routes {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route for `method` at `path` (`/x/*` matches every path under `/x/`).
    #[must_use]
    pub fn route<F, Fut>(mut self, method: Method, path: &str, handler: F) -> Self
    where
        F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AdminResponse> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        match path.strip_suffix('*') {
            Some(prefix) => {
                self.prefix.push((method, prefix.to_string(), handler));
                // Longest prefix first, so that the most specific route wins.
                self.prefix.sort_by_key(|r| std::cmp::Reverse(r.1.len()));
            }
            None => {
                self.exact.insert((method, path.to_string()), handler);
            }
        }
        self
    }

    /// Adds a `GET` route (also answering `HEAD`).
    #[must_use]
    pub fn get<F, Fut>(self, path: &str, handler: F) -> Self
    where
        F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AdminResponse> + Send + 'static,
    {
        self.route(Method::GET, path, handler)
    }

    /// The handler's future for `req`, or `None` if no route matches.
    pub fn dispatch(&self, req: &AdminRequest) -> Option<RouteFuture> {
        let method = if req.method == Method::HEAD {
            Method::GET
        } else {
            req.method.clone()
        };
        let handler = self
            .exact
            .get(&(method.clone(), req.path.clone()))
            .or_else(|| {
                self.prefix
                    .iter()
                    .find(|(m, p, _)| *m == method && req.path.starts_with(p.as_str()))
                    .map(|(_, _, h)| h)
            })?;
        Some(handler(req.clone()))
    }
}

const INDEX: &str = "cortex-node admin\n\
GET /health           200 while the process runs\n\
GET /ready            200 when joined and converged, else 503 with the reason\n\
GET /cluster/members  the membership as JSON\n";

/// Answers one request: built-in routes first, then the source's extensions, then `/`.
pub(crate) async fn handle(source: &Arc<dyn AdminSource>, req: AdminRequest) -> AdminResponse {
    let is_get = req.method == Method::GET || req.method == Method::HEAD;
    let builtin = matches!(req.path.as_str(), "/health" | "/ready" | "/cluster/members");
    if builtin && !is_get {
        return AdminResponse::error(405, "only GET is allowed here")
            .with_header(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    match req.path.as_str() {
        "/health" => AdminResponse::text(200, "ok\n"),
        "/ready" => match source.ready() {
            Ok(()) => AdminResponse::json(200, &serde_json::json!({ "ready": true })),
            Err(reason) => AdminResponse::json(
                503,
                &serde_json::json!({ "ready": false, "reason": reason }),
            ),
        },
        "/cluster/members" => AdminResponse::json(200, &source.members()),
        _ => match source.route(&req) {
            Some(fut) => fut.await,
            None if req.path == "/" && is_get => AdminResponse::text(200, INDEX),
            None => AdminResponse::error(404, &format!("no route for {} {}", req.method, req.path)),
        },
    }
}

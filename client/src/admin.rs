//! A small client for a node's admin HTTP endpoint (what the `cortex` CLI and tests read):
//! members, the ring, activations, metrics, and the JSON actor endpoint.
//!
//! JSON tells and asks go through `POST /actors/{kind}/{key}/{message}` on any node: the
//! wire between nodes carries bincode only, and only a process that knows the message types
//! (every node registers its kinds) can turn JSON into them. Contract:
//!
//! - `POST /actors/{kind}/{key}/{message}?timeout_ms=N[&tell=1]`, body: the message as
//!   JSON (`content-type: application/json`).
//! - ask: `200 {"message": "<reply name>", "reply": <reply as JSON>}`;
//!   tell: `202 {"accepted": true}`.
//! - failure: a non-2xx status with `{"error": "<ErrorCode>", "detail": "<detail>"}` where
//!   `error` is the wire error code's name (`Timeout`, `UnknownKind`, ...): 504 for
//!   `Timeout`, 503 for `Unreachable` and `ActorStopped`, 404 for `UnknownKind` and
//!   `UnknownMessage`, 400 for `Decode`, 429 for `Rejected`, 500 for `ActorFailed`, 508 for
//!   `HopLimit`. A node that does not own the id proxies the request to the owner.
//! - `POST /topics/{topic}/{message}` with a JSON body publishes: `202 {"accepted": true}`
//!   (proposed; not served by the node yet, so JSON publishes answer 404 until it is).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cortex_protocol::{ActorId, ErrorCode, MessageName, TopicId};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest admin response read.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why an admin call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The node URL cannot be used.
    #[error("invalid node URL {url:?}: {reason}; write http://HOST:PORT")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The node could not be reached.
    #[error(
        "cannot reach {url}: {reason}; is the node running and is --node its admin HTTP address?"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer before the deadline.
    #[error("{url} did not answer within {after:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The deadline.
        after: Duration,
    },
    /// The node answered with an error status.
    #[error("{url} answered {status}: {detail}")]
    Status {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The `code` field of the error body, when present.
        code: Option<String>,
        /// The `error` field of the body, or the body itself.
        detail: String,
    },
    /// The answer was not what the endpoint documents.
    #[error("unexpected answer from {url}: {reason}")]
    BadResponse {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl AdminError {
    /// The wire error code the node reported, when it sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        let AdminError::Status { code, status, .. } = self else {
            return match self {
                AdminError::Timeout { .. } => Some(ErrorCode::Timeout),
                AdminError::Unreachable { .. } => Some(ErrorCode::Unreachable),
                _ => None,
            };
        };
        Some(match code.as_deref() {
            Some("Timeout") => ErrorCode::Timeout,
            Some("Unreachable") => ErrorCode::Unreachable,
            Some("UnknownKind") => ErrorCode::UnknownKind,
            Some("UnknownMessage") => ErrorCode::UnknownMessage,
            Some("Rejected") => ErrorCode::Rejected,
            Some("ActorFailed") => ErrorCode::ActorFailed,
            Some("ActorStopped") => ErrorCode::ActorStopped,
            Some("Decode") => ErrorCode::Decode,
            Some("HopLimit") => ErrorCode::HopLimit,
            Some("Unauthorized") => ErrorCode::Unauthorized,
            _ => match status {
                504 => ErrorCode::Timeout,
                502 | 503 => ErrorCode::Unreachable,
                _ => return None,
            },
        })
    }
}

/// A member as `GET /cluster/members` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Incarnation.
    pub incarnation: u64,
    /// `alive`, `suspect`, `down`, `left`, ...
    pub state: String,
    /// True for the node that answered.
    #[serde(default)]
    pub local: bool,
    /// QUIC address.
    pub quic: SocketAddr,
    /// Gossip address.
    pub gossip: SocketAddr,
    /// Admin HTTP address.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// When it entered its state (RFC 3339).
    #[serde(default)]
    pub since: String,
}

/// `GET /cluster/ring`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RingInfo {
    /// The answering node's ring epoch.
    pub epoch: u64,
    /// Ring digest (hex).
    pub digest: String,
    /// Virtual nodes per member.
    pub vnodes: u32,
    /// Whether the view is settled.
    pub settled: bool,
    /// The answering node's quorum (absent from nodes that predate the quorum rule).
    #[serde(default)]
    pub quorum: Option<QuorumInfo>,
    /// Share of ids per node.
    pub shares: Vec<RingShare>,
}

/// `GET /cluster/quorum`: the answering node's split-brain rule state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuorumInfo {
    /// `majority` or `off`.
    pub policy: String,
    /// True while the node may host virtual actors.
    pub has_quorum: bool,
    /// Members the node reaches, itself included, by name.
    pub reachable: Vec<String>,
    /// The members it counts as the cluster, by name.
    pub base: Vec<String>,
}

/// One node's share of the ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RingShare {
    /// Node name.
    pub node: String,
    /// Fraction of ids, 0..=1.
    pub share: f64,
}

/// `GET /cluster/ring?id=...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OwnerInfo {
    /// The actor id.
    pub id: String,
    /// Its owner (`name#incarnation`), if the ring has members.
    pub owner: Option<String>,
    /// The answering node's ring epoch.
    pub epoch: u64,
}

/// One record of `GET /cluster/activations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Activation {
    /// Sequence number on the node.
    pub seq: u64,
    /// The actor id.
    pub id: String,
    /// The hosting node.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// Ring epoch at activation.
    pub epoch: u64,
    /// Activation time, unix microseconds.
    pub activated_us: u64,
    /// Passivation time, unix microseconds, while not live.
    #[serde(default)]
    pub passivated_us: Option<u64>,
}

/// A JSON ask's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JsonReply {
    /// The reply type's name.
    pub message: String,
    /// The reply.
    pub reply: serde_json::Value,
}

/// Talks to one node's admin HTTP endpoint.
///
/// ```no_run
/// # async fn demo() -> Result<(), cortex_client::admin::AdminError> {
/// use cortex_client::admin::AdminClient;
/// let node = AdminClient::new("http://127.0.0.1:7480")?;
/// for m in node.members().await? {
///     println!("{} {}", m.name, m.state);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    timeout: Duration,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

fn encode_segment(s: &str) -> String {
    encode(s, b"-_.~:@")
}

/// Query values keep `/` as is (RFC 3986 allows it there), since the node's query parser
/// does not percent-decode.
fn encode_query(s: &str) -> String {
    encode(s, b"-_.~:@/")
}

fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl AdminClient {
    /// A client for `url` (`http://host:port`, or just `host:port`).
    ///
    /// # Errors
    /// [`AdminError::Url`] for a URL that is not plain `http://host:port`.
    pub fn new(url: &str) -> Result<Self, AdminError> {
        let base = if url.contains("://") {
            url.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", url.trim_end_matches('/'))
        };
        let uri: Uri = base
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| AdminError::Url {
                url: url.into(),
                reason: e.to_string(),
            })?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(AdminError::Url {
                url: url.into(),
                reason: "only http://HOST:PORT is supported (the admin endpoint is plain HTTP)"
                    .into(),
            });
        }
        let http = HyperClient::builder(TokioExecutor::new()).build_http();
        Ok(Self {
            base,
            timeout: Duration::from_secs(10),
            http,
        })
    }

    /// Sets the deadline of each call (default 10 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), AdminError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method).uri(&url);
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| AdminError::Url {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let work = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| AdminError::Unreachable {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| AdminError::BadResponse {
                    url: url.clone(),
                    reason: format!("reading the body: {e}"),
                })?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| AdminError::Timeout {
                url: url.clone(),
                after: timeout,
            })?
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Bytes, AdminError> {
        let url = format!("{}{path}", self.base);
        let (status, bytes) = self.call(method, path, body, timeout).await?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        // Two shapes: `{"error": CODE, "detail": ...}` from the actor endpoint, and
        // `{"error": detail}` from the rest of the admin API.
        #[derive(Deserialize)]
        struct ErrBody {
            error: String,
            #[serde(default)]
            detail: Option<String>,
        }
        let (detail, code) = match serde_json::from_slice::<ErrBody>(&bytes) {
            Ok(ErrBody {
                error,
                detail: Some(detail),
            }) => (detail, Some(error)),
            Ok(ErrBody {
                error,
                detail: None,
            }) => (error, None),
            Err(_) => (String::from_utf8_lossy(&bytes).trim().to_string(), None),
        };
        Err(AdminError::Status {
            url,
            status,
            code,
            detail,
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        let bytes = self.request(Method::GET, path, None, self.timeout).await?;
        serde_json::from_slice(&bytes).map_err(|e| AdminError::BadResponse {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }

    /// `GET /cluster/members`.
    ///
    /// # Errors
    /// [`AdminError`].
    pub async fn members(&self) -> Result<Vec<Member>, AdminError> {
        self.get_json("/cluster/members").await
    }

    /// `GET /cluster/ring`.
    ///
    /// # Errors
    /// [`AdminError`].
    pub async fn ring(&self) -> Result<RingInfo, AdminError> {
        self.get_json("/cluster/ring").await
    }

    /// `GET /cluster/quorum`: whether the node reaches a majority of its cluster, and so
    /// hosts virtual actors.
    ///
    /// # Errors
    /// [`AdminError`].
    pub async fn quorum(&self) -> Result<QuorumInfo, AdminError> {
        self.get_json("/cluster/quorum").await
    }

    /// `GET /cluster/ring?id=KIND/KEY`: the owner of `id` in the node's view.
    ///
    /// # Errors
    /// [`AdminError`].
    pub async fn owner(&self, id: &ActorId) -> Result<OwnerInfo, AdminError> {
        self.get_json(&format!(
            "/cluster/ring?id={}",
            encode_query(&id.to_string())
        ))
        .await
    }

    /// `GET /cluster/activations?since=N`.
    ///
    /// # Errors
    /// [`AdminError`].
    pub async fn activations(&self, since: u64) -> Result<Vec<Activation>, AdminError> {
        self.get_json(&format!("/cluster/activations?since={since}"))
            .await
    }

    /// `GET /metrics` (Prometheus text).
    ///
    /// # Errors
    /// [`AdminError`].
    pub async fn metrics(&self) -> Result<String, AdminError> {
        let b = self
            .request(Method::GET, "/metrics", None, self.timeout)
            .await?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Asks by message name with a JSON body (see the module doc for the contract).
    ///
    /// # Errors
    /// [`AdminError::Status`] with the node's error code, and the transport errors.
    pub async fn ask_json(
        &self,
        id: &ActorId,
        message: &MessageName,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<JsonReply, AdminError> {
        let path = self.actor_path(id, message, timeout, false);
        let bytes = self
            .request(
                Method::POST,
                &path,
                Some(body.to_string().into_bytes()),
                timeout + Duration::from_secs(1),
            )
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| AdminError::BadResponse {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }

    /// Tells by message name with a JSON body.
    ///
    /// # Errors
    /// As [`AdminClient::ask_json`].
    pub async fn tell_json(
        &self,
        id: &ActorId,
        message: &MessageName,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<(), AdminError> {
        let path = self.actor_path(id, message, timeout, true);
        self.request(
            Method::POST,
            &path,
            Some(body.to_string().into_bytes()),
            timeout + Duration::from_secs(1),
        )
        .await
        .map(|_| ())
    }

    /// Publishes a JSON message to `topic`.
    ///
    /// # Errors
    /// As [`AdminClient::ask_json`].
    pub async fn publish_json(
        &self,
        topic: &TopicId,
        message: &MessageName,
        body: &serde_json::Value,
    ) -> Result<(), AdminError> {
        let path = format!(
            "/topics/{}/{}",
            encode_segment(topic.as_str()),
            encode_segment(message.as_str())
        );
        self.request(
            Method::POST,
            &path,
            Some(body.to_string().into_bytes()),
            self.timeout,
        )
        .await
        .map(|_| ())
    }

    fn actor_path(
        &self,
        id: &ActorId,
        message: &MessageName,
        timeout: Duration,
        tell: bool,
    ) -> String {
        format!(
            "/actors/{}/{}/{}?timeout_ms={}{}",
            encode_segment(id.kind()),
            encode_segment(id.key()),
            encode_segment(message.as_str()),
            timeout.as_millis(),
            if tell { "&tell=1" } else { "" }
        )
    }
}

/// The sum of every sample of metric `name` (all label sets) in Prometheus text.
///
/// ```
/// let text = "# TYPE x counter\nx_total{kind=\"a\"} 2\nx_total{kind=\"b\"} 3\nx_totalnot 9\n";
/// assert_eq!(cortex_client::admin::sum_metric(text, "x_total"), 5.0);
/// ```
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let value = match rest.rfind('}') {
                Some(i) => &rest[i + 1..],
                None => rest,
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            AdminClient::new("127.0.0.1:7480").unwrap().url(),
            "http://127.0.0.1:7480"
        );
        assert!(AdminClient::new("https://x:1").is_err());
        assert!(AdminClient::new("http://").is_err());
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn codes_from_status() {
        let e = AdminError::Status {
            url: "u".into(),
            status: 404,
            code: Some("UnknownKind".into()),
            detail: "x".into(),
        };
        assert_eq!(e.code(), Some(ErrorCode::UnknownKind));
        let e = AdminError::Status {
            url: "u".into(),
            status: 504,
            code: None,
            detail: "x".into(),
        };
        assert_eq!(e.code(), Some(ErrorCode::Timeout));
    }
}

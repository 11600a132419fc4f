//! JSON at the edge: `POST /actors/{kind}/{key}/{message}` asks (or, with `?tell=1`,
//! tells) a virtual actor with a JSON body and answers with its JSON reply. The CLI uses it.
//!
//! Between nodes payloads travel as bincode, which only the owner's registered types can
//! produce from JSON; so a node that does not own the id proxies the HTTP request to the
//! owner's admin endpoint (one hop, hop-limited, deadline carried in `x-cortex-budget-ms`),
//! where the owner decodes the JSON by the message's registered type.
//!
//! `POST /topics/{topic}/{message}` publishes a JSON message cluster-wide: any node decodes
//! it by the message's registered type (every node registers the same kinds) into the wire
//! codec and fans it out exactly as it does a client's publish, so every subscriber, node
//! or client, receives the same bytes as from a publish by the Rust client. `202`
//! once handed to every live member (at most once, like any publish).
//!
//! Query: `timeout_ms` (default 5000), `tell=1`. Errors: `{"error": CODE, "detail": ...}`
//! with a status per code (404 unknown kind or message, 400 decode, 504 timeout, 503
//! unreachable or stopped, 429 rejected, 500 actor failed, 508 hop limit, 413 a publish
//! body above [`MAX_PUBLISH_BODY`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cortex_protocol::{ActorId, ErrorCode, MessageName, TopicId};
use cortex_runtime::{ActorError, Codec};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue};

use super::inner::NodeInner;
use crate::http::{AdminRequest, AdminResponse};

const HOPS_HEADER: &str = "x-cortex-hops";
const BUDGET_HEADER: &str = "x-cortex-budget-ms";
const MAX_HTTP_HOPS: u32 = 2;
/// Largest JSON body `POST /topics/..` takes. A publish is copied to every member and every
/// subscriber, so it is kept well below the request cap and the frame limit.
pub(crate) const MAX_PUBLISH_BODY: usize = 64 * 1024;

fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::UnknownKind | ErrorCode::UnknownMessage => 404,
        ErrorCode::Decode => 400,
        ErrorCode::Timeout => 504,
        ErrorCode::Rejected => 429,
        ErrorCode::ActorFailed => 500,
        ErrorCode::HopLimit => 508,
        ErrorCode::Unauthorized => 403,
        _ => 503,
    }
}

fn fail(code: ErrorCode, detail: &str) -> AdminResponse {
    AdminResponse::json(
        status_of(code),
        &serde_json::json!({ "error": format!("{code:?}"), "detail": detail }),
    )
}

fn from_actor(e: &ActorError) -> AdminResponse {
    fail(e.code(), &e.to_string())
}

/// Percent-decodes one path segment; `None` when malformed.
fn decode_segment(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `/actors/{kind}/{key...}/{message}`.
fn parse(path: &str) -> Result<(ActorId, MessageName), String> {
    let rest = path
        .strip_prefix("/actors/")
        .ok_or("path must be /actors/KIND/KEY/MESSAGE")?;
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.len() < 3 {
        return Err("path must be /actors/KIND/KEY/MESSAGE".into());
    }
    let dec = |s: &str| decode_segment(s).ok_or_else(|| format!("bad percent-encoding in {s:?}"));
    let kind = dec(segs[0])?;
    let key = segs[1..segs.len() - 1]
        .iter()
        .map(|s| dec(s))
        .collect::<Result<Vec<_>, _>>()?
        .join("/");
    let msg = dec(segs[segs.len() - 1])?;
    let id = ActorId::new(kind, key).map_err(|e| e.to_string())?;
    let name = MessageName::new(msg).map_err(|e| e.to_string())?;
    Ok((id, name))
}

/// Parses `/topics/{topic}/{message}`.
fn parse_topic(path: &str) -> Result<(TopicId, MessageName), String> {
    const SHAPE: &str = "path must be /topics/TOPIC/MESSAGE";
    let rest = path.strip_prefix("/topics/").ok_or(SHAPE)?;
    let (topic, msg) = rest.split_once('/').ok_or(SHAPE)?;
    if msg.contains('/') {
        return Err(SHAPE.into());
    }
    let dec = |s: &str| decode_segment(s).ok_or_else(|| format!("bad percent-encoding in {s:?}"));
    let topic = TopicId::new(dec(topic)?).map_err(|e| e.to_string())?;
    let name = MessageName::new(dec(msg)?).map_err(|e| e.to_string())?;
    Ok((topic, name))
}

/// `POST /topics/{topic}/{message}`: JSON in, wire codec out to the whole cluster.
pub(crate) async fn publish(inner: Arc<NodeInner>, req: AdminRequest) -> AdminResponse {
    let (topic, name) = match parse_topic(&req.path) {
        Ok(v) => v,
        Err(e) => return fail(ErrorCode::Decode, &e),
    };
    if req.body.len() > MAX_PUBLISH_BODY {
        return AdminResponse::json(
            413,
            &serde_json::json!({
                "error": format!("{:?}", ErrorCode::Rejected),
                "detail": format!(
                    "a published message may be at most {MAX_PUBLISH_BODY} bytes of JSON; this one has {}",
                    req.body.len()
                ),
            }),
        );
    }
    let timeout_ms = req
        .query_param("timeout_ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(5_000)
        .clamp(1, 600_000);
    let payload =
        match inner
            .system
            .virtuals()
            .transcode(&name, &req.body, Codec::Json, Codec::Bincode)
        {
            Ok(p) => p,
            Err(e) => return from_actor(&e),
        };
    let timeout = Duration::from_millis(timeout_ms);
    let fanout = inner.publish(&topic, name.clone(), Bytes::from(payload));
    if tokio::time::timeout(timeout, fanout).await.is_err() {
        return fail(
            ErrorCode::Timeout,
            "not handed to every member before the deadline; some subscribers may have it",
        );
    }
    AdminResponse::json(
        202,
        &serde_json::json!({ "accepted": true, "topic": topic.as_str(), "message": name.as_str() }),
    )
}

pub(crate) async fn handle(inner: Arc<NodeInner>, req: AdminRequest) -> AdminResponse {
    let (id, name) = match parse(&req.path) {
        Ok(v) => v,
        Err(e) => return fail(ErrorCode::Decode, &e),
    };
    let header_u64 = |h: &str| {
        req.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let timeout_ms = header_u64(BUDGET_HEADER)
        .or_else(|| req.query_param("timeout_ms").and_then(|v| v.parse().ok()))
        .unwrap_or(5_000)
        .clamp(1, 600_000);
    let hops = header_u64(HOPS_HEADER).unwrap_or(0) as u32;
    let tell = req
        .query_param("tell")
        .is_some_and(|v| v == "1" || v == "true");
    let timeout = Duration::from_millis(timeout_ms);
    let deadline = tokio::time::Instant::now() + timeout;
    let owner = match inner.resolve_for_edge(&id, deadline).await {
        Ok(o) => o,
        Err(cortex_protocol::ReplyResult::Err(e)) => return fail(e.code, &e.detail),
        Err(_) => return fail(ErrorCode::Unreachable, "no route"),
    };
    match owner {
        None => {
            let reg = inner.system.virtuals();
            if tell {
                match reg
                    .tell_erased(&id, &name, &req.body, Codec::Json, timeout)
                    .await
                {
                    Ok(()) => AdminResponse::json(202, &serde_json::json!({ "accepted": true })),
                    Err(e) => from_actor(&e),
                }
            } else {
                match reg
                    .send_erased(&id, &name, &req.body, Codec::Json, timeout)
                    .await
                {
                    Ok((reply_name, bytes)) => {
                        let reply: serde_json::Value = match serde_json::from_slice(&bytes) {
                            Ok(v) => v,
                            Err(e) => {
                                return fail(
                                    ErrorCode::ActorFailed,
                                    &format!("reply is not JSON: {e}"),
                                );
                            }
                        };
                        AdminResponse::json(
                            200,
                            &serde_json::json!({ "message": reply_name.as_str(), "reply": reply }),
                        )
                    }
                    Err(e) => from_actor(&e),
                }
            }
        }
        Some(owner) => {
            if hops >= MAX_HTTP_HOPS {
                return fail(
                    ErrorCode::HopLimit,
                    "proxied too many times: the cluster views disagree",
                );
            }
            let addr = inner.membership().and_then(|m| {
                m.view()
                    .members
                    .into_iter()
                    .find(|mem| mem.id.name() == owner.name())
                    .map(|mem| mem.meta.http_addr)
            });
            let Some(addr) = addr else {
                return fail(
                    ErrorCode::Unreachable,
                    &format!("{owner} is not a live member"),
                );
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            proxy(addr, &req, hops + 1, left).await
        }
    }
}

async fn proxy(
    addr: std::net::SocketAddr,
    req: &AdminRequest,
    hops: u32,
    left: Duration,
) -> AdminResponse {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let pq = match &req.query {
        Some(q) => format!("{}?{q}", req.path),
        None => req.path.clone(),
    };
    let Ok(uri) = format!("http://{addr}{pq}").parse::<hyper::Uri>() else {
        return fail(ErrorCode::Unreachable, "bad owner address");
    };
    let Ok(out) = hyper::Request::post(uri)
        .header(CONTENT_TYPE, "application/json")
        .header(HOPS_HEADER, hops.to_string())
        .header(BUDGET_HEADER, left.as_millis().max(1).to_string())
        .body(Full::new(req.body.clone()))
    else {
        return fail(ErrorCode::Unreachable, "cannot build the proxied request");
    };
    let resp = match tokio::time::timeout(left, client.request(out)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return fail(
                ErrorCode::Unreachable,
                &format!("owner {addr} unreachable: {e}"),
            );
        }
        Err(_) => {
            return fail(
                ErrorCode::Timeout,
                "the owner did not answer before the deadline",
            );
        }
    };
    let status = resp.status().as_u16();
    let body = match tokio::time::timeout(left, resp.into_body().collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => return fail(ErrorCode::Timeout, "the owner's answer did not complete"),
    };
    AdminResponse::new(status, "application/json", body).with_header(
        hyper::header::HeaderName::from_static("x-cortex-proxied"),
        HeaderValue::from_static("1"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let (id, m) = parse("/actors/account/alice/bank.Deposit").unwrap();
        assert_eq!(id.to_string(), "account/alice");
        assert_eq!(m.as_str(), "bank.Deposit");
        let (id, _) = parse("/actors/k/a/b%2Fc/x.Y").unwrap();
        assert_eq!(id.key(), "a/b/c");
        assert!(parse("/actors/k/x.Y").is_err());
        assert!(parse("/actors/k/a%zz/x.Y").is_err());
    }

    #[test]
    fn topic_paths() {
        let (t, m) = parse_topic("/topics/payments/bank.Deposit").unwrap();
        assert_eq!((t.as_str(), m.as_str()), ("payments", "bank.Deposit"));
        let (t, _) = parse_topic("/topics/a%3Ab/x.Y").unwrap();
        assert_eq!(t.as_str(), "a:b");
        assert!(parse_topic("/topics/payments").is_err());
        assert!(parse_topic("/topics/a/b/x.Y").is_err());
        assert!(parse_topic("/topics/a%zz/x.Y").is_err());
    }
}

//! The node's answers to the admin HTTP endpoint: members, readiness, metrics, the ring,
//! the activation log, live actors, membership events and the dashboard.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Method;
use hyper::header::{ACCEPT, CONTENT_SECURITY_POLICY, HeaderValue};
use serde::{Deserialize, Serialize};

use super::inner::NodeInner;
use crate::dashboard;
use crate::http::{AdminRequest, AdminResponse, AdminSource, MemberJson, MemberState, RouteFuture};

pub(crate) struct Admin {
    node: Weak<NodeInner>,
}

impl Admin {
    pub(crate) fn new(node: Weak<NodeInner>) -> Self {
        Self { node }
    }
}

#[derive(Serialize)]
struct RingJson {
    epoch: u64,
    digest: String,
    vnodes: u32,
    settled: bool,
    /// The quorum rule's state (see `placement::quorum`).
    quorum: crate::placement::quorum::QuorumStatus,
    shares: Vec<Share>,
}

#[derive(Serialize)]
struct Share {
    node: String,
    share: f64,
}

#[derive(Serialize, Deserialize)]
struct KindLive {
    kind: String,
    live: i64,
}

#[derive(Serialize, Deserialize)]
struct NodeActors {
    node: String,
    kinds: Vec<KindLive>,
}

/// Sample size for the ring share estimate: large enough for a stable percentage.
const SHARE_SAMPLES: usize = 10_000;

fn ring_json(inner: &NodeInner) -> RingJson {
    let view = inner.placement.view();
    let mut counts: BTreeMap<String, usize> = view
        .ring
        .members()
        .iter()
        .map(|m| (m.name().to_owned(), 0))
        .collect();
    for i in 0..SHARE_SAMPLES {
        // Sample ids: "sample/<i>" always passes validation.
        if let Ok(id) = cortex_protocol::ActorId::new("sample", i.to_string())
            && let Some(o) = view.owner(&id)
        {
            *counts.entry(o.name().to_owned()).or_default() += 1;
        }
    }
    RingJson {
        epoch: view.epoch,
        digest: format!("{:016x}", view.digest),
        vnodes: view.ring.vnodes(),
        settled: view.is_settled(tokio::time::Instant::now()),
        quorum: inner.quorum.lock().status(),
        shares: counts
            .into_iter()
            .map(|(node, c)| Share {
                node,
                share: c as f64 / SHARE_SAMPLES as f64,
            })
            .collect(),
    }
}

fn local_actors(inner: &NodeInner) -> NodeActors {
    NodeActors {
        node: inner.id.name().to_owned(),
        kinds: inner
            .metrics
            .live_actors()
            .into_iter()
            .map(|(kind, live)| KindLive { kind, live })
            .collect(),
    }
}

async fn fetch_actors(addr: std::net::SocketAddr) -> Option<NodeActors> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}/cluster/actors?local=1")
        .parse()
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(2), client.get(uri))
        .await
        .ok()?
        .ok()?;
    let body = tokio::time::timeout(Duration::from_secs(2), resp.into_body().collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    let mut v: Vec<NodeActors> = serde_json::from_slice(&body).ok()?;
    v.pop()
}

impl AdminSource for Admin {
    fn members(&self) -> Vec<MemberJson> {
        let Some(inner) = self.node.upgrade() else {
            return Vec::new();
        };
        let Some(m) = inner.membership() else {
            return Vec::new();
        };
        let view = m.view();
        let mut out: Vec<MemberJson> = view
            .members
            .iter()
            .chain(view.removed.iter())
            .map(|mem| MemberJson {
                name: mem.id.name().to_owned(),
                incarnation: mem.id.incarnation(),
                state: match mem.state {
                    cortex_protocol::MemberState::Up => MemberState::Alive,
                    cortex_protocol::MemberState::Suspect => MemberState::Suspect,
                    cortex_protocol::MemberState::Down => MemberState::Down,
                    cortex_protocol::MemberState::Left => MemberState::Left,
                },
                local: mem.id.name() == inner.id.name(),
                quic: mem.meta.quic_addr,
                gossip: mem.gossip_addr,
                http: Some(mem.meta.http_addr),
                roles: mem.meta.roles.clone(),
                since: mem.since,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(b.incarnation.cmp(&a.incarnation)));
        out
    }

    fn ready(&self) -> Result<(), String> {
        let inner = self.node.upgrade().ok_or("node is stopping")?;
        let m = inner.membership().ok_or("membership not started")?;
        if !inner.joined.load(std::sync::atomic::Ordering::Acquire) {
            let live = m.view().live_ids().len();
            return Err(format!("not joined yet: {live} live member(s) known"));
        }
        if !inner.has_quorum.load(std::sync::atomic::Ordering::Acquire) {
            let st = inner.quorum.lock().status();
            return Err(format!(
                "no quorum: reaches {} of the {} members of its cluster",
                st.reachable.len(),
                st.base.len()
            ));
        }
        let ring = inner.placement.view();
        if !ring.is_settled(tokio::time::Instant::now()) {
            return Err(format!("ring view (epoch {}) not settled yet", ring.epoch));
        }
        Ok(())
    }

    fn route(&self, req: &AdminRequest) -> Option<RouteFuture> {
        let inner = self.node.upgrade()?;
        if req.method == Method::POST && req.path.starts_with("/actors/") {
            let req = req.clone();
            return Some(Box::pin(super::actors_http::handle(inner, req)));
        }
        if req.method == Method::POST && req.path.starts_with("/topics/") {
            return Some(Box::pin(super::actors_http::publish(inner, req.clone())));
        }
        if req.method != Method::GET {
            return None;
        }
        if let Some(asset) = dashboard::asset(&req.path) {
            let resp = AdminResponse::new(200, asset.content_type, asset.body).with_header(
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(dashboard::CONTENT_SECURITY_POLICY),
            );
            return Some(Box::pin(async move { resp }));
        }
        let resp = match req.path.as_str() {
            "/metrics" => {
                let accept = req.headers.get(ACCEPT).and_then(|v| v.to_str().ok());
                super::scrape::sync(&inner);
                let (ct, body) = inner.metrics.encode_for_accept(accept);
                AdminResponse::new(200, ct, body)
            }
            "/cluster/ring" => {
                if let Some(id) = req.query_param("id") {
                    match id.parse::<cortex_protocol::ActorId>() {
                        Ok(id) => {
                            let view = inner.placement.view();
                            AdminResponse::json(
                                200,
                                &serde_json::json!({
                                    "id": id.to_string(),
                                    "owner": view.owner(&id).map(|o| o.to_string()),
                                    "epoch": view.epoch,
                                }),
                            )
                        }
                        Err(e) => AdminResponse::error(400, &e.to_string()),
                    }
                } else {
                    AdminResponse::json(200, &ring_json(&inner))
                }
            }
            "/cluster/activations" => {
                let since = req
                    .query_param("since")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                AdminResponse::json(200, &inner.activations.since(since))
            }
            "/cluster/events" => AdminResponse::json(200, &inner.events.recent()),
            "/cluster/quorum" => AdminResponse::json(200, &inner.quorum.lock().status()),
            "/cluster/actors" => {
                let local = local_actors(&inner);
                if req.query_param("local").is_some() {
                    AdminResponse::json(200, &vec![local])
                } else {
                    let others: Vec<_> = inner
                        .membership()
                        .map(|m| m.view().members)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|mem| mem.is_live() && mem.id != inner.id)
                        .map(|mem| mem.meta.http_addr)
                        .collect();
                    return Some(Box::pin(async move {
                        let fetched =
                            futures::future::join_all(others.into_iter().map(fetch_actors)).await;
                        let mut all = vec![local];
                        all.extend(fetched.into_iter().flatten());
                        all.sort_by(|a, b| a.node.cmp(&b.node));
                        AdminResponse::json(200, &all)
                    }));
                }
            }
            _ => return None,
        };
        Some(Box::pin(async move { resp }))
    }
}

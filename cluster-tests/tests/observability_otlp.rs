//! One request, one trace across nodes: an ask enters node A for an id owned by node B, A
//! forwards it over QUIC, and the spans both nodes export over OTLP form one trace with the
//! right parent links. The OTLP receiver is a small tonic server in this test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cortex_cluster_tests::{Binary, ClusterOptions, TestCluster, http_get};
use cortex_protocol::{
    ActorId, Ask, MessageName, PeerIdentity, ReplyResult, RequestId, RequestMeta, Target,
    TraceContext, TraceParent,
};
use cortex_transport::{Endpoint, EndpointConfig, Handler, TlsMaterial};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// A span as received: the node that exported it, ids, parent, name.
#[derive(Debug, Clone)]
struct Got {
    node: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
}

#[derive(Default, Clone)]
struct Receiver(Arc<Mutex<Vec<Got>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let node = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "cortex.node")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Got {
                        node: node.clone(),
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                        name: s.name,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

struct NoInbound;
impl Handler for NoInbound {
    fn on_envelope(&self, _: &cortex_transport::Connection, _: cortex_protocol::Envelope) {}
    fn on_ask(&self, _: &cortex_transport::Connection, _: Ask, _: cortex_transport::Responder) {}
}

fn owner_of(http: SocketAddr, id: &str) -> String {
    let r = http_get(
        http,
        &format!("/cluster/ring?id={id}"),
        Duration::from_secs(5),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let owner = v["owner"].as_str().unwrap().to_owned();
    owner.split('#').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_across_two_nodes_is_one_trace() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The OTLP receiver.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let recv = Receiver::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(recv.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let opts = ClusterOptions {
        binary: Binary::Bank,
        extra_args: vec!["--otlp-endpoint".into(), format!("http://{otlp}")],
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::block_in_place(|| {
        let mut c = TestCluster::new(opts).unwrap();
        for name in ["a", "b"] {
            let mut spec = c.spec(name);
            spec.env
                .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
            c.add(spec).unwrap();
        }
        c.wait_converged(Duration::from_secs(60)).unwrap();
        c
    });
    let a = cluster.node(0).http_addr();
    let a_quic = cluster.node(0).quic_addr();
    // An id that b owns, asked through a.
    let id = (0..1000)
        .map(|i| format!("account/t{i}"))
        .find(|id| tokio::task::block_in_place(|| owner_of(a, id)) == "b")
        .expect("some id is owned by b");

    // A client with its own certificate, connected to a only.
    let status = std::process::Command::new(cluster.binary())
        .args(["certs", "issue", "tracer", "--client", "--dir"])
        .arg(cluster.ca().dir())
        .status()
        .unwrap();
    assert!(status.success());
    let tls = TlsMaterial::load(
        &cluster.ca().ca_cert(),
        &cluster.ca().cert("tracer"),
        &cluster.ca().key("tracer"),
    )
    .unwrap();
    let cfg = EndpointConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        tls,
        PeerIdentity::Client {
            name: "tracer".into(),
        },
        cluster.options().cluster_name.clone(),
    );
    let ep = Endpoint::bind(cfg, Arc::new(NoInbound)).unwrap();
    let conn = ep.connect(a_quic, "a").await.unwrap();

    let trace_id: [u8; 16] = *b"cortex-trace-001";
    let root_span: [u8; 8] = *b"rootspan";
    let ask = Ask {
        request: RequestId(0),
        target: Target::Virtual(id.parse::<ActorId>().unwrap()),
        message: MessageName::new("bank.Deposit").unwrap(),
        payload: cortex_protocol::encode_payload(&7u64).unwrap().into(),
        meta: RequestMeta {
            budget_us: 10_000_000,
            trace: TraceContext {
                parent: Some(TraceParent {
                    trace_id,
                    span_id: root_span,
                    flags: 1,
                }),
                tracestate: String::new(),
            },
        },
        epoch: 0,
        idempotency_key: None,
    };
    let reply = conn.ask(ask, Duration::from_secs(10)).await.unwrap();
    assert!(matches!(reply, ReplyResult::Ok { .. }), "{reply:?}");

    // Both nodes export their spans of that trace.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans: Vec<Got> = recv
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        let has = |node: &str, name: &str| spans.iter().any(|s| s.node == node && s.name == name);
        if has("a", "cortex.route") && has("a", "cortex.forward") && has("b", "cortex.route") {
            break spans;
        }

        assert!(
            tokio::time::Instant::now() < deadline,
            "spans of the trace from both nodes did not arrive: {spans:?}\nall spans: {:?}\nlogs:\n{}",
            recv.0.lock().unwrap(),
            cluster.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let find = |node: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.node == node && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span from {node}: {spans:?}"))
            .clone()
    };
    let a_route = find("a", "cortex.route");
    let a_fwd = find("a", "cortex.forward");
    let b_route = find("b", "cortex.route");
    assert_eq!(
        a_route.parent,
        root_span.to_vec(),
        "a's span continues the caller's"
    );
    assert_eq!(
        a_fwd.parent, a_route.span_id,
        "the forward is a child of a's route span"
    );
    assert_eq!(
        b_route.parent, a_fwd.span_id,
        "b's span is a child of a's forward span"
    );
    drop(conn);
    ep.close().await;
    // Killing the processes waits on them: keep that off the async workers.
    tokio::task::block_in_place(move || drop(cluster));
    server.abort();
}

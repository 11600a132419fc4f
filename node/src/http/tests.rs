//! The server over real TCP on 127.0.0.1, answering from a test double of the node (the
//! real node implements `AdminSource` elsewhere).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::*;

const DEADLINE: Duration = Duration::from_secs(30);

struct FakeNode {
    ready: Mutex<Result<(), String>>,
    routes: Routes,
}

fn member(name: &str, port: u16) -> MemberJson {
    MemberJson {
        name: name.into(),
        incarnation: 42,
        state: MemberState::Alive,
        local: name == "n0",
        quic: format!("127.0.0.1:{port}").parse().unwrap(),
        gossip: format!("127.0.0.1:{}", port + 1).parse().unwrap(),
        http: Some(format!("127.0.0.1:{}", port + 80).parse().unwrap()),
        roles: vec!["web".into()],
        since: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
    }
}

impl AdminSource for FakeNode {
    fn members(&self) -> Vec<MemberJson> {
        vec![member("n0", 7400), member("n1", 7500)]
    }
    fn ready(&self) -> Result<(), String> {
        self.ready.lock().clone()
    }
    fn route(&self, req: &AdminRequest) -> Option<RouteFuture> {
        self.routes.dispatch(req)
    }
}

fn node(routes: Routes) -> Arc<FakeNode> {
    Arc::new(FakeNode {
        ready: Mutex::new(Err("joining: 1 of 3 seeds answered".into())),
        routes,
    })
}

async fn start(source: Arc<FakeNode>, limits: HttpLimits) -> AdminServer {
    AdminServer::bind("127.0.0.1:0".parse().unwrap(), source, limits)
        .await
        .unwrap()
}

async fn request(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    body: &'static [u8],
) -> (u16, hyper::HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    driver.abort();
    (status, headers, body)
}

#[tokio::test]
async fn health_ready_members_and_index() {
    let src = node(Routes::new());
    let server = start(src.clone(), HttpLimits::default()).await;
    let addr = server.local_addr();

    let (s, h, b) = request(addr, Method::GET, "/health", b"").await;
    assert_eq!((s, &b[..]), (200, &b"ok\n"[..]));
    assert_eq!(h["x-content-type-options"], "nosniff");

    let (s, h, b) = request(addr, Method::GET, "/ready", b"").await;
    assert_eq!(s, 503);
    assert_eq!(h["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["reason"], "joining: 1 of 3 seeds answered");

    *src.ready.lock() = Ok(());
    let (s, _, b) = request(addr, Method::GET, "/ready", b"").await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()["ready"],
        true
    );

    let (s, _, b) = request(addr, Method::GET, "/cluster/members", b"").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["name"], "n0");
    assert_eq!(arr[0]["incarnation"], 42);
    assert_eq!(arr[0]["state"], "alive");
    assert_eq!(arr[0]["local"], true);
    assert_eq!(arr[0]["quic"], "127.0.0.1:7400");
    assert_eq!(arr[0]["gossip"], "127.0.0.1:7401");
    assert_eq!(arr[0]["http"], "127.0.0.1:7480");
    assert_eq!(arr[0]["roles"][0], "web");
    assert_eq!(arr[0]["since"], "2023-11-14T22:13:20.123Z");
    assert_eq!(arr[0]["since_unix_ms"], 1_700_000_000_123u64);
    let back: Vec<MemberJson> = serde_json::from_slice(&b).unwrap();
    assert_eq!(back, src.members());

    let (s, _, b) = request(addr, Method::GET, "/", b"").await;
    assert_eq!(s, 200);
    assert!(
        std::str::from_utf8(&b)
            .unwrap()
            .contains("/cluster/members")
    );

    let (s, _, _) = request(addr, Method::GET, "/nope", b"").await;
    assert_eq!(s, 404);
    let (s, h, _) = request(addr, Method::POST, "/health", b"x").await;
    assert_eq!(s, 405);
    assert_eq!(h["allow"], "GET, HEAD");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn extension_routes_get_method_path_query_and_body() {
    let routes = Routes::new()
        .route(Method::POST, "/echo", |req: AdminRequest| async move {
            AdminResponse::text(
                201,
                format!(
                    "{} {} {:?} {}",
                    req.method,
                    req.path,
                    req.query_param("x"),
                    String::from_utf8_lossy(&req.body)
                ),
            )
        })
        .get("/actors/*", |req: AdminRequest| async move {
            AdminResponse::json(200, &serde_json::json!({ "path": req.path }))
        })
        .get("/", |_| async {
            AdminResponse::new(200, "text/html", "<h1>dash</h1>")
        });
    let server = start(node(routes), HttpLimits::default()).await;
    let addr = server.local_addr();
    let (s, _, b) = request(addr, Method::POST, "/echo?x=1&y=2", b"hello").await;
    assert_eq!((s, &b[..]), (201, &b"POST /echo Some(\"1\") hello"[..]));
    let (s, _, b) = request(addr, Method::GET, "/actors/order/7", b"").await;
    assert_eq!(s, 200);
    assert_eq!(&b[..], br#"{"path":"/actors/order/7"}"#);
    let (s, h, b) = request(addr, Method::GET, "/", b"").await;
    assert_eq!((s, &b[..]), (200, &b"<h1>dash</h1>"[..]));
    assert_eq!(h["content-type"], "text/html");
    let (s, _, _) = request(addr, Method::GET, "/echo", b"").await;
    assert_eq!(s, 404, "method is part of the match");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let routes = Routes::new().route(Method::POST, "/in", |_| async {
        AdminResponse::text(200, "took it")
    });
    let limits = HttpLimits {
        max_body_bytes: 8,
        ..HttpLimits::default()
    };
    let server = start(node(routes), limits).await;
    let (s, _, _) = request(server.local_addr(), Method::POST, "/in", b"12345678").await;
    assert_eq!(s, 200);
    let (s, _, b) = request(server.local_addr(), Method::POST, "/in", b"123456789").await;
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&b));
    server.shutdown().await.unwrap();
}

async fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out))
        .await
        .expect("the server should close the connection")
        .unwrap_or_default();
    out
}

#[tokio::test]
async fn slow_or_silent_clients_are_cut_off() {
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(200),
        ..HttpLimits::default()
    };
    let server = start(node(Routes::new()), limits).await;
    // Silent: connects and sends nothing.
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    assert!(read_to_eof(&mut silent).await.is_empty());
    // Slow: sends half a request head and stops.
    let mut slow = TcpStream::connect(server.local_addr()).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let got = read_to_eof(&mut slow).await;
    assert!(
        !got.windows(6).any(|w| w == b"200 OK"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    server.shutdown().await.unwrap();
}

/// A route that waits until the test releases it, to hold a connection busy.
fn gated_routes(entered: Arc<Notify>, release: Arc<Notify>) -> Routes {
    Routes::new().get("/slow", move |_| {
        let (entered, release) = (entered.clone(), release.clone());
        async move {
            entered.notify_one();
            release.notified().await;
            AdminResponse::text(200, "done")
        }
    })
}

#[tokio::test]
async fn connections_are_bounded() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let limits = HttpLimits {
        max_connections: 1,
        ..HttpLimits::default()
    };
    let server = start(node(gated_routes(entered.clone(), release.clone())), limits).await;
    let addr = server.local_addr();
    let first = tokio::spawn(request(addr, Method::GET, "/slow", b""));
    tokio::time::timeout(DEADLINE, entered.notified())
        .await
        .unwrap();
    let mut second = tokio::spawn(request(addr, Method::GET, "/health", b""));
    // While the only permit is held the second connection is not served. (A correct server
    // always passes this; a broken one fails it almost always.)
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut second)
            .await
            .is_err(),
        "second connection was served beyond the limit"
    );
    release.notify_one();
    let (s, _, b) = tokio::time::timeout(DEADLINE, first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s, &b[..]), (200, &b"done"[..]));
    let (s, _, _) = tokio::time::timeout(DEADLINE, second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let src = node(gated_routes(entered.clone(), release.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(serve(listener, src, HttpLimits::default(), stop.clone()));
    let in_flight = tokio::spawn(request(addr, Method::GET, "/slow", b""));
    tokio::time::timeout(DEADLINE, entered.notified())
        .await
        .unwrap();
    stop.cancel();
    release.notify_one();
    let (s, _, b) = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s, &b[..]), (200, &b"done"[..]));
    tokio::time::timeout(DEADLINE, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_cuts_requests_that_outlive_the_grace() {
    let entered = Arc::new(Notify::new());
    let never = Arc::new(Notify::new());
    let limits = HttpLimits {
        shutdown_grace: Duration::from_secs(5),
        ..HttpLimits::default()
    };
    let server = start(node(gated_routes(entered.clone(), never)), limits).await;
    let addr = server.local_addr();
    let stuck = tokio::spawn(request(addr, Method::GET, "/slow", b""));
    tokio::time::timeout(DEADLINE, entered.notified())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    server.shutdown().await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(5));
    stuck.abort();
}

#[tokio::test(start_paused = true)]
async fn slow_handlers_get_503_after_the_request_timeout() {
    let entered = Arc::new(Notify::new());
    let never = Arc::new(Notify::new());
    let limits = HttpLimits {
        request_timeout: Duration::from_secs(2),
        ..HttpLimits::default()
    };
    let server = start(node(gated_routes(entered, never)), limits).await;
    let (s, _, _) = request(server.local_addr(), Method::GET, "/slow", b"").await;
    assert_eq!(s, 503);
    server.shutdown().await.unwrap();
}

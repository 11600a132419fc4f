//! `/metrics` of a real 3-node cluster under a small workload: every node's exposition passes
//! `promtool check metrics` (no errors, no lint warnings) and counts the workload, and a real
//! Prometheus server started by this test scrapes all three nodes and answers queries over
//! them through its HTTP API.
//!
//! Needs `promtool` and `prometheus` (Debian package `prometheus`): run
//! `scripts/install-test-deps.sh` first. The test fails, never skips, when they are missing.

#[path = "../../node/examples/shared/messages.rs"]
mod messages;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use cortex_client::Client;
use cortex_client::admin::{AdminClient, sum_metric};
use cortex_cluster_tests::{Binary, ClusterOptions, TestCluster, http_get, poll_until};
use cortex_protocol::{ActorId, MessageName};
use cortex_transport::TlsMaterial;
use futures::StreamExt;
use messages::{Deposit, Incr};

const INSTALL_HINT: &str = "run scripts/install-test-deps.sh (it installs the Debian package `prometheus`, which has promtool and the server)";

/// Asks to distinct accounts, tells to distinct counters: enough ids that every node owns
/// some (a node owning none of 150 ids has probability about (2/3)^150).
const ACCOUNTS: usize = 100;
const COUNTERS: usize = 50;
const TELLS_PER_COUNTER: usize = 4;
/// JSON asks through the HTTP edge of node 1.
const HTTP_ASKS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_under_load_pass_promtool_and_prometheus_scrapes_every_node() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let promtool = tool("promtool");
    let prometheus_bin = tool("prometheus");

    let opts = ClusterOptions {
        binary: Binary::Bank,
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::block_in_place(|| {
        let mut c = TestCluster::start(3, opts).unwrap();
        c.wait_converged(Duration::from_secs(30)).unwrap();
        c
    });

    run_workload(&cluster).await;

    tokio::task::block_in_place(|| {
        // Tells are one-way: wait until every one has been counted somewhere.
        let want = (ACCOUNTS + COUNTERS * TELLS_PER_COUNTER) as f64;
        poll_until(
            Duration::from_secs(20),
            "every ask and tell counted in cortex_messages_received_total",
            || {
                let got = cluster_sum(&cluster, "cortex_messages_received_total")?;
                if got >= want {
                    Ok(())
                } else {
                    Err(format!("{got} of {want}"))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}\nlogs:\n{}", cluster.all_logs()));

        for node in cluster.nodes() {
            let text = node.metrics().unwrap();
            promtool_check(&promtool, node.name(), &text);
            for metric in [
                "cortex_messages_received_total",
                "cortex_activations_total",
                "cortex_ask_duration_seconds_count",
                "cortex_ask_duration_seconds_sum",
            ] {
                assert!(
                    sum_metric(&text, metric) > 0.0,
                    "{metric} is zero on {} after the workload:\n{text}",
                    node.name()
                );
            }
            // Per-peer QUIC series, one per other node (the lost-packets counter is how an
            // operator sees a UDP receive buffer that is too small).
            for metric in [
                "cortex_peer_sent_bytes_total{",
                "cortex_peer_lost_packets_total{",
            ] {
                let peers = text.lines().filter(|l| l.starts_with(metric)).count();
                assert_eq!(peers, 2, "{metric} series on {}:\n{text}", node.name());
            }
        }

        let targets: Vec<SocketAddr> = cluster.nodes().iter().map(|n| n.http_addr()).collect();
        let prom = Prometheus::start(&prometheus_bin, &targets);
        let up = prom.poll_scalar(
            r#"count(up{job="cortex"} == 1)"#,
            Duration::from_secs(30),
            |v| v == 3.0,
        );
        assert_eq!(up, 3.0);
        // Every node's own series arrived (the registry labels each with node="nX").
        let nodes = prom.poll_scalar(
            "count(count by (node) (cortex_activations_total))",
            Duration::from_secs(20),
            |v| v == 3.0,
        );
        assert_eq!(nodes, 3.0);
        // Prometheus' sum over the three nodes equals the sum of what they serve.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let direct = cluster_sum(&cluster, "cortex_activations_total").unwrap();
            let scraped = prom.query_scalar("sum(cortex_activations_total)");
            if scraped == Some(direct) && direct > 0.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sum(cortex_activations_total) from Prometheus {scraped:?} never matched the nodes' {direct}\nprometheus log:\n{}",
                prom.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let asks = prom.poll_scalar(
            "sum(cortex_ask_duration_seconds_count)",
            Duration::from_secs(20),
            |v| v >= ACCOUNTS as f64,
        );
        assert!(asks >= ACCOUNTS as f64, "{asks}");
    });
}

/// `name` on the PATH, or a failure that says how to install it.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("`{name}` is not installed: {INSTALL_HINT}"))
}

/// The sum of `metric` over every node's `/metrics`.
fn cluster_sum(cluster: &TestCluster, metric: &str) -> Result<f64, String> {
    let mut total = 0.0;
    for node in cluster.nodes() {
        total += sum_metric(&node.metrics().map_err(|e| e.to_string())?, metric);
    }
    Ok(total)
}

/// Asks (QUIC, straight to the owners), tells, and a few JSON asks through the HTTP edge.
async fn run_workload(cluster: &TestCluster) {
    let ca = cluster.ca();
    let out = Command::new(cluster.binary())
        .args(["certs", "issue", "metrics-client", "--client", "--dir"])
        .arg(ca.dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "issuing a client certificate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tls = TlsMaterial::load(
        &ca.ca_cert(),
        &ca.cert("metrics-client"),
        &ca.key("metrics-client"),
    )
    .unwrap();
    let client = Client::builder()
        .seeds(cluster.nodes().iter().map(|n| n.quic_addr().to_string()))
        .cluster(cluster.options().cluster_name.clone())
        .tls(tls)
        .connect()
        .await
        .unwrap();
    client
        .wait_for_topology(Duration::from_secs(10), |v| v.owners().len() == 3)
        .await
        .unwrap();

    let asks = futures::stream::iter(0..ACCOUNTS)
        .map(|i| {
            let c = client.clone();
            async move {
                let id = ActorId::new("account", format!("m{i}")).unwrap();
                c.ask(&id, Deposit(5)).await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for r in asks {
        assert_eq!(r.unwrap(), 5, "a fresh account holds its first deposit");
    }
    let tells = futures::stream::iter(0..COUNTERS * TELLS_PER_COUNTER)
        .map(|i| {
            let c = client.clone();
            async move {
                let id = ActorId::new("counter", format!("t{}", i % COUNTERS)).unwrap();
                c.tell(&id, Incr).await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for r in tells {
        r.unwrap();
    }

    let admin = AdminClient::new(&format!("http://{}", cluster.node(1).http_addr())).unwrap();
    let balance = MessageName::new("bank.Balance").unwrap();
    for i in 0..HTTP_ASKS {
        let id = ActorId::new("account", format!("m{i}")).unwrap();
        let r = admin
            .ask_json(
                &id,
                &balance,
                &serde_json::json!(null),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(r.reply, serde_json::json!(5), "{r:?}");
    }
    client.shutdown().await;
}

/// `promtool check metrics` on one node's exposition: exit 0 and nothing printed (lint
/// findings are printed, and make it exit non-zero).
fn promtool_check(promtool: &Path, node: &str, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}; {INSTALL_HINT}", promtool.display()));
    // Invariant: stdin was requested as a pipe just above.
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && printed.trim().is_empty(),
        "promtool check metrics on {node}'s /metrics: {}\n{printed}\nexposition:\n{text}",
        out.status
    );
}

/// A Prometheus server on 127.0.0.1 (a port from the OS) with its TSDB in a temporary
/// directory, scraping `targets` every 250 ms as job `cortex`.
///
/// It runs under a small bash wrapper that kills it (by PID) when the wrapper's stdin closes,
/// so it dies with this test even when the test process dies without running destructors;
/// dropping this value closes that pipe, waits for the server to exit, and SIGKILLs it by PID
/// if it did not.
struct Prometheus {
    wrapper: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// `$0` is the server binary, the rest its arguments. Prints the server's PID, then waits
/// until stdin closes (`read` fails without timing out) or the server exits.
const WRAPPER: &str = r#""$0" "$@" & pid=$!
echo "$pid"
while kill -0 "$pid" 2>/dev/null; do
  read -r -t 0.2 _; rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -le 128 ]; then kill "$pid"; wait "$pid"; exit 0; fi
done
wait "$pid""#;

impl Prometheus {
    fn start(binary: &Path, targets: &[SocketAddr]) -> Prometheus {
        let mut last = String::new();
        // The OS-chosen port is free when chosen; another process may take it before the
        // server binds it, so try again with a new one.
        for _ in 0..3 {
            match Self::try_start(binary, targets) {
                Ok(p) => return p,
                Err(e) => last = e,
            }
        }
        panic!("Prometheus did not start: {last}");
    }

    fn try_start(binary: &Path, targets: &[SocketAddr]) -> Result<Prometheus, String> {
        let dir = tempfile::Builder::new()
            .prefix("cortex-prometheus-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n  evaluation_interval: 250ms\n\
             scrape_configs:\n  - job_name: cortex\n    static_configs:\n      - targets: [{list}]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("prometheus.log")).map_err(|e| e.to_string())?;
        let mut wrapper = Command::new("bash")
            .arg("-c")
            .arg(WRAPPER)
            .arg(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--log.level=warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}; {INSTALL_HINT}", binary.display()))?;
        let stdin = wrapper.stdin.take();
        let pid = {
            use std::io::BufRead;
            // Invariant: stdout was requested as a pipe just above.
            let out = wrapper.stdout.take().expect("piped stdout");
            let mut line = String::new();
            std::io::BufReader::new(out)
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            line.trim()
                .parse::<u32>()
                .map_err(|e| format!("{e}: {line:?}"))?
        };
        let mut prom = Prometheus {
            wrapper,
            stdin,
            pid,
            addr,
            dir,
        };
        let ready = poll_until(Duration::from_secs(20), "Prometheus to be ready", || {
            if let Ok(Some(status)) = prom.wrapper.try_wait() {
                return Ok(Err(format!("exited with {status}")));
            }
            match http_get(addr, "/-/ready", Duration::from_secs(2)) {
                Ok(r) if r.status == 200 => Ok(Ok(())),
                Ok(r) => Err(format!("status {}", r.status)),
                Err(e) => Err(e.to_string()),
            }
        });
        match ready {
            Ok(Ok(())) => Ok(prom),
            Ok(Err(e)) => Err(format!("{e}\nlog:\n{}", prom.log())),
            Err(e) => {
                let log = prom.log();
                prom.stop();
                Err(format!("{e}\nlog:\n{log}"))
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query that yields one sample; `None` for an empty result.
    fn query_scalar(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let r = http_get(self.addr, &path, Duration::from_secs(5)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        assert_eq!(v["status"], "success", "query {query}: {}", r.body);
        let result = v["data"]["result"].as_array()?;
        let sample = result.first()?;
        sample["value"][1].as_str()?.parse().ok()
    }

    /// Polls `query` until `ok` holds for its value; fails with the last value and the
    /// server's log at the deadline.
    fn poll_scalar(&self, query: &str, deadline: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        poll_until(deadline, query, || match self.query_scalar(query) {
            Some(v) if ok(v) => Ok(v),
            other => Err(format!("last value {other:?}")),
        })
        .unwrap_or_else(|e| panic!("{e}\nprometheus log:\n{}", self.log()))
    }

    fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.wrapper.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.wrapper.kill();
        let _ = self.wrapper.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The cost of tracing: a benchmark, not run by default (BENCHMARKS.md, "Observability").
// ---------------------------------------------------------------------------------------

mod overhead {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use cortex_cluster_tests::{Binary, ClusterOptions, TestCluster, http_get};
    use cortex_protocol::{
        ActorId, Ask, MessageName, PeerIdentity, ReplyResult, RequestId, RequestMeta, Target,
    };
    use cortex_transport::{Endpoint, EndpointConfig, Handler, TlsMaterial};
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };

    /// An OTLP/gRPC trace receiver that only counts spans.
    #[derive(Default, Clone)]
    struct SpanCounter(Arc<AtomicU64>);

    #[tonic::async_trait]
    impl TraceService for SpanCounter {
        async fn export(
            &self,
            req: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let n: usize = req
                .into_inner()
                .resource_spans
                .iter()
                .flat_map(|rs| rs.scope_spans.iter())
                .map(|ss| ss.spans.len())
                .sum();
            self.0.fetch_add(n as u64, Ordering::Relaxed);
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        }
    }

    struct NoInbound;
    impl Handler for NoInbound {
        fn on_envelope(&self, _: &cortex_transport::Connection, _: cortex_protocol::Envelope) {}
        fn on_ask(&self, _: &cortex_transport::Connection, _: Ask, _: cortex_transport::Responder) {
        }
    }

    /// One configuration of the nodes: no tracing, or OTLP export sampled at `ratio`.
    #[derive(Debug, Clone, Copy)]
    enum Tracing {
        Off,
        On(f64),
    }

    impl Tracing {
        fn label(self) -> String {
            match self {
                Tracing::Off => "off".into(),
                Tracing::On(r) => format!("on, sampled {}%", r * 100.0),
            }
        }
    }

    /// What one run measured.
    #[derive(Debug, Clone)]
    struct Run {
        tracing: Tracing,
        asks: u64,
        secs: f64,
        /// CPU time (user + system) of both nodes over the measured window.
        node_cpu_s: f64,
        spans: u64,
    }

    impl Run {
        fn rate(&self) -> f64 {
            self.asks as f64 / self.secs
        }
        fn cpu_us_per_ask(&self) -> f64 {
            self.node_cpu_s * 1e6 / self.asks as f64
        }
    }

    fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// utime + stime of `pid`, in seconds (from `/proc/PID/stat`; 100 ticks a second).
    fn cpu_seconds(pid: u32) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
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

    async fn run_once(
        tracing: Tracing,
        otlp: SocketAddr,
        spans: &SpanCounter,
        secs: f64,
        in_flight: usize,
    ) -> Run {
        let opts = ClusterOptions {
            binary: Binary::Bank,
            log_level: "warn".into(),
            extra_args: match tracing {
                Tracing::Off => Vec::new(),
                Tracing::On(_) => vec!["--otlp-endpoint".into(), format!("http://{otlp}")],
            },
            ..ClusterOptions::default()
        };
        let cluster = tokio::task::block_in_place(|| {
            let mut c = TestCluster::new(opts).unwrap();
            for name in ["a", "b"] {
                let mut spec = c.spec(name);
                if let Tracing::On(r) = tracing {
                    spec.env
                        .push(("OTEL_TRACES_SAMPLER_ARG".into(), r.to_string()));
                }
                c.add(spec).unwrap();
            }
            c.wait_converged(Duration::from_secs(60)).unwrap();
            let out = std::process::Command::new(c.binary())
                .args(["certs", "issue", "bench", "--client", "--dir"])
                .arg(c.ca().dir())
                .output()
                .unwrap();
            assert!(out.status.success());
            c
        });
        let a = cluster.node(0).http_addr();
        // Accounts owned by b, asked through a: every ask is forwarded a -> b.
        let ids: Vec<ActorId> = tokio::task::block_in_place(|| {
            (0..2000)
                .map(|i| format!("account/o{i}"))
                .filter(|id| owner_of(a, id) == "b")
                .take(200)
                .map(|id| id.parse().unwrap())
                .collect()
        });
        let ca = cluster.ca();
        let tls = TlsMaterial::load(&ca.ca_cert(), &ca.cert("bench"), &ca.key("bench")).unwrap();
        let cfg = EndpointConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            tls,
            PeerIdentity::Client {
                name: "bench".into(),
            },
            cluster.options().cluster_name.clone(),
        );
        let ep = Endpoint::bind(cfg, Arc::new(NoInbound)).unwrap();
        let conn = ep.connect(cluster.node(0).quic_addr(), "a").await.unwrap();
        let deposit = MessageName::new("bank.Deposit").unwrap();
        let payload = cortex_protocol::encode_payload(&1u64).unwrap();
        let ask = move |id: &ActorId| Ask {
            request: RequestId(0),
            target: Target::Virtual(id.clone()),
            message: deposit.clone(),
            payload: payload.clone().into(),
            meta: RequestMeta {
                budget_us: 10_000_000,
                trace: Default::default(),
            },
            epoch: 0,
            idempotency_key: None,
        };
        // Warm-up: activate every actor, open a -> b.
        for id in &ids {
            let r = conn.ask(ask(id), Duration::from_secs(10)).await.unwrap();
            assert!(matches!(r, ReplyResult::Ok { .. }), "{r:?}");
        }

        let pids: Vec<u32> = cluster.nodes().iter().map(|n| n.pid().unwrap()).collect();
        let spans_before = spans.0.load(Ordering::Relaxed);
        let cpu_before: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum();
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(secs);
        let ids = Arc::new(ids);
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..in_flight {
            let conn = conn.clone();
            let ids = Arc::clone(&ids);
            let ask = ask.clone();
            tasks.spawn(async move {
                let mut n = 0u64;
                let mut i = t;
                while Instant::now() < end {
                    let r = conn
                        .ask(ask(&ids[i % ids.len()]), Duration::from_secs(10))
                        .await
                        .unwrap();
                    assert!(matches!(r, ReplyResult::Ok { .. }), "{r:?}");
                    n += 1;
                    i += in_flight;
                }
                n
            });
        }
        let mut asks = 0;
        while let Some(n) = tasks.join_next().await {
            asks += n.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu_after: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum();
        // With tracing on, wait for the sampled spans of the window to be exported (the
        // batch exporter sends every 5 s): proof that the traced run traced.
        let mut spans_seen = spans.0.load(Ordering::Relaxed) - spans_before;
        if let Tracing::On(r) = tracing {
            let want = (asks as f64 * r * 3.0 * 0.5) as u64;
            let deadline = Instant::now() + Duration::from_secs(15);
            while spans_seen < want.max(1) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                spans_seen = spans.0.load(Ordering::Relaxed) - spans_before;
            }
            assert!(spans_seen > 0, "tracing was on but no span arrived");
        }
        drop(conn);
        ep.close().await;
        tokio::task::block_in_place(|| drop(cluster));
        Run {
            tracing,
            asks,
            secs,
            node_cpu_s: cpu_after - cpu_before,
            spans: spans_seen,
        }
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    /// Remote ask throughput and node CPU per ask with tracing off, sampled at 1 % and at
    /// 100 %: a client asks accounts through node a that node b owns (each ask is routed on
    /// a, forwarded over QUIC, routed on b), `BENCH_IN_FLIGHT` (64) asks in flight for
    /// `BENCH_SECS` (5) per run, `BENCH_ROUNDS` (3) rounds with the configurations in
    /// rotating order. Run it against release binaries:
    ///
    /// ```sh
    /// cargo build --release -p cortex-node --example bank
    /// CORTEX_BIN_DIR=$PWD/target/release cargo test --release -p cortex-cluster-tests \
    ///   --test observability_metrics -- --ignored --nocapture tracing_overhead
    /// ```
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark: run in release, see BENCHMARKS.md, Observability"]
    // A benchmark: its results are its output (run with --nocapture).
    #[allow(clippy::print_stdout)]
    async fn tracing_overhead() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rounds: usize = env_or("BENCH_ROUNDS", 3);
        let secs: f64 = env_or("BENCH_SECS", 5.0);
        let in_flight: usize = env_or("BENCH_IN_FLIGHT", 64);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let otlp = listener.local_addr().unwrap();
        let spans = SpanCounter::default();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(spans.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let configs = [Tracing::Off, Tracing::On(0.01), Tracing::On(1.0)];
        let mut runs = Vec::new();
        for round in 0..rounds {
            for k in 0..configs.len() {
                let t = configs[(k + round) % configs.len()];
                let r = run_once(t, otlp, &spans, secs, in_flight).await;
                println!(
                    "round {round} tracing {:<16} {:>8.0} asks/s  {:>6.1} µs node CPU/ask  ({} asks, {} spans)",
                    r.tracing.label(),
                    r.rate(),
                    r.cpu_us_per_ask(),
                    r.asks,
                    r.spans
                );
                runs.push(r);
            }
        }
        server.abort();
        println!(
            "\n| tracing | asks/s (median) | node CPU µs/ask (median) | spans exported per ask |"
        );
        println!("|---|---|---|---|");
        let mut base = None;
        for t in configs {
            let of: Vec<&Run> = runs
                .iter()
                .filter(|r| r.tracing.label() == t.label())
                .collect();
            let rate = median(of.iter().map(|r| r.rate()).collect());
            let cpu = median(of.iter().map(|r| r.cpu_us_per_ask()).collect());
            let spans: f64 = of.iter().map(|r| r.spans as f64).sum::<f64>()
                / of.iter().map(|r| r.asks as f64).sum::<f64>();
            let (b_rate, b_cpu) = *base.get_or_insert((rate, cpu));
            println!(
                "| {} | {rate:.0} ({:+.1} %) | {cpu:.1} ({:+.1} %) | {spans:.3} |",
                t.label(),
                (rate / b_rate - 1.0) * 100.0,
                (cpu / b_cpu - 1.0) * 100.0
            );
        }
    }
}

//! The dashboard in a real browser: headless Chromium loads `/dashboard` from each node of a
//! running 3-node cluster under a small workload, runs its JavaScript, and the rendered DOM
//! shows every member as alive, the live actors of the workload, and an "ok" status.
//!
//! Needs Chromium (Debian package `chromium`): run `scripts/install-test-deps.sh` first. The
//! test fails, never skips, when it is missing.
//!
//! With `CORTEX_DASHBOARD_SCREENSHOT=/abs/path.png` it also saves a 1400x900 screenshot of
//! node 0's dashboard there (that is how `docs/dashboard.png` is made).

#[path = "../../node/examples/shared/messages.rs"]
mod messages;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cortex_client::Client;
use cortex_cluster_tests::{Binary, ClusterOptions, TestCluster, poll_until};
use cortex_protocol::ActorId;
use cortex_transport::TlsMaterial;
use messages::{Deposit, Incr};

const INSTALL_HINT: &str =
    "run scripts/install-test-deps.sh (it installs the Debian package `chromium`)";
/// Set to an absolute path to save a screenshot of node 0's dashboard.
const SCREENSHOT_ENV: &str = "CORTEX_DASHBOARD_SCREENSHOT";
/// The background workload stops after this many messages even if the test never stops it.
const MAX_WORKLOAD_MESSAGES: u64 = 200_000;
const MAX_WORKLOAD_TIME: Duration = Duration::from_secs(60);
/// Accounts asked before the page loads, so the actor table has rows.
const ACCOUNTS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_member_in_a_browser() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chromium = chromium();
    let opts = ClusterOptions {
        binary: Binary::Bank,
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::block_in_place(|| {
        let mut c = TestCluster::start(3, opts).unwrap();
        c.wait_converged(Duration::from_secs(30)).unwrap();
        c
    });
    let client = connect(&cluster).await;
    for i in 0..ACCOUNTS {
        let id = ActorId::new("account", format!("d{i}")).unwrap();
        assert_eq!(client.ask(&id, Deposit(10)).await.unwrap(), 10);
    }
    let workload = Workload::start(client.clone());

    let names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.name().to_owned())
        .collect();
    tokio::task::block_in_place(|| {
        for node in cluster.nodes() {
            let url = format!("http://{}/dashboard", node.http_addr());
            let dom = poll_until(
                Duration::from_secs(40),
                &format!("{url} to render every member"),
                || {
                    let dom = dump_dom(&chromium, &url)?;
                    check_dom(&dom, node.name(), &names).map(|()| dom)
                },
            )
            .unwrap_or_else(|e| panic!("{e}\nlogs:\n{}", cluster.all_logs()));
            assert!(dom.contains(r#"data-kind="account""#), "{dom}");
        }
        if let Some(path) = std::env::var_os(SCREENSHOT_ENV) {
            let url = format!("http://{}/dashboard", cluster.node(0).http_addr());
            screenshot(&chromium, &url, Path::new(&path));
        }
    });
    let sent = workload.stop().await;
    assert!(sent > 0, "the background workload sent nothing");
    client.shutdown().await;
}

/// Chromium on the PATH (Debian names it `chromium`), or a failure that says how to install it.
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).find_map(|d| {
            ["chromium", "chromium-browser"]
                .iter()
                .map(|n| d.join(n))
                .find(|p| p.is_file())
        })
    });
    found.unwrap_or_else(|| panic!("Chromium is not installed: {INSTALL_HINT}"))
}

/// What the page must show once its first refreshes have rendered: a row per member, each
/// alive, `serving` marked as the local one, "N alive of N", the quorum of N of N in the ring
/// card, and status "ok".
fn check_dom(dom: &str, serving: &str, names: &[String]) -> Result<(), String> {
    let refreshed = attr_after(dom, "<body", "data-refreshes")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if refreshed == 0 {
        return Err("the page has not refreshed yet (no data-refreshes on <body>)".into());
    }
    for name in names {
        let row = member_row(dom, name).ok_or_else(|| format!("no row for member {name}"))?;
        if !row.contains(">alive<") {
            return Err(format!("member {name} is not shown alive: {row}"));
        }
        if (name == serving) != row.contains(r#"class="local""#) {
            return Err(format!("wrong local marking of {name} on {serving}: {row}"));
        }
    }
    let count = format!("{n} alive of {n}", n = names.len());
    if !dom.contains(&count) {
        return Err(format!("no {count:?} in the members header"));
    }
    let quorum = format!("quorum ({n} of {n} members reachable)", n = names.len());
    if !dom.contains(&quorum) || attr_after(dom, r#"id="ring-meta""#, "data-quorum") != Some("true")
    {
        return Err(format!("no {quorum:?} in the ring card"));
    }
    match attr_after(dom, r#"id="status""#, "data-state") {
        Some("ok") => Ok(()),
        other => Err(format!("status is {other:?}, not \"ok\"")),
    }
}

/// The `<tr data-member="name" ...>...</tr>` element.
fn member_row<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find(&format!(r#"data-member="{name}""#))?;
    let start = dom[..start].rfind("<tr")?;
    let len = dom[start..].find("</tr>")?;
    Some(&dom[start..start + len])
}

/// The value of attribute `attr` in the tag where `anchor` occurs.
fn attr_after<'a>(dom: &'a str, anchor: &str, attr: &str) -> Option<&'a str> {
    let at = dom.find(anchor)?;
    let tag_start = dom[..=at].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let key = format!(r#"{attr}=""#);
    let v = &tag[tag.find(&key)? + key.len()..];
    Some(&v[..v.find('"')?])
}

/// Headless Chromium without a sandbox (tests may run as root), GPU, QUIC or any background
/// network traffic of its own, in a fresh profile.
fn chromium_command(chromium: &Path, profile: &Path) -> Command {
    let mut c = Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        // Virtual time runs the page's timers (a refresh every 2 s) without waiting for
        // them, and waits for its fetches; three or four refreshes fit in 7 s.
        "--virtual-time-budget=7000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}

/// Runs `command` with stdout and stderr in files of `dir`, for at most 30 s.
fn run_bounded(mut command: Command, dir: &Path) -> Result<String, String> {
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| e.to_string());
    let mut child = command
        .stdout(file(&out)?)
        .stderr(file(&err)?)
        .spawn()
        .map_err(|e| format!("starting Chromium: {e}; {INSTALL_HINT}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("Chromium took longer than 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        let stderr = std::fs::read_to_string(&err).unwrap_or_default();
        Err(format!("Chromium exited with {status}: {stderr}"))
    }
}

/// The DOM of `url` after its scripts ran for the virtual time budget.
fn dump_dom(chromium: &Path, url: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut c = chromium_command(chromium, &dir.path().join("profile"));
    c.arg("--dump-dom").arg(url);
    run_bounded(c, dir.path())
}

fn screenshot(chromium: &Path, url: &str, to: &Path) {
    assert!(
        to.is_absolute(),
        "{SCREENSHOT_ENV} must be an absolute path"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut c = chromium_command(chromium, &dir.path().join("profile"));
    c.arg("--window-size=1400,900")
        .arg(format!("--screenshot={}", to.display()))
        .arg(url);
    run_bounded(c, dir.path()).unwrap();
    assert!(to.is_file(), "no screenshot at {}", to.display());
}

async fn connect(cluster: &TestCluster) -> Client {
    let ca = cluster.ca();
    let out = Command::new(cluster.binary())
        .args(["certs", "issue", "dashboard-client", "--client", "--dir"])
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
        &ca.cert("dashboard-client"),
        &ca.key("dashboard-client"),
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
    client
}

/// A light, steady stream of asks and tells while the browser watches (so the rates card has
/// something to show); bounded in messages and time, stopped by [`Workload::stop`].
struct Workload {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// Aborted on drop (a panicking test); taken by [`Workload::stop`].
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Workload {
    fn start(client: Client) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (Arc::clone(&stop), Arc::clone(&sent));
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut i: u64 = 0;
            while !s.load(Ordering::Relaxed)
                && i < MAX_WORKLOAD_MESSAGES
                && started.elapsed() < MAX_WORKLOAD_TIME
            {
                let account = ActorId::new("account", format!("d{}", i % ACCOUNTS as u64)).unwrap();
                let counter = ActorId::new("counter", format!("w{}", i % 20)).unwrap();
                let (a, t) = tokio::join!(
                    client.ask(&account, Deposit(1)),
                    client.tell(&counter, Incr)
                );
                a.unwrap();
                t.unwrap();
                i += 2;
                n.store(i, Ordering::Relaxed);
            }
        });
        Workload {
            stop,
            sent,
            task: Some(task),
        }
    }

    async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        // Invariant: only stop (which consumes self) and drop take the task.
        let task = self.task.take().expect("the task is still owned");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the workload stops within 10 s")
            .expect("the workload did not panic");
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[test]
fn dom_checks_catch_a_missing_or_dead_member() {
    let row = |name: &str, state: &str, local: bool| {
        let class = if local { r#" class="local""# } else { "" };
        format!(
            r#"<tr data-member="{name}"{class}><td>{name}</td><td><span class="badge">{state}</span></td></tr>"#
        )
    };
    let page = |rows: &str, alive: &str, status: &str| {
        format!(
            r#"<html><body data-refreshes="2"><div class="status" id="status" data-state="{status}"></div><span id="members-count">{alive}</span><tbody>{rows}</tbody><p class="meta" id="ring-meta" data-quorum="true">epoch 3 · quorum (2 of 2 members reachable)</p></body></html>"#
        )
    };
    let names: Vec<String> = ["n0", "n1"].map(String::from).to_vec();
    let both = format!("{}{}", row("n0", "alive", true), row("n1", "alive", false));
    assert_eq!(
        check_dom(&page(&both, "2 alive of 2", "ok"), "n0", &names),
        Ok(())
    );
    let one = row("n0", "alive", true);
    let missing = check_dom(&page(&one, "1 alive of 1", "ok"), "n0", &names);
    assert!(missing.unwrap_err().contains("no row for member n1"));
    let dead = format!("{}{}", row("n0", "alive", true), row("n1", "down", false));
    assert!(check_dom(&page(&dead, "1 alive of 2", "ok"), "n0", &names).is_err());
    assert!(check_dom(&page(&both, "2 alive of 2", "partial"), "n0", &names).is_err());
    assert!(check_dom(&page(&both, "2 alive of 2", "ok"), "n1", &names).is_err());
    let unrefreshed = page(&both, "2 alive of 2", "ok").replace(r#" data-refreshes="2""#, "");
    assert!(check_dom(&unrefreshed, "n0", &names).is_err());
    let fenced = page(&both, "2 alive of 2", "ok")
        .replace(r#"data-quorum="true""#, r#"data-quorum="false""#)
        .replace("quorum (2 of 2", "NO QUORUM: serving nothing (1 of 2");
    assert!(check_dom(&fenced, "n0", &names).is_err());
}

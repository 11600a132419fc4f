//! A set of node processes sharing a CA and a cluster secret in one temporary directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{
    Binary, CertAuthority, HarnessError, Member, NodeProcess, NodeSpec, bin_dir, binary_path,
    poll_until, views_agree,
};

/// Set this environment variable to keep a cluster's temporary directory (logs, certificates,
/// data directories) after the test, for post-mortems.
pub const KEEP_DIR_ENV: &str = "CORTEX_KEEP_TEST_DIR";

/// How a [`TestCluster`] runs its nodes. Build it with struct-update syntax,
/// `ClusterOptions { log_level: "debug".into(), ..ClusterOptions::default() }`: every field
/// added later will have a default.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Executable of every node.
    pub binary: Binary,
    /// Where the binaries are; `None` for [`bin_dir`].
    pub bin_dir: Option<PathBuf>,
    /// `--cluster-name` (also written into the CA).
    pub cluster_name: String,
    /// `--settle-time`.
    pub settle_time: Duration,
    /// `--leave-timeout`.
    pub leave_timeout: Duration,
    /// `--log-level`.
    pub log_level: String,
    /// How long a node may take to answer `/health` after it is spawned.
    pub start_timeout: Duration,
    /// Arguments added to every node's command line.
    pub extra_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            binary: Binary::Node,
            bin_dir: None,
            cluster_name: "cortex-test".to_owned(),
            settle_time: Duration::from_millis(500),
            leave_timeout: Duration::from_secs(5),
            log_level: "info".to_owned(),
            start_timeout: Duration::from_secs(30),
            extra_args: Vec::new(),
        }
    }
}

/// Node processes, a CA and a cluster secret in a temporary directory (deleted on drop,
/// after every process is killed, unless [`KEEP_DIR_ENV`] is set).
///
/// Nodes are indexed in the order they were added; `n0`, `n1`, ... when started by
/// [`TestCluster::start`], where node 0 is every other node's seed.
#[derive(Debug)]
pub struct TestCluster {
    // Dropped first: processes die before their directory goes.
    nodes: Vec<NodeProcess>,
    opts: ClusterOptions,
    binary: PathBuf,
    ca: CertAuthority,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// A CA in a new temporary directory, no nodes yet.
    ///
    /// # Errors
    /// [`HarnessError::MissingBinary`] if the binary is not built; [`HarnessError::Command`]
    /// if `certs init` fails.
    pub fn new(opts: ClusterOptions) -> Result<Self, HarnessError> {
        let bins = opts.bin_dir.clone().unwrap_or_else(bin_dir);
        let binary = binary_path(&opts.binary, &bins)?;
        let mut dir = tempfile::Builder::new()
            .prefix("cortex-cluster-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory", e))?;
        if std::env::var_os(KEEP_DIR_ENV).is_some() {
            dir.disable_cleanup(true);
        }
        let ca = CertAuthority::init(&binary, &dir.path().join("certs"), &opts.cluster_name)?;
        Ok(TestCluster {
            nodes: Vec::new(),
            opts,
            binary,
            ca,
            dir,
        })
    }

    /// A cluster of `n` nodes `n0..n{n-1}`; node 0 seeds the others. Returns once every
    /// process answers `/health` (not yet converged: see [`TestCluster::wait_converged`]).
    ///
    /// # Errors
    /// As [`TestCluster::new`] and [`TestCluster::add`].
    pub fn start(n: usize, opts: ClusterOptions) -> Result<Self, HarnessError> {
        let mut c = Self::new(opts)?;
        let specs: Vec<NodeSpec> = (0..n).map(|i| c.spec(&format!("n{i}"))).collect();
        let mut specs = specs.into_iter();
        if let Some(first) = specs.next() {
            c.add(first)?;
        }
        let rest: Vec<NodeSpec> = specs
            .map(|mut s| {
                s.seeds = c.default_seeds();
                s
            })
            .collect();
        c.add_all(rest)?;
        Ok(c)
    }

    /// A spec for a node named `name` with this cluster's options, seeded by node 0 (if
    /// there is one yet).
    pub fn spec(&self, name: &str) -> NodeSpec {
        let mut s = NodeSpec::new(name);
        s.cluster_name = self.opts.cluster_name.clone();
        s.settle_time = self.opts.settle_time;
        s.leave_timeout = self.opts.leave_timeout;
        s.log_level = self.opts.log_level.clone();
        s.extra_args = self.opts.extra_args.clone();
        s.seeds = self.default_seeds();
        s
    }

    fn default_seeds(&self) -> Vec<String> {
        self.nodes
            .first()
            .map(|n0| vec![n0.gossip_addr().to_string()])
            .unwrap_or_default()
    }

    /// Starts a node and waits until it answers `/health`; returns its index.
    ///
    /// # Errors
    /// As [`NodeProcess::start`].
    pub fn add(&mut self, spec: NodeSpec) -> Result<usize, HarnessError> {
        let node = NodeProcess::start(
            spec,
            &self.binary,
            &self.ca,
            self.dir.path(),
            self.opts.start_timeout,
        )?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// Spawns every node at once, then waits until each answers `/health`; returns the
    /// index of the first and the instant the last process was spawned.
    ///
    /// # Errors
    /// As [`NodeProcess::spawn`] and [`NodeProcess::wait_healthy`].
    pub fn add_all(&mut self, specs: Vec<NodeSpec>) -> Result<(usize, Instant), HarnessError> {
        let first = self.nodes.len();
        for spec in specs {
            let node = NodeProcess::spawn(spec, &self.binary, &self.ca, self.dir.path())?;
            self.nodes.push(node);
        }
        let last_spawn = Instant::now();
        let timeout = self.opts.start_timeout;
        for node in &mut self.nodes[first..] {
            node.wait_healthy(timeout)?;
        }
        Ok((first, last_spawn))
    }

    /// A new CA (with its own cluster secret) in a subdirectory: certificates from it are
    /// not trusted by this cluster.
    ///
    /// # Errors
    /// [`HarnessError::Command`] if `certs init` fails.
    pub fn foreign_ca(&self, label: &str) -> Result<CertAuthority, HarnessError> {
        CertAuthority::init(
            &self.binary,
            &self.dir.path().join(format!("ca-{label}")),
            &self.opts.cluster_name,
        )
    }

    /// The cluster CA.
    pub fn ca(&self) -> &CertAuthority {
        &self.ca
    }

    /// The temporary directory (certificates, logs, data directories).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The options.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// Number of nodes added (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`.
    ///
    /// # Panics
    /// If `i` is out of range (a bug in the test).
    pub fn node(&self, i: usize) -> &NodeProcess {
        &self.nodes[i]
    }

    /// Node `i`, to signal or restart it.
    ///
    /// # Panics
    /// If `i` is out of range (a bug in the test).
    pub fn node_mut(&mut self, i: usize) -> &mut NodeProcess {
        &mut self.nodes[i]
    }

    /// All nodes.
    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name() == name)
    }

    /// Node `i`'s `GET /cluster/members`.
    ///
    /// # Errors
    /// As [`NodeProcess::members`].
    pub fn members(&self, i: usize) -> Result<Vec<Member>, HarnessError> {
        self.nodes[i].members()
    }

    /// `(name, members)` of each node in `of`.
    ///
    /// # Errors
    /// The first failing request.
    pub fn views(&self, of: &[usize]) -> Result<Vec<(String, Vec<Member>)>, HarnessError> {
        of.iter()
            .map(|&i| Ok((self.nodes[i].name().to_owned(), self.nodes[i].members()?)))
            .collect()
    }

    /// Indices of the nodes whose current run is still going (reaps those that ended).
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// Waits until every running node lists exactly the running nodes as alive, all with
    /// the same incarnations; returns how long that took.
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] with the last disagreement.
    pub fn wait_converged(&mut self, deadline: Duration) -> Result<Duration, HarnessError> {
        let up = self.running();
        self.wait_agree(&up, deadline)
    }

    /// Waits until each node in `of` lists exactly the nodes in `of` as alive, with the
    /// same incarnations; returns how long that took.
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] with the last disagreement.
    pub fn wait_agree(&self, of: &[usize], deadline: Duration) -> Result<Duration, HarnessError> {
        let start = Instant::now();
        let names: Vec<&str> = of.iter().map(|&i| self.nodes[i].name()).collect();
        let what = format!("{names:?} to list each other as alive");
        poll_until(deadline, &what, || {
            let views = self.views(of).map_err(|e| e.to_string())?;
            views_agree(&views, &names)
        })?;
        Ok(start.elapsed())
    }

    /// Every node's log, one after another (also printed automatically, shortened, when a
    /// test panics).
    pub fn all_logs(&self) -> String {
        self.nodes.iter().map(NodeProcess::all_logs).collect()
    }
}

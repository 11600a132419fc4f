//! Where the nodes live: loopback, or one network namespace per node on a bridge, where
//! packet faults (partitions, loss, delay) are iptables rules inside the namespaces.
//!
//! Everything made here carries the run's tag (`cxc<id>`): namespaces `cxc<id>-nN`, the
//! bridge `cxc<id>br`, veths `cxc<id>vN`, iptables rules commented `cortex-chaos-<id>`, so
//! [`cleanup_stale`] finds leftovers of a run that died without its destructors.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use crate::ChaosError;

/// Comment prefix of every iptables rule this harness adds.
pub const RULE_TAG: &str = "cortex-chaos";

/// Runs a command, failing with its output.
///
/// # Errors
/// [`ChaosError::Command`] if it cannot start or exits non-zero.
pub fn sh(program: &str, args: &[&str]) -> Result<String, ChaosError> {
    let out = blocking(|| Command::new(program).args(args).output()).map_err(|e| {
        ChaosError::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!("cannot start it: {e}"),
        }
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ChaosError::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Runs blocking `f` from wherever the harness is. Faults are applied from async tasks: a
/// worker blocked on `iptables` (tens of ms each, seconds for a partition's rules on a
/// loaded machine) would stall the workload's tasks and timers queued behind it, and the
/// history would blame the cluster for the harness's own lateness. On a multi-thread
/// runtime the worker's queue is handed to another thread while `f` runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Why namespaces are (not) available here, checked by trying.
pub fn netns_available() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not root (network namespaces and iptables need root)".into());
    }
    for tool in ["ip", "iptables"] {
        if sh("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            return Err(format!(
                "`{tool}` is missing (apt-get install iproute2 iptables)"
            ));
        }
    }
    let probe = format!("cxcprobe{}", std::process::id());
    sh("ip", &["netns", "add", &probe]).map_err(|e| format!("`ip netns add` fails: {e}"))?;
    let r = sh(
        "ip",
        &[
            "netns",
            "exec",
            &probe,
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.5",
            "-j",
            "DROP",
        ],
    );
    let _ = sh("ip", &["netns", "del", &probe]);
    r.map(|_| ())
        .map_err(|e| format!("iptables inside a namespace fails: {e}"))
}

/// The network of one run.
#[derive(Debug)]
pub enum Topology {
    /// Every node on 127.0.0.1 with OS-chosen ports; no packet faults.
    Loopback,
    /// A namespace per node on a bridge.
    Netns(Netns),
}

impl Topology {
    /// Address of node `i`.
    pub fn node_ip(&self, i: usize) -> IpAddr {
        match self {
            Topology::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Topology::Netns(n) => IpAddr::V4(n.node_ip(i)),
        }
    }

    /// Namespace of node `i`, if any.
    pub fn namespace(&self, i: usize) -> Option<String> {
        match self {
            Topology::Loopback => None,
            Topology::Netns(n) => Some(n.ns(i)),
        }
    }

    /// True when packet faults can be injected.
    pub fn has_network_faults(&self) -> bool {
        matches!(self, Topology::Netns(_))
    }

    /// The run tag.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Topology::Loopback => None,
            Topology::Netns(n) => Some(&n.tag),
        }
    }
}

/// Namespaces `TAG-nN` with veth `TAGvN` into bridge `TAGbr` at `10.213.S.1/24`, node `i`
/// at `10.213.S.(10+i)`. Dropping it deletes all of them (and with them every rule).
#[derive(Debug)]
pub struct Netns {
    tag: String,
    subnet: u8,
    nodes: usize,
    made: bool,
}

impl Netns {
    /// Makes the bridge and `nodes` namespaces.
    ///
    /// # Errors
    /// [`ChaosError::Command`] if an `ip` command fails (what exists so far is removed).
    pub fn create(nodes: usize) -> Result<Self, ChaosError> {
        let pid = std::process::id();
        let tag = format!("cxc{:04x}", pid & 0xffff);
        let subnet = (pid % 200) as u8 + 20;
        let mut n = Netns {
            tag,
            subnet,
            nodes,
            made: true,
        };
        n.setup()?;
        Ok(n)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// Namespace name of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.tag)
    }

    /// Address of node `i`.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 10 + i as u8)
    }

    /// Address of the host side (where the client runs).
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    fn setup(&mut self) -> Result<(), ChaosError> {
        let br = self.bridge();
        sh("ip", &["link", "add", &br, "type", "bridge"])?;
        sh(
            "ip",
            &["addr", "add", &format!("{}/24", self.host_ip()), "dev", &br],
        )?;
        sh("ip", &["link", "set", &br, "up"])?;
        for i in 0..self.nodes {
            let ns = self.ns(i);
            let veth = format!("{}v{i}", self.tag);
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            sh("ip", &["link", "set", &veth, "master", &br])?;
            sh("ip", &["link", "set", &veth, "up"])?;
            let ip = format!("{}/24", self.node_ip(i));
            let ex = |args: &[&str]| -> Result<String, ChaosError> {
                let mut a = vec!["netns", "exec", ns.as_str()];
                a.extend_from_slice(args);
                sh("ip", &a)
            };
            ex(&["ip", "addr", "add", &ip, "dev", "eth0"])?;
            ex(&["ip", "link", "set", "eth0", "up"])?;
            ex(&["ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Runs `iptables ARGS` inside node `i`'s namespace.
    ///
    /// # Errors
    /// [`ChaosError::Command`].
    pub fn iptables(&self, i: usize, args: &[&str]) -> Result<(), ChaosError> {
        let ns = self.ns(i);
        let mut a = vec!["netns", "exec", ns.as_str(), "iptables"];
        a.extend_from_slice(args);
        sh("ip", &a).map(|_| ())
    }

    /// The comment every rule of this run carries.
    pub fn rule_comment(&self) -> String {
        format!("{RULE_TAG}-{}", self.tag)
    }

    /// Removes every rule of this run from node `i`'s namespace (all chains).
    ///
    /// # Errors
    /// [`ChaosError::Command`].
    pub fn flush_rules(&self, i: usize) -> Result<(), ChaosError> {
        let ns = self.ns(i);
        let rules = sh("ip", &["netns", "exec", &ns, "iptables", "-S"])?;
        let tag = self.rule_comment();
        for line in rules.lines().filter(|l| l.contains(&tag)) {
            // "-A CHAIN spec..." → "-D CHAIN spec...": the rule text as iptables prints it.
            let Some(spec) = line.strip_prefix("-A ") else {
                continue;
            };
            let mut args = vec!["-D".to_owned()];
            args.extend(split_rule(spec));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            self.iptables(i, &refs)?;
        }
        Ok(())
    }

    /// Deletes the namespaces and the bridge.
    pub fn destroy(&mut self) {
        if !self.made {
            return;
        }
        self.made = false;
        for i in 0..self.nodes {
            let _ = sh("ip", &["netns", "del", &self.ns(i)]);
            let _ = sh("ip", &["link", "del", &format!("{}v{i}", self.tag)]);
        }
        let _ = sh("ip", &["link", "del", &self.bridge()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Splits an `iptables -S` rule into arguments, keeping quoted comments whole.
fn split_rule(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Removes namespaces and links left by runs that died without cleaning up (names starting
/// `cxc`). Returns what it removed.
pub fn cleanup_stale() -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(list) = sh("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with("cxc") && sh("ip", &["netns", "del", ns]).is_ok() {
                removed.push(format!("namespace {ns}"));
            }
        }
    }
    if let Ok(list) = sh("ip", &["-o", "link", "show"]) {
        for line in list.lines() {
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with("cxc") && sh("ip", &["link", "del", name]).is_ok() {
                removed.push(format!("link {name}"));
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_with_quoted_comments() {
        assert_eq!(
            split_rule(r#"INPUT -s 10.0.0.1/32 -m comment --comment "cortex-chaos-x y" -j DROP"#),
            vec![
                "INPUT",
                "-s",
                "10.0.0.1/32",
                "-m",
                "comment",
                "--comment",
                "cortex-chaos-x y",
                "-j",
                "DROP"
            ]
        );
    }
}

//! Temporary `/etc/hosts` lines, so that one DNS-like name resolves to several loopback
//! addresses (as a Kubernetes headless Service name resolves to every pod).
//!
//! glibc's `files` source returns every address of a name that appears on several lines
//! (all of them with `multi on` in `/etc/host.conf`, the Debian/Ubuntu default; recent glibc
//! does so for `getaddrinfo` regardless). [`HostsEntry::add`] checks this right away and
//! fails, removing its lines, if the name does not resolve to all the addresses.
//!
//! Editing `/etc/hosts` needs root (CI runs as root). Lines are tagged with a marker comment
//! naming the entry, and removed when the [`HostsEntry`] drops, also while a test panics.
//! If the test process is killed outright, the lines stay; they name a unique, unused host
//! (`NAME` should contain the process id) and can be removed by hand with
//! `sed -i '/# cortex-cluster-tests NAME$/d' /etc/hosts`.

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::HarnessError;

/// The file edited.
pub const HOSTS_FILE: &str = "/etc/hosts";

/// Lines `IP NAME` in `/etc/hosts`, removed on drop.
#[derive(Debug)]
pub struct HostsEntry {
    name: String,
    path: PathBuf,
}

impl HostsEntry {
    /// Appends one `IP NAME` line per address and checks that `NAME` resolves to all of them.
    ///
    /// # Errors
    /// [`HarnessError::Io`] if the file cannot be edited (not root?); [`HarnessError::State`]
    /// if the resolver does not return every address.
    pub fn add(name: &str, ips: &[IpAddr]) -> Result<Self, HarnessError> {
        let entry = HostsEntry {
            name: name.to_owned(),
            path: PathBuf::from(HOSTS_FILE),
        };
        let text = std::fs::read_to_string(&entry.path)
            .map_err(|e| HarnessError::io(format!("reading {HOSTS_FILE}"), e))?;
        let mut out = entry.without_own_lines(&text);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        for ip in ips {
            out.push_str(&format!("{ip} {name} {}\n", entry.marker()));
        }
        // Written in place, not renamed over: /etc/hosts is often a bind mount.
        std::fs::write(&entry.path, out).map_err(|e| {
            HarnessError::io(format!("writing {HOSTS_FILE} (the test needs root)"), e)
        })?;
        let want: BTreeSet<IpAddr> = ips.iter().copied().collect();
        let got: BTreeSet<IpAddr> = (name, 1u16)
            .to_socket_addrs()
            .map_err(|e| HarnessError::io(format!("resolving {name}"), e))?
            .map(|a| a.ip())
            .collect();
        if got != want {
            return Err(HarnessError::State(format!(
                "{name} resolves to {got:?} instead of {want:?}: this resolver returns one address per /etc/hosts name (set `multi on` in /etc/host.conf), or the node needs a resolver override"
            )));
        }
        Ok(entry)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn marker(&self) -> String {
        format!("# cortex-cluster-tests {}", self.name)
    }

    fn without_own_lines(&self, text: &str) -> String {
        let marker = self.marker();
        text.lines()
            .filter(|l| !l.trim_end().ends_with(&marker))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(&self.path) {
            let _ = std::fs::write(&self.path, self.without_own_lines(&text));
        }
    }
}

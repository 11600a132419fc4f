//! A Kubernetes StatefulSet played with local processes (issue 9): three pods `cortex-0..2`
//! on their own addresses 127.0.0.1, .2 and .3 (Linux routes all of 127/8 to `lo`), all on
//! the same ports, seeded by ONE name that resolves to all three, like a headless Service.
//!
//! The name comes from `/etc/hosts`: the test adds three lines
//! `127.0.0.{1,2,3} cortex-headless-<pid>.test` and removes them when it ends, also when it
//! panics (see [`cortex_cluster_tests::HostsEntry`]; needs root, as CI runs). It checks that
//! the resolver returns all three addresses for the name before starting anything.
//!
//! Then: a pod restart (`kill -9`, started again under the same name and address) that the
//! others see as a new incarnation, and a scale-down (SIGTERM of cortex-2) that leaves
//! gracefully.
#![allow(clippy::print_stderr)] // the tests print what they measured

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use cortex_cluster_tests::{
    ClusterOptions, HostsEntry, MemberState, TestCluster, free_ports_on, poll_until, views_agree,
};

const CONVERGE: Duration = Duration::from_secs(30);

#[test]
fn statefulset_pods_find_each_other_through_one_name_restart_and_scale_down() {
    let ips: Vec<IpAddr> = (1..=3)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let service = format!("cortex-headless-{}.test", std::process::id());
    let _hosts = HostsEntry::add(&service, &ips).unwrap();
    // One set of ports free on all three addresses: every pod uses the same ones.
    let ports = free_ports_on(&ips).unwrap();

    let mut cluster = TestCluster::new(ClusterOptions::default()).unwrap();
    let specs = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let mut s = cluster.spec(&format!("cortex-{i}"));
            s.ip = *ip;
            s.ports = Some(ports);
            s.seeds = vec![format!("{service}:{}", ports.gossip)];
            s
        })
        .collect();
    cluster.add_all(specs).unwrap();
    let names = ["cortex-0", "cortex-1", "cortex-2"];
    let took = cluster.wait_converged(CONVERGE).unwrap();
    eprintln!("3 pods converged through {service} in {took:?}");
    for (i, (observer, view)) in cluster.views(&[0, 1, 2]).unwrap().into_iter().enumerate() {
        for m in &view {
            let pod = cluster.index_of(&m.name).unwrap();
            assert_eq!(m.gossip.ip(), ips[pod], "{observer}: {m:?}");
            assert_eq!(m.gossip.port(), ports.gossip);
        }
        assert!(view.iter().any(|m| m.local && m.name == names[i]));
    }
    poll_until(CONVERGE, "every pod ready", || {
        match cluster.nodes().iter().find(|n| !n.is_ready()) {
            Some(n) => Err(format!("{} not ready", n.name())),
            None => Ok(()),
        }
    })
    .unwrap();

    // Pod restart: kill -9 cortex-1 and start it again under the same name and address.
    let old = cluster.node(1).own_member().unwrap();
    cluster.node_mut(1).restart(CONVERGE).unwrap();
    let new = cluster.node(1).own_member().unwrap();
    assert!(new.incarnation > old.incarnation, "{new:?} after {old:?}");
    poll_until(CONVERGE, "cortex-1's new incarnation everywhere", || {
        let views = cluster.views(&[0, 1, 2]).map_err(|e| e.to_string())?;
        for (observer, view) in &views {
            let stale = view
                .iter()
                .find(|m| m.name == "cortex-1" && m.incarnation == old.incarnation);
            // Until an observer hears of the new incarnation it may still list the old one
            // (the crash is not detected yet); once it has, the old one is never alive.
            let knows_new = view
                .iter()
                .any(|m| m.name == "cortex-1" && m.incarnation > old.incarnation);
            assert!(
                !knows_new
                    || stale.is_none_or(|m| m.state != MemberState::Alive)
                    || observer == "cortex-1",
                "{observer} lists the old cortex-1 alive beside the new one: {view:?}"
            );
        }
        views_agree(&views, &names)?;
        let inc = views[0]
            .1
            .iter()
            .find(|m| m.name == "cortex-1")
            .map(|m| m.incarnation);
        if inc == Some(new.incarnation) {
            Ok(())
        } else {
            Err(format!("cortex-0 sees cortex-1 at {inc:?}"))
        }
    })
    .unwrap();

    // Scale-down: SIGTERM of the highest ordinal, which leaves gracefully.
    let leaver = cluster.node(2).own_member().unwrap();
    let termed = Instant::now();
    cluster.node_mut(2).terminate().unwrap();
    poll_until(CONVERGE, "cortex-2 left in both remaining views", || {
        for (observer, view) in cluster.views(&[0, 1]).map_err(|e| e.to_string())? {
            let s = view
                .iter()
                .find(|m| m.name == "cortex-2" && m.incarnation == leaver.incarnation)
                .map(|m| m.state);
            assert_ne!(
                s,
                Some(MemberState::Down),
                "{observer} marked the leaving pod down"
            );
            if s != Some(MemberState::Left) {
                return Err(format!("{observer} sees cortex-2 as {s:?}"));
            }
        }
        Ok(())
    })
    .unwrap();
    eprintln!(
        "scale-down of cortex-2 seen as left in {:?}",
        termed.elapsed()
    );
    let status = cluster.node_mut(2).wait_exit(CONVERGE).unwrap();
    assert!(status.success(), "cortex-2 exited with {status}");
    cluster.wait_agree(&[0, 1], CONVERGE).unwrap();
}

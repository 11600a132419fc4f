//! Core-level tests (no sockets) and a real three-node cluster on loopback UDP.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cortex_protocol::{NodeId, SUPPORTED_VERSIONS};

use super::*;

const SECRET: &[u8] = b"test cluster secret!";

fn ident(name: &str, inc: u64, port: u16) -> MemberIdentity {
    let ip = [127, 0, 0, 1];
    MemberIdentity {
        id: NodeId::new(name, inc).unwrap(),
        gossip_addr: SocketAddr::from((ip, port)),
        meta: MemberMeta {
            quic_addr: SocketAddr::from((ip, port + 1000)),
            http_addr: SocketAddr::from((ip, port + 2000)),
            roles: vec!["test".into()],
            versions: SUPPORTED_VERSIONS,
            process: inc,
        },
    }
}

fn at(ms: u64) -> Now {
    Now {
        mono: Duration::from_millis(ms),
        wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms),
    }
}

fn core(name: &str, inc: u64, port: u16, secret: &[u8]) -> MembershipCore {
    MembershipCore::new(
        CoreConfig::new(ident(name, inc, port), "test", secret),
        42,
        at(0),
    )
    .unwrap()
}

/// Delivers every pending datagram between the cores (by gossip address) until quiet,
/// without timers: enough for joins and leaves.
fn exchange(cores: &mut [&mut MembershipCore], ms: u64) {
    for _ in 0..50 {
        let mut moved = false;
        for i in 0..cores.len() {
            let from = cores[i].identity().gossip_addr;
            while let Some(t) = cores[i].poll_transmit() {
                if let Some(j) =
                    (0..cores.len()).find(|&j| cores[j].identity().gossip_addr == t.dst)
                {
                    cores[j].handle_datagram(from, &t.payload, at(ms));
                    moved = true;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

fn events(c: &mut MembershipCore) -> Vec<MembershipEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn join_and_leave_between_cores() {
    let mut a = core("a", 1, 1000, SECRET);
    let mut b = core("b", 1, 1001, SECRET);
    b.set_seed_addrs([a.identity().gossip_addr], at(1));
    exchange(&mut [&mut a, &mut b], 2);
    assert_eq!(a.view().live_ids().len(), 2);
    assert_eq!(b.view().live_ids().len(), 2);
    let epoch = a.epoch();
    assert!(
        matches!(events(&mut a).as_slice(), [MembershipEvent::Joined(m)] if m.id == *b.local_id())
    );
    assert_eq!(
        a.view().get(b.local_id()).unwrap().meta.roles,
        vec!["test".to_owned()]
    );

    b.leave(at(3));
    assert!(b.has_left());
    exchange(&mut [&mut a, &mut b], 4);
    let v = a.view();
    assert_eq!(v.live_ids(), vec![a.local_id().clone()]);
    assert_eq!(v.removed.len(), 1);
    assert_eq!(v.removed[0].state, MemberState::Left);
    assert!(v.epoch > epoch);
    assert!(matches!(events(&mut a).as_slice(), [MembershipEvent::Left(m)] if m.id.name() == "b"));
}

#[test]
fn refused_datagrams_are_dropped_and_counted() {
    let mut a = core("a", 1, 1000, SECRET);
    let mut b = core("b", 1, 1001, SECRET);
    let mut stranger = core("c", 1, 1002, b"some other secret!!");
    let a_addr = a.identity().gossip_addr;
    b.set_seed_addrs([a_addr], at(1));
    let join = b.poll_transmit().unwrap();
    let from = b.identity().gossip_addr;

    let mut forged = join.payload.clone();
    forged[30] ^= 0x01;
    a.handle_datagram(from, &forged, at(2));
    a.handle_datagram(from, &join.payload[..10], at(2));
    let mut v2 = join.payload.clone();
    v2[2] = 2;
    a.handle_datagram(from, &v2, at(2));
    stranger.set_seed_addrs([a_addr], at(1));
    let foreign = stranger.poll_transmit().unwrap();
    a.handle_datagram(foreign.dst, &foreign.payload, at(2));
    // Nothing got through so far: no reply, nobody joined.
    assert!(a.poll_transmit().is_none());
    assert_eq!(a.view().live_ids().len(), 1);

    a.handle_datagram(from, &join.payload, at(2));
    assert!(a.poll_transmit().is_some(), "a genuine join is answered");
    a.handle_datagram(from, &join.payload, at(3));
    // Two minutes later the same bytes are stale as well as replayed.
    a.handle_datagram(from, &join.payload, at(120_000));

    let c = a.counters();
    assert_eq!(c.accepted, 1);
    assert_eq!(c.rejected.bad_tag, 2, "forged and wrong key");
    assert_eq!(c.rejected.truncated, 1);
    assert_eq!(c.rejected.unsupported_version, 1);
    assert_eq!(c.rejected.replayed, 1);
    assert_eq!(c.rejected.stale, 1);
    assert_eq!(c.rejected.total(), 6);
}

#[test]
fn a_restarted_node_replaces_its_old_incarnation_for_good() {
    let mut a = core("a", 1, 1000, SECRET);
    let mut b1 = core("b", 1, 1001, SECRET);
    b1.set_seed_addrs([a.identity().gossip_addr], at(1));
    exchange(&mut [&mut a, &mut b1], 2);
    assert!(a.view().is_live(b1.local_id()));
    let _ = events(&mut a);

    // Same name, next incarnation (a restart), while the old one still looks alive.
    let mut b2 = core("b", 2, 1001, SECRET);
    b2.set_seed_addrs([a.identity().gossip_addr], at(3));
    exchange(&mut [&mut a, &mut b2], 4);
    let v = a.view();
    assert_eq!(
        v.live_ids(),
        vec![a.local_id().clone(), b2.local_id().clone()]
    );
    let ev = events(&mut a);
    assert!(
        matches!(&ev[..], [MembershipEvent::Down(old), MembershipEvent::Joined(new)]
        if old.id == *b1.local_id() && new.id == *b2.local_id()),
        "{ev:?}"
    );

    // The old incarnation speaking again (a late datagram, a zombie) does not come back.
    b1.set_seed_addrs([], at(5));
    b1.set_seed_addrs([a.identity().gossip_addr], at(5));
    exchange(&mut [&mut a, &mut b1], 6);
    assert!(!a.view().is_live(b1.local_id()));
    assert!(a.view().is_live(b2.local_id()));
}

#[test]
fn settings_are_checked() {
    let weak = MembershipCore::new(CoreConfig::new(ident("a", 1, 1), "t", b"short"), 1, at(0));
    assert!(matches!(
        weak,
        Err(MembershipError::WeakSecret { len: 5, .. })
    ));
    let mut big = ident("a", 1, 1);
    big.meta.roles = (0..MAX_ROLES).map(|i| format!("{i:0>32}")).collect();
    let r = MembershipCore::new(CoreConfig::new(big, "t", SECRET), 1, at(0));
    assert!(matches!(r, Err(MembershipError::InvalidConfig(_))), "{r:?}");
}

fn udp_config(name: &str, seeds: Vec<SeedSpec>) -> MembershipConfig {
    let meta = ident(name, 1, 1).meta;
    let inc = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut c = MembershipConfig::new(NodeId::new(name, inc).unwrap(), SECRET.to_vec(), meta);
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.seeds = seeds;
    c.seed_refresh_interval = Duration::from_millis(500);
    c
}

/// Polls `f` every 20 ms until it holds or 10 s pass.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_loopback_form_a_cluster_and_one_leaves() {
    let n0 = Membership::start(udp_config("n0", vec![])).await.unwrap();
    let seed: SeedSpec = n0.gossip_addr().to_string().parse().unwrap();
    let n1 = Membership::start(udp_config("n1", vec![seed]))
        .await
        .unwrap();
    // A DNS name as seed (resolved, and re-resolved, by the driver).
    let by_name: SeedSpec = format!("localhost:{}", n0.gossip_addr().port())
        .parse()
        .unwrap();
    let n2 = Membership::start(udp_config("n2", vec![by_name]))
        .await
        .unwrap();
    let all = [n0.clone(), n1.clone(), n2.clone()];
    eventually("three members everywhere", || {
        all.iter().all(|h| {
            h.view()
                .members
                .iter()
                .filter(|m| m.state == MemberState::Up)
                .count()
                == 3
        })
    })
    .await;
    let v = n1.view();
    let m0 = v.get(&n0.local_id()).unwrap();
    assert_eq!(m0.gossip_addr, n0.gossip_addr());
    assert_eq!(m0.meta.roles, vec!["test".to_owned()]);

    let mut events = n1.subscribe();
    let gone = n2.local_id();
    n2.leave(tokio::time::Instant::now() + Duration::from_secs(2))
        .await
        .unwrap();
    assert!(!n2.is_running());
    eventually("n2 removed as left", || {
        [&n0, &n1].iter().all(|h| {
            let v = h.view();
            !v.is_live(&gone)
                && v.removed
                    .iter()
                    .any(|m| m.id == gone && m.state == MemberState::Left)
        })
    })
    .await;
    let ev = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Ok(MembershipEvent::Left(m)) => return m,
                Ok(_) => continue,
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("a Left event");
    assert_eq!(ev.id, gone);
    assert!(n1.counters().accepted > 0);
    assert_eq!(n1.counters().rejected.bad_tag, 0);
    assert!(matches!(
        n2.leave(tokio::time::Instant::now() + Duration::from_secs(1))
            .await,
        Err(MembershipError::Stopped)
    ));

    // A silent stop (no farewell) is detected as a failure by the survivor.
    let crashed = n1.local_id();
    n1.shutdown().await;
    assert!(!n1.is_running());
    eventually("n1 detected down", || {
        let v = n0.view();
        !v.is_live(&crashed)
            && v.removed
                .iter()
                .any(|m| m.id == crashed && m.state == MemberState::Down)
    })
    .await;
    assert_eq!(n0.view().live_ids(), vec![n0.local_id()]);
    n0.shutdown().await;
    assert!(!n0.is_running());
}

#[tokio::test]
async fn start_refuses_bad_settings() {
    let taken = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut c = udp_config("x", vec![]);
    c.bind = taken.local_addr().unwrap();
    assert!(matches!(
        Membership::start(c).await,
        Err(MembershipError::Bind { .. })
    ));
    let mut c = udp_config("x", vec![]);
    c.bind = "0.0.0.0:0".parse().unwrap();
    assert!(matches!(
        Membership::start(c).await,
        Err(MembershipError::NoAdvertiseAddress(_))
    ));
    let mut c = udp_config("x", vec![]);
    c.cluster_secret = b"short".to_vec();
    assert!(matches!(
        Membership::start(c).await,
        Err(MembershipError::WeakSecret { .. })
    ));
}

//! The quorum rule with real processes: when two of three nodes die at once, the survivor
//! cannot tell that from being cut off, so it fences itself. It passivates every activation,
//! refuses to activate (a typed `Rejected` error naming the quorum, long before the ask's
//! deadline), reports not ready, and shows it in `/cluster/quorum`, `/cluster/ring` and its
//! metrics. Once one of the dead nodes is back, two of three are reachable again and it
//! serves (from fresh activations: the state of the old ones died with the passivation).

mod client_common;

use std::time::Duration;

use client_common::{Cluster, eventually};
use cortex_client::admin::{AdminClient, sum_metric};
use cortex_protocol::{ActorId, ErrorCode, MessageName};

const IDS: usize = 60;
const ASK: Duration = Duration::from_secs(10);
const DETECT: Duration = Duration::from_secs(60);

async fn incr(admin: &AdminClient, id: &ActorId) -> Result<u64, cortex_client::admin::AdminError> {
    let name = MessageName::new("counter.Incr").unwrap();
    let r = admin
        .ask_json(id, &name, &serde_json::json!(null), ASK)
        .await?;
    Ok(r.reply
        .as_u64()
        .expect("counter.Incr replies with a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_without_a_majority_fences_itself_until_one_returns() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_converged(3, DETECT).await;
    let n2 = cluster.nodes[2]
        .admin()
        .with_timeout(Duration::from_secs(5));
    let q = n2.quorum().await.unwrap();
    assert!(q.has_quorum, "{q:?}");
    assert_eq!(q.policy, "majority");
    assert_eq!(q.base, ["n0", "n1", "n2"]);

    // Activate ids through n2, a third of them on n2 itself.
    let ids: Vec<ActorId> = (0..IDS)
        .map(|i| ActorId::new("counter", format!("q{i}")).unwrap())
        .collect();
    for id in &ids {
        assert_eq!(incr(&n2, id).await.unwrap(), 1, "{id}");
    }
    let mut on_n2 = Vec::new();
    for id in &ids {
        let owner = n2.owner(id).await.unwrap().owner.unwrap_or_default();
        // `name#incarnation`.
        if owner.split('#').next() == Some("n2") {
            on_n2.push(id.clone());
        }
    }
    assert!(!on_n2.is_empty(), "some ids live on n2");

    // Two of three die at once: n2 reaches one of three.
    cluster.nodes[0].kill();
    cluster.nodes[1].kill();
    let q = eventually("n2 to lose its quorum", DETECT, || async {
        n2.quorum().await.ok().filter(|q| !q.has_quorum)
    })
    .await;
    assert_eq!(q.reachable, ["n2"], "{q:?}");
    assert_eq!(q.base, ["n0", "n1", "n2"], "the dead stay counted: {q:?}");

    // Every activation passivated.
    eventually("n2's activations to end", DETECT, || async {
        let text = n2.metrics().await.ok()?;
        (sum_metric(&text, "cortex_live_actors") == 0.0).then_some(())
    })
    .await;
    let text = n2.metrics().await.unwrap();
    assert_eq!(sum_metric(&text, "cortex_quorum"), 0.0);
    assert!(sum_metric(&text, "cortex_quorum_losses_total") >= 1.0);
    let acts = n2.activations(0).await.unwrap();
    assert!(
        acts.iter().all(|a| a.passivated_us.is_some()),
        "an activation is still open: {acts:?}"
    );

    // Not ready, and the dashboard's ring data says why.
    let ready =
        cortex_cluster_tests::http_get(cluster.nodes[2].http, "/ready", Duration::from_secs(5))
            .unwrap();
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("no quorum"), "{ready:?}");
    let ring = n2.ring().await.unwrap();
    assert_eq!(ring.quorum.as_ref().map(|q| q.has_quorum), Some(false));

    // Asks for its ids fail with the typed refusal, not at their deadline.
    eventually("n2's ring to hold only n2", DETECT, || async {
        let r = n2.ring().await.ok()?;
        (r.shares.len() == 1).then_some(())
    })
    .await;
    for id in &ids {
        let e = incr(&n2, id).await.expect_err("no quorum, no activation");
        assert_eq!(e.code(), Some(ErrorCode::Rejected), "{id}: {e}");
        assert!(e.to_string().contains("quorum"), "{id}: {e}");
    }

    // One comes back: two of three reachable, serving again (fresh activations).
    cluster.restart(0);
    eventually("n2 to regain its quorum", DETECT, || async {
        n2.quorum().await.ok().filter(|q| q.has_quorum)
    })
    .await;
    for id in &on_n2 {
        let v = eventually("asks through n2 to succeed again", DETECT, || async {
            incr(&n2, id).await.ok()
        })
        .await;
        assert_eq!(v, 1, "{id}: a fresh activation after the fence");
    }
}

//! Watches the nodes through their admin HTTP endpoints: every node's membership view a few
//! times a second, and its activation log (incrementally, so records of a node that is
//! later killed are kept).

use std::sync::Arc;
use std::time::Duration;

use cortex_client::admin::{AdminClient, sum_metric};
use tokio_util::sync::CancellationToken;

use crate::history::{ActivationRec, History, MemberSample, now_us};

/// One node to watch: its name and admin URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// Node name.
    pub name: String,
    /// `http://ip:port`.
    pub url: String,
}

/// Polls every target until `stop`; `period` between rounds.
pub async fn run(
    targets: Vec<Target>,
    history: Arc<History>,
    period: Duration,
    stop: CancellationToken,
) {
    let admins: Vec<(String, Option<AdminClient>)> = targets
        .iter()
        .map(|t| {
            let a = AdminClient::new(&t.url)
                .ok()
                .map(|a| a.with_timeout(Duration::from_millis(800)));
            (t.name.clone(), a)
        })
        .collect();
    let mut round = 0u64;
    loop {
        let polls = admins.iter().map(|(name, a)| async move {
            let Some(a) = a else {
                return (name.clone(), None, None);
            };
            let t_us = now_us();
            let members = a.members().await.ok().map(|ms| {
                let mut v: Vec<String> = ms
                    .into_iter()
                    .filter(|m| m.state == "alive" || m.state == "suspect")
                    .map(|m| format!("{}#{}", m.name, m.incarnation))
                    .collect();
                v.sort();
                v.dedup();
                (t_us, v)
            });
            (name.clone(), members, Some(a))
        });
        let results = futures::future::join_all(polls).await;
        for (name, members, _) in &results {
            let (t_us, view) = match members {
                Some((t, v)) => (*t, Some(v.clone())),
                None => (now_us(), None),
            };
            history.members.lock().push(MemberSample {
                round,
                t_us,
                node: name.clone(),
                view,
            });
        }
        if round.is_multiple_of(2) {
            for (name, members, a) in results {
                let (Some(a), Some(_)) = (a, members) else {
                    continue;
                };
                poll_activations(&name, a, &history).await;
            }
        }
        round += 1;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// QUIC packets the running nodes declared lost over the run: the sum of every reachable
/// node's `cortex_peer_lost_packets_total` (a restarted node counts from its restart).
/// `None` if no node answered.
pub async fn quic_lost_packets(targets: &[Target]) -> Option<u64> {
    let mut total = None;
    for t in targets {
        let Ok(a) = AdminClient::new(&t.url) else {
            continue;
        };
        match a.with_timeout(Duration::from_secs(2)).metrics().await {
            Ok(text) => {
                let lost = sum_metric(&text, "cortex_peer_lost_packets_total");
                // Counter values are whole numbers well inside f64's exact range.
                *total.get_or_insert(0) += lost as u64;
            }
            Err(e) => tracing::debug!(node = t.name, error = %e, "metrics not read"),
        }
    }
    total
}

/// Fetches every activation record once more (after the load stopped).
pub async fn final_activations(targets: &[Target], history: &History) {
    for t in targets {
        if let Ok(a) = AdminClient::new(&t.url) {
            let a = a.with_timeout(Duration::from_secs(2));
            poll_activations(&t.name, &a, history).await;
        }
    }
}

async fn poll_activations(name: &str, a: &AdminClient, history: &History) {
    // The whole log every time: open records change (they get passivated), a restarted
    // node starts its seq at 1 again, and a node whose incarnation membership renewed
    // reports no `local` member; the log is bounded on the node and small in practice.
    match a.activations(0).await {
        Ok(recs) => history.merge_activations(recs.into_iter().map(conv)),
        Err(e) => tracing::debug!(node = name, error = %e, "activation log not read"),
    }
}

fn conv(r: cortex_client::admin::Activation) -> ActivationRec {
    ActivationRec {
        id: r.id,
        node: r.node,
        incarnation: r.incarnation,
        seq: r.seq,
        epoch: r.epoch,
        activated_us: r.activated_us,
        passivated_us: r.passivated_us,
    }
}

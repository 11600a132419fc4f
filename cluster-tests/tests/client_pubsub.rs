//! Publish from one client, receive typed in another, across nodes.

mod client_common;
#[path = "../../node/examples/shared/messages.rs"]
mod messages;

use std::time::Duration;

use client_common::Cluster;
use cortex_client::ClientError;
use cortex_protocol::TopicId;
use futures::StreamExt;
use messages::{Deposit, Incr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_reach_subscribers_on_other_nodes() {
    let cluster = Cluster::start(2, &[]);
    cluster.wait_converged(2, Duration::from_secs(60)).await;
    let subscriber = cluster.client(0).await;
    let publisher = cluster.client(1).await;
    let topic: TopicId = "payments".parse().unwrap();
    let mut sub = subscriber.subscribe::<Deposit>(&topic).await.unwrap();

    // The subscription is registered asynchronously: publish until one arrives.
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            publisher.publish(&topic, &Deposit(42)).await.unwrap();
            tokio::select! {
                m = sub.next() => return m,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
    .await
    .expect("a delivery within 20 s");
    assert_eq!(got.unwrap().unwrap().0, 42);

    // Another type on the topic is a typed decode error, and the stream goes on.
    publisher.publish(&topic, &Incr).await.unwrap();
    publisher.publish(&topic, &Deposit(7)).await.unwrap();
    // Two publishes need not arrive in order (they may enter through different nodes):
    // wait for both, in either order.
    let mut saw_mismatch = false;
    let mut saw_seven = false;
    let seven = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = sub.next().await {
            match m {
                Ok(Deposit(7)) => {
                    saw_seven = true;
                    if saw_mismatch {
                        return true;
                    }
                }
                Ok(_) => {}
                Err(ClientError::Decode { detail }) => {
                    assert!(detail.contains("counter.Incr"), "{detail}");
                    saw_mismatch = true;
                    if saw_seven {
                        return true;
                    }
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(seven && saw_mismatch);
    drop(sub);
    subscriber.shutdown().await;
    publisher.shutdown().await;
}

/// `POST /topics/{topic}/{message}` on any node: JSON decoded by the registered type,
/// published cluster-wide, received typed by an SDK subscriber on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_published_over_http_reaches_sdk_subscribers() {
    use cortex_client::admin::AdminError;
    use cortex_protocol::MessageName;

    let cluster = Cluster::start(2, &[]);
    cluster.wait_converged(2, Duration::from_secs(60)).await;
    let subscriber = cluster.client(0).await;
    let topic: TopicId = "json-payments".parse().unwrap();
    let mut sub = subscriber.subscribe::<Deposit>(&topic).await.unwrap();
    let http = cluster.nodes[1].admin();
    let deposit = MessageName::new("bank.Deposit").unwrap();

    // The subscription is registered asynchronously: publish until one arrives.
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            http.publish_json(&topic, &deposit, &serde_json::json!(42))
                .await
                .unwrap();
            tokio::select! {
                m = sub.next() => return m,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
    .await
    .expect("a delivery within 20 s");
    assert_eq!(got.unwrap().unwrap().0, 42);

    // Typed 4xx errors, and nothing published.
    let status = |e: AdminError| match e {
        AdminError::Status { status, code, .. } => (status, code),
        other => panic!("expected a status error, got {other}"),
    };
    let nope = MessageName::new("bank.Nope").unwrap();
    let e = http
        .publish_json(&topic, &nope, &serde_json::json!(1))
        .await
        .unwrap_err();
    assert_eq!(status(e), (404, Some("UnknownMessage".into())));
    let e = http
        .publish_json(&topic, &deposit, &serde_json::json!("not a number"))
        .await
        .unwrap_err();
    assert_eq!(status(e), (400, Some("Decode".into())));
    let big = serde_json::json!("x".repeat(70 * 1024));
    let e = http.publish_json(&topic, &deposit, &big).await.unwrap_err();
    assert_eq!(status(e).0, 413);

    // The stream goes on (earlier repeats of 42 may still be on their way).
    http.publish_json(&topic, &deposit, &serde_json::json!(7))
        .await
        .unwrap();
    let seven = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = sub.next().await {
            match m.unwrap().0 {
                7 => return true,
                42 => {}
                other => panic!("unexpected Deposit({other})"),
            }
        }
        false
    })
    .await
    .expect("a delivery within 20 s");
    assert!(seven);
    drop(sub);
    subscriber.shutdown().await;
}

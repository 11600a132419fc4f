//! Clients without a valid certificate or token are refused with a clear error; a valid
//! token or certificate gets in.

mod client_common;
#[path = "../../node/examples/shared/messages.rs"]
mod messages;

use std::time::Duration;

use client_common::Cluster;
use cortex_client::{Client, ClientError};
use cortex_transport::TlsMaterial;
use cortex_transport::certs::{CertRole, generate_ca, issue};
use messages::Incr;

const TOKEN: &str = "a-long-enough-client-token";

fn ca_only(cluster: &Cluster) -> TlsMaterial {
    TlsMaterial::load_ca_only(&cluster.ca_dir().join("ca.crt")).unwrap()
}

fn unauthorized(r: Result<Client, ClientError>, mentions: &str) {
    match r {
        Err(ClientError::Unauthorized { detail }) => {
            assert!(
                detail.contains(mentions),
                "{detail:?} should mention {mentions:?}"
            )
        }
        Err(other) => panic!("expected Unauthorized, got {other}"),
        Ok(_) => panic!("expected Unauthorized, got a connection"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_without_valid_credentials() {
    let cluster = Cluster::start(1, &["--client-token", TOKEN]);
    cluster.wait_converged(1, Duration::from_secs(60)).await;
    let seed = cluster.nodes[0].quic.to_string();
    let base = || {
        Client::builder()
            .seeds([seed.clone()])
            .connect_timeout(Duration::from_secs(5))
    };

    // Neither a certificate nor a token: refused locally, before dialing.
    let e = base().tls(ca_only(&cluster)).connect().await.unwrap_err();
    assert!(matches!(e, ClientError::Config(_)), "{e}");

    // A wrong token.
    unauthorized(
        base()
            .tls(ca_only(&cluster))
            .token("not-the-right-token")
            .connect()
            .await,
        "token is not accepted",
    );

    // A certificate from another CA.
    let other = generate_ca("other").unwrap();
    let stranger = issue(&other, "app", CertRole::Client, &[]).unwrap();
    let mut foreign = TlsMaterial::from_certified(&other, &stranger);
    foreign.ca_pem = ca_only(&cluster).ca_pem;
    unauthorized(base().tls(foreign).connect().await, "CA");

    // The right certificate but the wrong cluster name.
    unauthorized(
        base()
            .tls(cluster.client_tls())
            .cluster("elsewhere")
            .connect()
            .await,
        "cluster name",
    );

    // The right token works, and so does the right certificate.
    let by_token = base()
        .tls(ca_only(&cluster))
        .token(TOKEN)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        by_token
            .ask(&"counter/a".parse().unwrap(), Incr)
            .await
            .unwrap(),
        1
    );
    by_token.shutdown().await;
    let by_cert = base().tls(cluster.client_tls()).connect().await.unwrap();
    assert_eq!(
        by_cert
            .ask(&"counter/a".parse().unwrap(), Incr)
            .await
            .unwrap(),
        2
    );
    by_cert.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_where_certificates_are_required() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_converged(1, Duration::from_secs(60)).await;
    let r = Client::builder()
        .seeds([cluster.nodes[0].quic.to_string()])
        .tls(ca_only(&cluster))
        .token(TOKEN)
        .connect()
        .await;
    unauthorized(r, "certificate");
}

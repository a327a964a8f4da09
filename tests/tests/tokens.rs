//! Peer tokens over several lifetimes and past their expiry. Sandbox clusters only: their
//! TokenRequests may ask for tokens of a few seconds, where kube-apiserver gives at least ten
//! minutes. (Renewal through kube-apiserver, and a refused renewal reported and fixed, run on both
//! tiers in `join.rs`.)

use std::time::Duration;

use mcsd::daemon::metrics::PeerState;
use mcsd_sandbox::ClusterConfig;
use mcsd_tests::{
    ClusterSet, WAIT, dig, eventually,
    fixtures::{export_hello_as_the_readme_does, refuse_renewals},
    kubectl, kubectl_refused, peer_secret_annotation, peer_secret_kubeconfig,
};

const HELLO: &str = "hello.demo.svc.clusterset.local";

/// Two unpeered sandbox clusters whose API servers issue tokens as short as a second.
async fn short_token_clusters() -> ClusterSet {
    let configs = [0, 1].map(|i| ClusterConfig {
        min_token_lifetime: Duration::from_secs(1),
        ..ClusterConfig::nth(i)
    });
    let options = mcsd::process::sandbox::Options {
        peered: false,
        ..Default::default()
    };
    ClusterSet::sandbox_configs(configs.into(), options).await
}

/// `mcsd join --one-way cluster-a cluster-b` with tokens living `ttl`, through the library (the
/// command line refuses lifetimes under ten minutes, as kube-apiserver does).
async fn join_one_way(set: &ClusterSet, ttl: Duration) {
    let options = mcsd::commands::join::JoinOptions {
        dry_run: false,
        token_ttl: ttl,
    };
    let contexts = ["cluster-a".to_string(), "cluster-b".to_string()];
    mcsd::commands::join::join(
        Some(&set.kubeconfig()),
        &contexts,
        &Default::default(),
        true,
        &options,
    )
    .await
    .unwrap();
}

fn kubeconfigs(set: &ClusterSet) -> Vec<std::path::PathBuf> {
    set.members.iter().map(|m| m.kubeconfig.clone()).collect()
}

/// Peer tokens that live 6 s: the importing mcsd renews its own halfway through each life, many
/// times over, while the import answers and the peer stays synced throughout; the first token is
/// long dead by the end. Of cluster-b's two replicas only the leader renews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_tokens_renew_themselves_across_several_lifetimes_without_a_withdrawal_or_a_flap() {
    const LIFETIME: Duration = Duration::from_secs(6);
    const RENEWALS: usize = 4;

    let set = short_token_clusters().await;
    // Two replicas in cluster-b: only the leader renews.
    let options = mcsd::process::sandbox::Options {
        peered: false,
        ..Default::default()
    };
    let (_replica, _stop) = set.start_replica(1, &options).await;
    let b = &set.members[1];
    // cluster-a exports hello; cluster-b imports it once joined one way, with 6-second tokens.
    export_hello_as_the_readme_does(&kubeconfigs(&set), 0);
    join_one_way(&set, LIFETIME).await;
    let ip = eventually("hello in cluster-b", WAIT, || {
        let answer = dig(&b.dns, HELLO, "A");
        async move { (answer.status == "NOERROR" && !answer.records.is_empty()).then_some(answer) }
    })
    .await;
    let synced = || b.daemon().peers.get("cluster-a").map(|p| p.state) == Some(PeerState::Synced);
    eventually("cluster-a synced in cluster-b", WAIT, || async {
        synced().then_some(())
    })
    .await;

    let expiry = || peer_secret_annotation(&b.kubeconfig, "cluster-a", "token-expires");
    let first = set.write(
        "first-token.kubeconfig",
        &peer_secret_kubeconfig(&b.kubeconfig, "cluster-a"),
    );
    let mut expiries = vec![expiry()];

    // Until the token has been renewed RENEWALS times: the answer never changes and the peer never
    // leaves Synced.
    let deadline = std::time::Instant::now() + LIFETIME * (RENEWALS as u32 + 4);
    while expiries.len() <= RENEWALS {
        assert_eq!(dig(&b.dns, HELLO, "A"), ip, "the import answers throughout");
        assert!(
            synced(),
            "cluster-a stays synced in cluster-b: {:?}",
            b.daemon().peers.get("cluster-a")
        );
        let now = expiry();
        if expiries.last() != Some(&now) {
            expiries.push(now);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "renewed only {} times: {expiries:?}",
            expiries.len() - 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The expiry the metric shows is the Secret's newest.
    let scraped = mcsd_tests::admin_get(b.admin, "/metrics").await;
    assert!(
        scraped.contains("mcsd_peer_credential_expiry_timestamp_seconds{peer=\"cluster-a\"}"),
        "{scraped}"
    );
    // The first token expired long ago; the one in the Secret works.
    let refused = kubectl_refused(&first, &["get", "configmaps", "-n", "mcsd-system"]);
    assert!(refused.contains("Unauthorized"), "{refused}");
    let current = set.write(
        "current-token.kubeconfig",
        &peer_secret_kubeconfig(&b.kubeconfig, "cluster-a"),
    );
    kubectl(&current, &["get", "configmaps", "-n", "mcsd-system"]);
    // One token per renewal, from the leading replica (the join's first, and perhaps one renewal
    // under way): the other replica asked for none.
    let issued = set.members[0]
        .cluster()
        .tokens_issued("mcsd-system", "mcsd-peer-cluster-b");
    assert!(
        issued <= expiries.len() + 1,
        "{issued} tokens issued for {} renewals: more than one replica renews",
        expiries.len() - 1
    );
    set.stop().await;
}

/// A peer token whose renewal the exporting cluster refuses (its renew RoleBinding deleted),
/// renewed on its own schedule: the risk is reported as soon as the first renewal fails, before
/// the token expires; left alone, past the expiry the peer is refused with the fix named and its
/// endpoints stay through the grace period; `mcsd join` again restores it without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_be_renewed_is_reported_before_it_expires_then_refused_and_join_fixes_it() {
    // Renewal is due after 10 s; the token works for 20.
    const LIFETIME: Duration = Duration::from_secs(20);

    let set = short_token_clusters().await;
    let b = &set.members[1];
    export_hello_as_the_readme_does(&kubeconfigs(&set), 0);
    join_one_way(&set, LIFETIME).await;
    // cluster-a no longer lets cluster-b's identity mint its tokens.
    refuse_renewals(&set, 0, "cluster-b");
    let expires: k8s_openapi::jiff::Timestamp =
        peer_secret_annotation(&b.kubeconfig, "cluster-a", "token-expires")
            .parse()
            .unwrap();
    let ip = eventually("hello in cluster-b", WAIT, || {
        let answer = dig(&b.dns, HELLO, "A");
        async move { (answer.status == "NOERROR" && !answer.records.is_empty()).then_some(answer) }
    })
    .await;
    let at_risk = || {
        set.get(
            1,
            "demo",
            "serviceimport/hello",
            "{.status.conditions[?(@.type==\"ClustersAtRisk\")].status}",
        )
    };
    eventually("ClustersAtRisk=True on cluster-b's import", LIFETIME, || async {
        (at_risk() == "True").then_some(())
    })
    .await;
    assert!(
        k8s_openapi::jiff::Timestamp::now() < expires,
        "reported before the token expires ({expires})"
    );
    assert_eq!(dig(&b.dns, HELLO, "A"), ip, "the import answers meanwhile");

    // Left alone, the token expires: the peer is refused, naming the fix, and its endpoints stay
    // through the grace period.
    let refused = eventually("cluster-a refused once its token expired", WAIT, || async {
        match b.daemon().peers.get("cluster-a").map(|p| p.state) {
            Some(PeerState::Refused(why)) => Some(why),
            _ => None,
        }
    })
    .await;
    assert!(
        k8s_openapi::jiff::Timestamp::now() >= expires
            && refused.contains("401")
            && refused.ends_with("run `mcsd join` for this pair again, or renew the kubeconfig in Secret mcsd-system/peer-cluster-a"),
        "{refused}"
    );
    assert_eq!(dig(&b.dns, HELLO, "A"), ip, "kept through the grace period");

    // The fix it names.
    join_one_way(&set, LIFETIME).await;
    eventually("cluster-a synced again", WAIT, || async {
        (b.daemon().peers.get("cluster-a").map(|p| p.state) == Some(PeerState::Synced)).then_some(())
    })
    .await;
    eventually("ClustersAtRisk=False again", WAIT, || async {
        (at_risk() == "False").then_some(())
    })
    .await;
    assert_eq!(dig(&b.dns, HELLO, "A"), ip);
    set.stop().await;
}

//! Fault injection on a sandbox ClusterSet: the leader killed, the leader's Lease requests
//! hanging, mcsd restarted (idle, and under a load of new exports), the API server restarted with
//! its watch history gone (410). Each asserts DNS answers throughout and counts (or dates) the
//! writes mcsd makes.

use std::time::{Duration, Instant};

use mcsd_tests::{Answer, ClusterSet, WAIT, dig, eventually, fixtures::resolved, settled};
use serde_json::json;

fn cluster_ip_export(ns: &str, name: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 80}}]}}\n\
         ---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {{name: {name}, namespace: {ns}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_over_within_the_lease_and_dns_answers_throughout() {
    let lease = Duration::from_secs(3);
    let options = mcsd::process::sandbox::Options {
        lease_duration: lease,
        give_up_lease: false,
        ..Default::default()
    };
    let set = ClusterSet::sandbox_with_namespace(2, "ha", options.clone()).await;
    // A second replica in cluster-a: two candidates for its Lease.
    let (replica, stop_replica) = set.start_replica(0, &options).await;
    replica.wait_ready(WAIT).await.unwrap();
    let first_leads = *set.members[0].daemon().leader.borrow();
    assert_ne!(
        first_leads,
        *replica.handle.leader.borrow(),
        "exactly one replica leads"
    );
    set.apply(0, &cluster_ip_export("ha", "one"));
    let name = "one.ha.svc.clusterset.local";
    let ip = resolved(set.members[0].dns, name).await;

    // Kill the leader, as a crash would: it does not give the Lease up.
    let (survivor, survivor_dns) = if first_leads {
        set.members[0].stop_mcsd().cancel();
        (replica.handle.clone(), replica.dns)
    } else {
        stop_replica.cancel();
        (set.members[0].daemon().clone(), set.members[0].dns)
    };
    let killed = Instant::now();
    // The survivor answers throughout, and takes over within the lease duration (plus one
    // retry period of at most 2 s).
    let mut leader = survivor.leader.clone();
    while !*leader.borrow() {
        assert_eq!(
            dig(&survivor_dns, name, "A"),
            Answer::ok(&[&ip]),
            "during the handover"
        );
        assert!(
            killed.elapsed() < lease + Duration::from_secs(3),
            "no handover after {:?}",
            killed.elapsed()
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), leader.changed()).await;
    }
    // The new leader writes: a new export reaches cluster-b.
    set.apply(0, &cluster_ip_export("ha", "two"));
    resolved(set.members[1].dns, "two.ha.svc.clusterset.local").await;
    assert_eq!(dig(&survivor_dns, name, "A"), Answer::ok(&[&ip]));
    stop_replica.cancel();
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_requests_hang_stops_writing_before_the_lease_can_pass_and_a_leader_returns() {
    let lease = Duration::from_secs(3);
    let options = mcsd::process::sandbox::Options {
        lease_duration: lease,
        ..Default::default()
    };
    let set = ClusterSet::sandbox_with_namespace(2, "hang", options.clone()).await;
    let (replica, stop_replica) = set.start_replica(0, &options).await;
    replica.wait_ready(WAIT).await.unwrap();
    let replicas = [
        (set.members[0].daemon().clone(), set.members[0].dns),
        (replica.handle.clone(), replica.dns),
    ];
    let leaders = || replicas.iter().filter(|(h, _)| *h.leader.borrow()).count();
    set.apply(0, &cluster_ip_export("hang", "one"));
    let one = "one.hang.svc.clusterset.local";
    // Each cluster has its own clusterset IP for it; both replicas of cluster-a answer the same.
    let ip_b = resolved(set.members[1].dns, one).await;
    let ip = resolved(replicas[0].1, one).await;
    assert_eq!(resolved(replicas[1].1, one).await, ip);
    assert_eq!(leaders(), 1, "exactly one replica of cluster-a leads");

    // cluster-a's API server now takes Lease requests and never answers them.
    set.members[0].cluster().hold_requests("leases");
    let held = Instant::now();
    // The leader cannot renew: it must stop writing before anyone else could take the Lease,
    // one lease duration after its last renewal.
    eventually("the leader to step down", WAIT, || async {
        (leaders() == 0).then_some(())
    })
    .await;
    let stepped_down = held.elapsed();
    assert!(
        stepped_down < lease,
        "stepped down {stepped_down:?} after its renewals began to hang: past the lease duration"
    );
    // Nobody leads, so nobody writes: a new export in cluster-a goes nowhere, and DNS answers
    // what it knew throughout.
    let writes = |replicas: &[(mcsd::daemon::Handle, std::net::SocketAddr)]| {
        replicas.iter().map(|(h, _)| h.writes.total()).sum::<u64>()
    };
    let before = writes(&replicas);
    set.apply(0, &cluster_ip_export("hang", "two"));
    let two = "two.hang.svc.clusterset.local";
    let quiet = Instant::now();
    while quiet.elapsed() < lease {
        for (_, dns) in &replicas {
            assert_eq!(dig(dns, one, "A"), Answer::ok(&[&ip]), "while the Lease hangs");
        }
        assert_eq!(dig(&set.members[1].dns, two, "A").status, "NXDOMAIN");
        assert_eq!(leaders(), 0, "a replica led while its Lease requests hung");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(writes(&replicas), before, "a replica wrote without the Lease");

    // Answered again (the held requests land late, as they may on a real API server): one
    // replica leads again, and the export held back reaches cluster-b.
    set.members[0].cluster().release_requests("leases");
    let released = Instant::now();
    let two_ip = resolved(set.members[1].dns, two).await;
    assert_ne!(two_ip, ip_b);
    assert!(
        released.elapsed() < lease * 2 + Duration::from_secs(4),
        "writing resumed only {:?} after the release",
        released.elapsed()
    );
    let watch = Instant::now();
    while watch.elapsed() < lease {
        assert_eq!(leaders(), 1, "exactly one leader after the release");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dig(&replicas[0].1, one, "A"), Answer::ok(&[&ip]));
    stop_replica.cancel();
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_mcsd_never_answers_nxdomain_and_rewrites_nothing_that_is_right() {
    const SERVICES: usize = 60;
    let mut set = ClusterSet::sandbox_with_namespace(3, "steady", Default::default()).await;
    let all: String = (0..SERVICES)
        .map(|i| cluster_ip_export("steady", &format!("svc-{i}")))
        .collect();
    set.apply(0, &all);
    let dns_c = set.members[2].dns;
    let mut ips = Vec::new();
    for i in 0..SERVICES {
        ips.push(resolved(dns_c, &format!("svc-{i}.steady.svc.clusterset.local")).await);
    }
    settled(set.members[2].daemon()).await;

    let restarted = set.restart_mcsd(2).await;
    // From its first answer on: the right address, or SERVFAIL while it loads; never NXDOMAIN.
    let probe = "svc-7.steady.svc.clusterset.local";
    let started = Instant::now();
    let mut answers = std::collections::BTreeSet::new();
    loop {
        let a = dig(&restarted.dns, probe, "A");
        assert_ne!(
            a.status, "NXDOMAIN",
            "a restarted mcsd must not deny a name it has not loaded"
        );
        if a.status == "NOERROR" {
            assert_eq!(a, Answer::ok(&[&ips[7]]));
            break;
        }
        answers.insert(a.status);
        assert!(started.elapsed() < WAIT, "never answered: {answers:?}");
    }
    restarted.wait_ready(WAIT).await.unwrap();
    for (i, ip) in ips.iter().enumerate() {
        let name = format!("svc-{i}.steady.svc.clusterset.local");
        assert_eq!(dig(&restarted.dns, &name, "A"), Answer::ok(&[ip]), "{name}");
    }
    // Zero writes: everything the old mcsd wrote is already right. Once its first full pass has
    // been worked through, whatever it did not write it never will without a new event.
    let mut converged = restarted.handle.converged.clone();
    tokio::time::timeout(WAIT, converged.wait_for(|c| *c))
        .await
        .expect("the restarted mcsd's first pass never converged")
        .unwrap();
    assert_eq!(
        restarted.handle.writes.snapshot(),
        Default::default(),
        "a restart over healthy imports writes nothing"
    );
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_past_its_watch_history_relists_without_a_burst_of_writes() {
    let mut configs: Vec<_> = (0..2).map(mcsd_sandbox::ClusterConfig::nth).collect();
    // A short watch history: after the churn below, every watch's resourceVersion is too old.
    configs[1].event_log_capacity = 50;
    let set = ClusterSet::sandbox_configs(configs, Default::default()).await;
    for i in 0..2 {
        set.apply(i, &mcsd_tests::fixtures::namespace("relist"));
    }
    let all: String = (0..20)
        .map(|i| cluster_ip_export("relist", &format!("svc-{i}")))
        .collect();
    set.apply(0, &all);
    let dns_b = set.members[1].dns;
    let mut ips = Vec::new();
    for i in 0..20 {
        ips.push(resolved(dns_b, &format!("svc-{i}.relist.svc.clusterset.local")).await);
    }
    settled(set.members[1].daemon()).await;
    let writes_before = set.members[1].daemon().writes.snapshot();

    // Cluster-b's API server goes away; meanwhile 100 unrelated changes roll its history over.
    let b = &set.members[1].cluster();
    b.stop_api_server().await;
    let api = b.api();
    let info = api.resource("", "configmaps").unwrap();
    let ctx = mcsd_sandbox::api::Ctx::system("churn");
    for i in 0..100 {
        let body =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("churn-{i}")}});
        api.create(&info, "v1", "default", body, &ctx).unwrap();
    }
    // DNS answers while the API server is down.
    for (i, ip) in ips.iter().enumerate().step_by(5) {
        let name = format!("svc-{i}.relist.svc.clusterset.local");
        assert_eq!(dig(&dns_b, &name, "A"), Answer::ok(&[ip]), "API server down");
    }
    b.start_api_server().await.unwrap();
    // The watches come back (with a 410 and a relist): a new export reaches cluster-b.
    set.apply(0, &cluster_ip_export("relist", "after"));
    resolved(dns_b, "after.relist.svc.clusterset.local").await;
    for (i, ip) in ips.iter().enumerate() {
        let name = format!("svc-{i}.relist.svc.clusterset.local");
        assert_eq!(
            dig(&dns_b, &name, "A"),
            Answer::ok(&[ip]),
            "{name} after the relist"
        );
    }
    // The writes since: only the new service's (import, its status, derived Service, slices).
    let after = set.members[1].daemon().writes.snapshot();
    let new: u64 = after
        .iter()
        .map(|(k, n)| n - writes_before.get(k).copied().unwrap_or(0))
        .sum();
    let diff: Vec<_> = after
        .iter()
        .map(|(k, n)| (k.clone(), n - writes_before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        new <= 8,
        "a relist must not rewrite what is right: {new} writes ({diff:?})"
    );
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcsd_restarted_under_load_denies_nothing_and_rewrites_nothing_that_is_right() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, ListParams, PostParams};
    use mcsd_crds::mcs::v1beta1::{ServiceExport, ServiceImport};

    const STABLE: usize = 30;
    let mut set = ClusterSet::sandbox_with_namespace(3, "busy", Default::default()).await;
    let all: String = (0..STABLE)
        .map(|i| cluster_ip_export("busy", &format!("stable-{i}")))
        .collect();
    set.apply(0, &all);
    let dns_c = set.members[2].dns;
    let mut ips = Vec::new();
    for i in 0..STABLE {
        ips.push(resolved(dns_c, &format!("stable-{i}.busy.svc.clusterset.local")).await);
    }
    settled(set.members[2].daemon()).await;

    // The load: cluster-a exports a new service every 50 ms until told to stop.
    let client_a = set.members[0].client().await;
    let stop_churn = tokio_util::sync::CancellationToken::new();
    let churned_so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let churn = {
        let stop = stop_churn.clone();
        let so_far = churned_so_far.clone();
        tokio::spawn(async move {
            let services: Api<Service> = Api::namespaced(client_a.clone(), "busy");
            let exports: Api<ServiceExport> = Api::namespaced(client_a, "busy");
            let mut made = Vec::new();
            while !stop.is_cancelled() {
                let name = format!("churn-{}", made.len());
                let svc = json!({"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]}});
                services
                    .create(&PostParams::default(), &serde_json::from_value(svc).unwrap())
                    .await
                    .unwrap();
                let export = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
                    "metadata": {"name": name}, "spec": {}});
                exports
                    .create(&PostParams::default(), &serde_json::from_value(export).unwrap())
                    .await
                    .unwrap();
                made.push(name);
                so_far.store(made.len(), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            made
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Restart cluster-c's mcsd in the middle of it. What cluster-c already imported is dated.
    let client_c = set.members[2].client().await;
    let imports_c: Api<ServiceImport> = Api::namespaced(client_c.clone(), "busy");
    let restart_at = k8s_openapi::jiff::Timestamp::now();
    let restarted = set.restart_mcsd(2).await;
    let started = Instant::now();
    let mut probes = 0;
    while !*restarted.handle.ready.borrow() || !restarted.zone.load().synced() {
        let i = probes % STABLE;
        let a = dig(
            &restarted.dns,
            &format!("stable-{i}.busy.svc.clusterset.local"),
            "A",
        );
        assert_ne!(a.status, "NXDOMAIN", "a restarting mcsd must not deny stable-{i}");
        if a.status == "NOERROR" {
            assert_eq!(a, Answer::ok(&[&ips[i]]));
        }
        probes += 1;
        assert!(started.elapsed() < WAIT, "the restarted mcsd never became ready");
    }
    // The load goes on past the restart, however fast the machine: at least 20 exports.
    eventually("20 exports made under the restart", WAIT, || async {
        (churned_so_far.load(std::sync::atomic::Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
    stop_churn.cancel();
    let churned = churn.await.unwrap();

    // Everything converges: every churned export is imported once, with one slice, and answers.
    for name in &churned {
        resolved(restarted.dns, &format!("{name}.busy.svc.clusterset.local")).await;
    }
    settled(&restarted.handle).await;
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(client_c, "busy");
    let slices = slices
        .list(&ListParams::default().labels("endpointslice.kubernetes.io/managed-by=mcsd.io"))
        .await
        .unwrap();
    let mut per_service = std::collections::BTreeMap::<String, usize>::new();
    for s in &slices.items {
        let svc = s.metadata.labels.as_ref().unwrap()["multicluster.kubernetes.io/service-name"].clone();
        *per_service.entry(svc).or_default() += 1;
    }
    assert!(
        per_service.values().all(|n| *n == 1),
        "one slice per import: {per_service:?}"
    );
    assert_eq!(per_service.len(), STABLE + churned.len());
    // What was right before the restart was not written again: its write dates predate it.
    let imports = imports_c.list(&ListParams::default()).await.unwrap();
    assert_eq!(imports.items.len(), STABLE + churned.len());
    let written = |o: &ServiceImport| -> k8s_openapi::jiff::Timestamp {
        o.metadata.annotations.as_ref().unwrap()["mcsd.io/written-at"]
            .parse()
            .unwrap()
    };
    for import in imports
        .items
        .iter()
        .filter(|i| i.metadata.name.as_ref().unwrap().starts_with("stable-"))
    {
        assert!(
            written(import) < restart_at,
            "{:?} rewritten after the restart",
            import.metadata.name
        );
    }
    for s in slices
        .items
        .iter()
        .filter(|s| s.metadata.name.as_ref().unwrap().starts_with("stable-"))
    {
        let at: k8s_openapi::jiff::Timestamp = s.metadata.annotations.as_ref().unwrap()["mcsd.io/written-at"]
            .parse()
            .unwrap();
        assert!(
            at < restart_at,
            "{:?} rewritten after the restart",
            s.metadata.name
        );
    }
    set.stop().await;
}

/// Two replicas mid-way through a rolling change of `--lease-duration`: the one with the shorter
/// duration waits for the holder's own (written in the Lease), not its own, so it never takes
/// over a Lease that is still being renewed, and the two never lead at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_different_lease_durations_never_lead_at_once() {
    let long = mcsd::process::sandbox::Options {
        lease_duration: Duration::from_secs(9),
        give_up_lease: false,
        ..Default::default()
    };
    let set = ClusterSet::sandbox_with_namespace(1, "lease", long).await;
    let first = set.members[0].daemon().clone();
    eventually("the first replica to lead", WAIT, || async {
        (*first.leader.borrow()).then_some(())
    })
    .await;
    // A replica whose own lease is shorter than the holder's renewal interval (at most 2 s).
    let short = mcsd::process::sandbox::Options {
        lease_duration: Duration::from_secs(1),
        give_up_lease: false,
        ..Default::default()
    };
    let (second, stop_second) = set.start_replica(0, &short).await;
    second.wait_ready(WAIT).await.unwrap();
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(set.members[0].client().await, "mcsd-system");
    let renewed = || async {
        leases
            .get("mcsd")
            .await
            .ok()
            .and_then(|l| l.spec?.renew_time)
            .map(|t| t.0.to_string())
    };
    // Four renewals by the holder (eight seconds or so): the second replica never leads.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut renewals: Vec<String> = Vec::new();
    while renewals.len() <= 4 {
        assert!(
            Instant::now() < deadline,
            "the first replica did not renew four times"
        );
        assert!(*first.leader.borrow(), "the holder lost its Lease");
        assert!(
            !*second.handle.leader.borrow(),
            "the second replica took a Lease being renewed"
        );
        if let Some(at) = renewed().await
            && renewals.last() != Some(&at)
        {
            renewals.push(at);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_second.cancel();
    set.stop().await;
}

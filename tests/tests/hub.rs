//! Hub mode (`mcsd sandbox --clusters N --hub`, `tests/kube/up.sh --hub`): members connected
//! only through a hub API server. What a member's hub credential may do, what a reader takes from
//! the hub, what the hub sends each member, a member removed and enrolled again, and ranges
//! narrowed by the hub's admin. Every story runs on the sandbox and again on the real tier's hub
//! ClusterSet; the ClusterSet flow of `clusterset.rs` runs there too. A ClusterSet moving from
//! hub to mesh and back with a DNS probe running is here too. The hub down past the grace period
//! and the enrolment commands from a bare API server are in `hub_lifecycle.rs`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use mcsd_tests::{
    ClusterSet, WAIT, dig, eventually, eventually_or_none,
    fixtures::{export_when_ready, exported, exported_everywhere_then_withdrawn, resolved, withdrawn},
    kubectl, kubectl_refused,
};

const HELLO: &str = "hello.demo.svc.clusterset.local";

/// The ClusterSet flow of `clusterset.rs` through a hub: no member has a peer; every record goes
/// through the hub API server, each member's into its own namespace there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_hub_an_exported_service_is_imported_in_every_member_and_withdrawn_on_unexport() {
    let set = ClusterSet::hub_with_namespace(3, "demo").await;
    let set = exported_everywhere_then_withdrawn(set).await;
    eventually("cluster-a's records to leave the hub", WAIT, || async {
        set.hub().records().trim().is_empty().then_some(())
    })
    .await;
    set.stop().await;
}

/// `mcsd status --all-contexts` over the ClusterSet's kubeconfig (the members' contexts and the
/// hub's): the hub as its admin sees it, each member's records there and when it last wrote; and
/// for each member, the hub it follows and when it last wrote there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcsd_status_shows_each_members_records_and_last_write_on_the_hub() {
    let set = ClusterSet::hub_with_namespace(3, "demo").await;
    export_when_ready(&set, 0, "demo", "hello").await;
    resolved(set.members[2].dns, HELLO).await;
    // cluster-a's row on the hub: MEMBER RECORDS SLICES LAST WRITE RANGES.
    let hub_row = |text: &str| -> Option<Vec<String>> {
        let hub_block = text.split("hub (context hub) at https://").nth(1)?;
        let row = hub_block.lines().find(|l| l.starts_with("  cluster-a "))?;
        Some(row.split_whitespace().map(str::to_string).collect())
    };
    // A member's leader publishes its status at most every 2 s; its slice reaches the hub after
    // its record.
    let text = eventually(
        "cluster-a's status to say it wrote to the hub, and the hub to hold its record and slice",
        WAIT,
        || async {
            let text = set.mcsd(&["status", "--all-contexts"]);
            let block = text.split("cluster-a (context cluster-a)").nth(1)?;
            let hub_line = block.lines().nth(1)?;
            let wrote = hub_line.starts_with("  hub https://")
                && hub_line.contains(": last write ")
                && hub_line.ends_with(" ago");
            let row = hub_row(&text)?;
            (wrote && row[1] == "1" && row[2] != "0").then_some(text)
        },
    )
    .await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("hub (context hub) at https://") && l.ends_with(": 3 members")),
        "{text}"
    );
    // Written seconds ago; the pod ranges declared for it.
    let row = hub_row(&text).unwrap();
    assert_eq!(&row[4..6], ["s", "ago"], "{text}");
    assert!(row[6].starts_with("10.160.0.0/16"), "{text}");
    set.stop().await;
}

/// An export record of service `demo/<name>`, written by hand into `writer`'s namespace on the
/// hub, saying it is `claims`'s.
fn record_by_hand(writer: &str, claims: &str, name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: demo.{name}
  namespace: mcsd-member-{writer}
  labels: {{mcsd.io/exchange: v1, mcsd.io/service-namespace: demo, mcsd.io/service-name: {name}}}
data:
  export.json: '{{"cluster":"{claims}","namespace":"demo","name":"{name}","exportCreated":"2026-01-01T00:00:00Z","type":"ClusterSetIP","ports":[{{"name":"http","protocol":"TCP","port":80}}],"sessionAffinity":"None","ipFamilies":["IPv4"]}}'
"#
    )
}

/// Sets its flag when dropped: a failing test stops the probe it started.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A hub ClusterSet moved to a full mesh and back, the way the README says, with a DNS probe
/// asking cluster-c all along: every answer is the same, never NXDOMAIN. Hub → mesh: `mcsd join`
/// peers the members beside the hub (the mesh takes precedence at once), then `mcsd leave --hub`
/// takes them out of the hub. Mesh → hub: `mcsd join --hub` enrols them again, then `mcsd leave`
/// unpeers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clusterset_moves_from_hub_to_mesh_and_back_without_an_answer_missing() {
    let set = ClusterSet::hub_with_namespace(3, "demo").await;
    let names = ["cluster-a", "cluster-b", "cluster-c"];
    let ranges: Vec<String> = names
        .iter()
        .map(|m| (m, set.hub().declared_ranges(m)))
        .filter(|(_, r)| !r.is_empty())
        .map(|(m, r)| format!("--ranges={m}={r}"))
        .collect();
    export_when_ready(&set, 0, "demo", "hello").await;
    let dns_c = set.members[2].dns;
    resolved(dns_c, HELLO).await;
    let answer = dig(&dns_c, HELLO, "A");
    let via = |how: &'static str| {
        let set = &set;
        move || async move {
            set.peer_status("cluster-c", "cluster-a")
                .filter(|s| s["state"] == "synced" && s["via"] == how)
        }
    };
    eventually("cluster-c to read cluster-a from the hub", WAIT, via("hub")).await;

    // The probe: it stops when told, or when the test fails.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_failure = StopOnDrop(stop.clone());
    let probe = {
        let (stop, answer) = (stop.clone(), answer.clone());
        tokio::task::spawn_blocking(move || {
            let mut asked = 0;
            while !stop.load(Ordering::SeqCst) {
                let got = dig(&dns_c, HELLO, "A");
                assert_eq!(got, answer, "answer {asked} of the probe");
                asked += 1;
            }
            asked
        })
    };

    // Hub → mesh: peered beside the hub, cluster-c reads cluster-a from cluster-a itself (its
    // status is rewritten at most every 2 s); then out of the hub.
    set.mcsd(&[&["join"][..], &names[..]].concat());
    eventually("cluster-c to read cluster-a through the mesh", WAIT, via("mesh")).await;
    let left = set.mcsd(&[&["leave", "--hub", "hub"][..], &names[..]].concat());
    assert!(left.contains("left: cluster-c"), "{left}");
    eventually("the members' hub namespaces to be gone", WAIT, || async {
        let held = kubectl(
            &set.hub().kubeconfig,
            &["get", "namespaces", "-l", "hub.mcsd.io/member", "-o", "name"],
        );
        (!names.iter().any(|m| held.contains(&format!("mcsd-member-{m}")))).then_some(())
    })
    .await;
    set.apply(0, &exported("demo", "meshed"));
    resolved(dns_c, "meshed.demo.svc.clusterset.local").await;

    // Mesh → hub: enrolled again, with the ranges they had; while both run the mesh keeps
    // precedence. Then unpeered: cluster-c reads cluster-a from the hub.
    let ranges: Vec<&str> = ranges.iter().map(String::as_str).collect();
    set.mcsd(&[&["join", "--hub", "hub"][..], &ranges[..], &names[..]].concat());
    set.hub().holds("mcsd-member-cluster-a", "demo.meshed").await;
    assert!(
        via("mesh")().await.is_some(),
        "the mesh keeps precedence while both run"
    );
    set.mcsd(&[&["leave"][..], &names[..]].concat());
    eventually("cluster-c to read cluster-a from the hub", WAIT, via("hub")).await;
    set.apply(0, &exported("demo", "hubbed"));
    resolved(dns_c, "hubbed.demo.svc.clusterset.local").await;

    stop.store(true, Ordering::SeqCst);
    let asked = probe.await.expect("every answer of the probe was the same");
    assert!(asked > 10, "the probe asked {asked} times");
    assert_eq!(dig(&dns_c, HELLO, "A"), answer);
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_hub_credential_writes_its_own_namespace_and_nothing_else() {
    let set = ClusterSet::hub_with_namespace(2, "demo").await;
    set.apply(0, &exported("demo", "hello"));
    set.hub().holds("mcsd-member-cluster-a", "demo.hello").await;
    let b = set.hub_credential(1);
    let record = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo.hello, namespace: mcsd-member-cluster-a, labels: {mcsd.io/exchange: v1}}\ndata: {export.json: '{}'}\n";
    let path = set.write("forged.yaml", record);
    let path = path.to_str().unwrap();
    for (what, args) in [
        ("overwrite cluster-a's record", &["apply", "-f", path][..]),
        (
            "delete cluster-a's record",
            &["delete", "configmap", "demo.hello", "-n", "mcsd-member-cluster-a"],
        ),
        (
            "write a record into the hub's default namespace",
            &["create", "configmap", "x", "-n", "default"],
        ),
        (
            "make itself a namespace",
            &["create", "namespace", "mcsd-member-cluster-z"],
        ),
        (
            "change what its own namespace declares",
            &[
                "annotate",
                "namespace",
                "mcsd-member-cluster-b",
                "--overwrite",
                "hub.mcsd.io/ranges=0.0.0.0/0",
            ],
        ),
        ("read the hub's Secrets", &["get", "secrets", "-A"]),
    ] {
        let refused = kubectl_refused(&b, args);
        assert!(
            refused.contains("forbidden") && refused.contains("mcsd-member-cluster-b:mcsd-member"),
            "cluster-b's credential may not {what}: {refused}"
        );
    }
    // What it may do: write its own namespace (its mcsd does), and read every member's records.
    let may = kubectl(
        &b,
        &[
            "auth",
            "can-i",
            "create",
            "configmaps",
            "-n",
            "mcsd-member-cluster-b",
        ],
    );
    assert_eq!(may.trim(), "yes");
    let seen = kubectl(
        &b,
        &["get", "configmaps", "-A", "-l", "mcsd.io/exchange", "-o", "name"],
    );
    assert!(seen.contains("configmap/demo.hello"), "{seen}");
    if set.is_real() {
        // In its own namespace, the hub's policies (manifests/hub.yaml) take only exchange
        // records, within what the hub's admin declared for it. (The sandbox enforces no
        // policy; its readers refuse the same, see the stories below.)
        let slice = |name: &str, address: &str| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: mcsd-member-cluster-b\n  labels: {{mcsd.io/exchange: v1, mcsd.io/service-namespace: demo, mcsd.io/service-name: web, endpointslice.kubernetes.io/managed-by: mcsd.io}}\naddressType: IPv4\nendpoints: [{{addresses: [{address}]}}]\n"
            )
        };
        let outside = set.write("outside.yaml", &slice("demo.web-1", "10.160.0.9"));
        let multicast = set.write("multicast.yaml", &slice("demo.web-2", "239.1.2.3"));
        for (what, args, policy, message) in [
            (
                "write a ConfigMap that is no exchange record",
                vec!["create", "configmap", "own", "-n", "mcsd-member-cluster-b"],
                "mcsd-hub-member-records",
                "holds only exchange records",
            ),
            (
                "publish an endpoint in cluster-a's range",
                vec!["apply", "-f", outside.to_str().unwrap()],
                "mcsd-hub-member-endpoints",
                "has an address outside the ranges declared for cluster-b",
            ),
            (
                "publish a multicast endpoint",
                vec!["apply", "-f", multicast.to_str().unwrap()],
                "mcsd-hub-member-endpoints",
                "has an address no endpoint can have",
            ),
        ] {
            let refused = kubectl_refused(&b, &args);
            assert!(
                refused.contains(&format!("ValidatingAdmissionPolicy '{policy}'"))
                    && refused.contains(message),
                "cluster-b's credential may not {what}: {refused}"
            );
        }
    }
    // cluster-a's record is as cluster-a wrote it: cluster-b still imports it.
    resolved(set.members[1].dns, HELLO).await;
    set.stop().await;
}

/// cluster-b, compromised, publishes in its own hub namespace a record that says it is
/// cluster-a's. A real hub refuses the write (its ValidatingAdmissionPolicy, `manifests/hub.yaml`);
/// the sandbox's API server enforces no policy, so there every reader refuses the record, taking
/// its cluster from the hub namespace it lives in, and counts it against cluster-b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_naming_another_cluster_is_refused_and_counted_against_the_member_it_was_read_from() {
    let set = ClusterSet::hub_with_namespace(3, "demo").await;
    // cluster-c reads demo from the hub: it imports cluster-a's export there.
    set.apply(0, &exported("demo", "hello"));
    resolved(set.members[2].dns, HELLO).await;
    let b = set.hub_credential(1);
    let forged = record_by_hand("cluster-b", "cluster-a", "forged");
    let path = set.write("forged.yaml", &forged);
    let path = path.to_str().unwrap();
    let c = &set.members[2];
    if set.is_real() {
        let refused = kubectl_refused(&b, &["apply", "-f", path]);
        assert!(
            refused.contains("mcsd-hub-member-records")
                && refused.contains("mcsd-member-cluster-b may publish only cluster-b's records"),
            "the hub's policy refuses the forged record: {refused}"
        );
    } else {
        let before = c.refused_from("cluster-b", Some("names_another_cluster")).await;
        kubectl(&b, &["apply", "-f", path]);
        eventually("cluster-c to refuse cluster-b's record", WAIT, || async {
            (c.refused_from("cluster-b", Some("names_another_cluster")).await > before).then_some(())
        })
        .await;
    }
    assert_eq!(
        dig(&c.dns, "forged.demo.svc.clusterset.local", "A").status,
        "NXDOMAIN"
    );
    assert_eq!(
        set.kubectl(2, &["get", "serviceimports", "-n", "demo", "-o", "name"])
            .trim(),
        "serviceimport.multicluster.x-k8s.io/hello",
        "no import from a forged record"
    );
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_sent_only_the_service_namespaces_it_has_and_more_once_it_has_them() {
    let set = ClusterSet::hub_start(3).await;
    for i in 0..2 {
        set.apply(i, &mcsd_tests::fixtures::namespace("only-ab"));
    }
    for i in 0..3 {
        set.apply(i, &mcsd_tests::fixtures::namespace("demo"));
    }
    let before = set.members[2].hub_objects_received().await;
    // Exported in only-ab, which cluster-c does not have; then in demo, which it has.
    export_when_ready(&set, 0, "only-ab", "web").await;
    resolved(set.members[1].dns, "web.only-ab.svc.clusterset.local").await;
    export_when_ready(&set, 0, "demo", "hello").await;
    resolved(set.members[2].dns, HELLO).await;
    // The hub sent cluster-c demo's record and slice (each watch delivers in order: demo's came
    // after only-ab's), and nothing of only-ab.
    let sent = set.members[2].hub_objects_received().await - before;
    assert!(
        (2.0..=4.0).contains(&sent),
        "cluster-c received {sent} objects: demo/hello's record and slice (a record again when its \
         conditions settle), none of only-ab's"
    );
    // Once cluster-c has the namespace, it reads what the hub holds for it.
    set.apply(2, &mcsd_tests::fixtures::namespace("only-ab"));
    resolved(set.members[2].dns, "web.only-ab.svc.clusterset.local").await;
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_from_the_hub_has_its_exports_withdrawn_everywhere() {
    let set = ClusterSet::hub_with_namespace(3, "demo").await;
    set.apply(0, &exported("demo", "hello"));
    set.apply(1, &exported("demo", "other"));
    for i in 1..3 {
        resolved(set.members[i].dns, HELLO).await;
    }
    resolved(set.members[2].dns, "other.demo.svc.clusterset.local").await;
    // The hub's admin removes cluster-a: its namespace, records and identity go.
    let hub = &set.hub().kubeconfig;
    let ranges = set.hub().declared_ranges("cluster-a");
    kubectl(hub, &["delete", "namespace", "mcsd-member-cluster-a"]);
    for i in 1..3 {
        withdrawn(set.members[i].dns, HELLO).await;
    }
    // The others are unaffected.
    assert_eq!(
        dig(&set.members[2].dns, "other.demo.svc.clusterset.local", "A")
            .records
            .len(),
        1
    );
    // Enrolled again, as it was: its export is back everywhere.
    let ranges = format!("cluster-a={ranges}");
    set.mcsd(&["join", "--hub", "hub", "--ranges", &ranges, "cluster-a"]);
    for i in 1..3 {
        resolved(set.members[i].dns, HELLO).await;
    }
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_ranges_narrowed_on_the_hub_apply_to_the_endpoints_already_held() {
    let set = ClusterSet::hub_with_namespace(3, "demo").await;
    set.apply(1, &exported("demo", "web"));
    let endpoints_in_c = || {
        set.kubectl(
            2,
            &[
                "get",
                "endpointslices",
                "-n",
                "demo",
                "-l",
                "multicluster.kubernetes.io/source-cluster=cluster-b",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[*]}",
            ],
        )
    };
    let held = eventually(
        "cluster-b's pod in cluster-c's MCS EndpointSlice",
        WAIT,
        || async { Some(endpoints_in_c()).filter(|a| a.starts_with("10.161.")) },
    )
    .await;
    // The hub's admin narrows what cluster-b may publish to a range its pod is not in.
    let declared = set.hub().declared_ranges("cluster-b");
    set.hub().declare_ranges("cluster-b", "10.99.0.0/16");
    eventually(
        "cluster-c to drop cluster-b's endpoint it already held",
        WAIT,
        || async { endpoints_in_c().trim().is_empty().then_some(()) },
    )
    .await;
    let refused = set.members[2]
        .refused_from("cluster-b", Some("address_outside_ranges"))
        .await;
    assert!(
        refused >= 1.0,
        "{held} refused as outside cluster-b's ranges: {refused}"
    );
    // Widened again to what it declared: the endpoint comes back.
    set.hub().declare_ranges("cluster-b", &declared);
    eventually("cluster-c to take cluster-b's endpoint again", WAIT, || async {
        (endpoints_in_c() == held).then_some(())
    })
    .await;
    set.stop().await;
}

/// The hub's kube-apiserver stopped (SIGSTOP: it hangs, connections stay open) and killed
/// (SIGKILL: `up.sh` starts it again on the same address, over the same etcd): no member's answer
/// changes meanwhile, exports made after each reach every member, and after the restart each
/// member lists again at most once per watch, not in a loop (counted in the hub's audit log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (a hub kube-apiserver to stop and kill): tests/kube/test.sh runs it"]
async fn a_hub_stopped_or_killed_changes_no_answer_and_each_member_lists_again_once() {
    let set = ClusterSet::hub_with_namespace(3, "demo").await;
    set.apply(0, &exported("demo", "hello"));
    for i in 1..3 {
        resolved(set.members[i].dns, HELLO).await;
    }
    let answers: Vec<_> = (0..3).map(|i| dig(&set.members[i].dns, HELLO, "A")).collect();
    let unchanged = |during: &str| {
        for (i, answer) in answers.iter().enumerate() {
            assert_eq!(
                &dig(&set.members[i].dns, HELLO, "A"),
                answer,
                "{}'s answer {during}",
                set.members[i].name
            );
        }
    };
    let hub = set.hub();

    hub.signal("kube-apiserver", "STOP");
    let stopped = std::time::Instant::now();
    while stopped.elapsed() < Duration::from_secs(10) {
        unchanged("while the hub is stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    hub.signal("kube-apiserver", "CONT");
    set.apply(0, &exported("demo", "after-stop"));
    for i in 1..3 {
        resolved(set.members[i].dns, "after-stop.demo.svc.clusterset.local").await;
    }

    let killed = Timestamp::now();
    hub.signal("kube-apiserver", "KILL");
    // Down until up.sh has started it again and it serves.
    eventually("the hub's kube-apiserver to serve again", WAIT, || async {
        unchanged("while the hub is down");
        let ready = mcsd_tests::kubectl_output(&hub.kubeconfig, &["get", "--raw", "/readyz"]);
        ready.status.success().then_some(())
    })
    .await;
    set.apply(0, &exported("demo", "after-kill"));
    for i in 1..3 {
        resolved(set.members[i].dns, "after-kill.demo.svc.clusterset.local").await;
    }
    unchanged("after the restart");
    // Each member's five watches (records and slices of its own namespace; members, records and
    // slices across the hub) each list at most once; a member that relisted in a loop would not.
    let mut reads = BTreeMap::new();
    for read in set.hub().member_reads_since(killed) {
        *reads.entry((read.member, read.verb)).or_insert(0) += 1;
    }
    for m in &set.members {
        let lists = reads.get(&(m.name.clone(), "list".into())).copied().unwrap_or(0);
        assert!(
            lists <= 5,
            "{} listed the hub {lists} times since it was killed (five watches: at most 5): {reads:?}",
            m.name
        );
    }
    // They did read it again.
    assert!(
        set.members
            .iter()
            .all(|m| reads.contains_key(&(m.name.clone(), "watch".into()))),
        "every member watches the restarted hub: {reads:?}"
    );
    set.stop().await;
}

/// Puts a member's hub quota back when dropped, so a failing story leaves the hub as it was.
struct QuotaBack {
    hub: std::path::PathBuf,
    namespace: String,
    hard: String,
}

impl QuotaBack {
    /// Sets the member's quota of ConfigMaps; whether kube-apiserver took it.
    fn set(&self, configmaps: &str) -> bool {
        let patch = format!(r#"{{"spec":{{"hard":{{"count/configmaps":"{configmaps}"}}}}}}"#);
        let args = [
            "patch",
            "resourcequota",
            "mcsd-member",
            "-n",
            &self.namespace,
            "--type=merge",
            "-p",
            &patch,
        ];
        mcsd_tests::kubectl_output(&self.hub, &args).status.success()
    }
}

impl Drop for QuotaBack {
    // Not a panic here: this may run while a failing story unwinds.
    fn drop(&mut self) {
        let _ = self.set(&self.hard.clone());
    }
}

/// A member cannot fill the hub for the others: past its quota (the ResourceQuota `mcsd join
/// --hub` writes in its namespace, narrowed here by the hub's admin to what it holds), the hub's
/// kube-apiserver refuses its writes, a record written by hand and its own mcsd's alike, and
/// `mcsd status` says why; given room again, its mcsd writes what waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (the sandbox's API server stores quotas but does not enforce them): tests/kube/test.sh runs it"]
async fn a_member_past_its_quota_on_the_hub_is_refused_and_says_so() {
    let set = ClusterSet::hub_with_namespace(2, "demo").await;
    export_when_ready(&set, 1, "demo", "hello").await;
    set.hub().holds("mcsd-member-cluster-b", "demo.hello").await;
    let hub = set.hub().kubeconfig.clone();
    let namespace = "mcsd-member-cluster-b";
    let quota = |path: &str| {
        kubectl(
            &hub,
            &[
                "get",
                "resourcequota",
                "mcsd-member",
                "-n",
                namespace,
                "-o",
                &format!("jsonpath={{{path}}}"),
            ],
        )
    };
    let hard = quota(".spec.hard.count/configmaps");
    assert_eq!(hard, "20001", "the quota `mcsd join --hub` wrote");
    // The hub's admin narrows it to what cluster-b holds now (its record and the namespace's CA),
    // counted from the objects themselves: the quota's `status.used` may lag deletions until
    // kube-controller-manager recounts, which it does when the quota changes.
    let held = || {
        kubectl(&hub, &["get", "configmaps", "-n", namespace, "-o", "name"])
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let used = held().len().to_string();
    let back = QuotaBack {
        hub: hub.clone(),
        namespace: namespace.into(),
        hard,
    };
    assert!(back.set(&used), "the hub's admin narrows cluster-b's quota");
    let mut last = String::new();
    let enforced = eventually_or_none(WAIT, || {
        let (hard_now, used_now) = (
            quota(".status.hard.count/configmaps"),
            quota(".status.used.count/configmaps"),
        );
        last = format!(
            "status.hard {hard_now}, status.used {used_now}, held {:?}",
            held()
        );
        std::future::ready((hard_now == used && used_now == used).then_some(()))
    })
    .await;
    assert!(
        enforced.is_some(),
        "the hub's quota on cluster-b never counted {used} ConfigMaps as used of {used}: {last}"
    );

    // A well-formed record of its own, written with cluster-b's credential: refused.
    let record = set.write("record.yaml", &record_by_hand("cluster-b", "cluster-b", "extra"));
    let refused = kubectl_refused(
        &set.hub_credential(1),
        &["apply", "--server-side", "-f", record.to_str().unwrap()],
    );
    assert!(refused.contains("exceeded quota"), "{refused}");

    // Its own mcsd's next record: refused too, and `mcsd status` says so.
    set.apply(1, &exported("demo", "more"));
    eventually("cluster-b's status to say its hub writes fail", WAIT, || async {
        let text = set.mcsd(&["status", "--context", "cluster-b"]);
        (text.contains("writing fails:") && text.contains("exceeded quota")).then_some(())
    })
    .await;
    // Room again: what waited is written, and reaches cluster-a.
    drop(back);
    set.hub().holds(namespace, "demo.more").await;
    resolved(set.members[0].dns, "more.demo.svc.clusterset.local").await;
    set.stop().await;
}

//! The upstream MCS conformance cases (`sigs.k8s.io/mcs-api/conformance`, checklist §6.2 #1–#22)
//! that need no packets between pods, translated to a sandbox ClusterSet: every case builds the
//! same fixture the upstream driver does (a fresh namespace in every cluster, the `hello` Service
//! with its labels, annotations, session affinity and dual-stack policy, simulated pods standing
//! in for the Deployment, and the ServiceExport in cluster 0), makes the same changes with the
//! real kubectl, and asserts what the upstream case asserts, with its timeouts: 20 s for an
//! object or condition, 5 s for "stays so". DNS is asked with the real `dig` against each
//! cluster's mcsd.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{Api, api::ListParams};
use mcsd_crds::{
    mcs::{
        IPFamily, ServiceImportType,
        v1beta1::{ServiceExport, ServiceImport},
    },
    names,
};
use mcsd_tests::{Answer, ClusterSet, dig, eventually};

/// Object and condition waits: the upstream suite's 20 s, a bound the spec's cases assert (not
/// the tests' general [`mcsd_tests::WAIT`]).
const SUITE_WAIT: Duration = Duration::from_secs(20);
/// "Stays so" checks (the upstream suite's `Consistently` of 5 s).
const STAYS: Duration = Duration::from_secs(5);

/// What the `hello` Service looks like in one cluster.
#[derive(Clone, Copy)]
struct Hello {
    headless: bool,
    /// The `ports:` list, as YAML flow.
    ports: &'static str,
    /// Pods standing in for the Deployment (or, with `hostnames`, the StatefulSet).
    replicas: usize,
    /// Give each pod a hostname and the Service as its subdomain (a StatefulSet's pods).
    hostnames: bool,
}

const HELLO: Hello = Hello {
    headless: false,
    ports: "[{name: tcp, port: 42, protocol: TCP}, {name: udp, port: 42, protocol: UDP}]",
    replicas: 1,
    hostnames: false,
};

/// One conformance case's fixture.
struct Driver {
    set: ClusterSet,
    ns: String,
}

impl Driver {
    /// A ClusterSet of `clusters`, a fresh namespace in each, `hello` deployed in cluster 0, and
    /// exported there unless `export` is false.
    async fn new(clusters: usize, hello: Hello, export: bool) -> Self {
        let ns = format!("mcs-conformance-{}", std::process::id() % 100_000);
        let set = ClusterSet::with_namespace(clusters, &ns).await;
        let driver = Self { set, ns };
        driver.deploy(0, hello, "");
        if export {
            driver.export(0, "");
        }
        driver
    }

    /// Deploys `hello` in cluster `i`, with `extra` appended to the Service's spec.
    fn deploy(&self, i: usize, hello: Hello, extra: &str) {
        let ns = &self.ns;
        let cluster_ip = if hello.headless { "\n  clusterIP: None" } else { "" };
        let mut yaml = format!(
            r#"apiVersion: v1
kind: Service
metadata:
  name: hello
  namespace: {ns}
  labels: {{dummy-svc: dummy}}
  annotations: {{dummy-svc: dummy}}
spec:
  selector: {{app: hello}}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 10}}}}
  ipFamilyPolicy: PreferDualStack{cluster_ip}
  ports: {ports}{extra}
"#,
            ports = hello.ports,
        );
        for r in 0..hello.replicas {
            let (name, host) = if hello.hostnames {
                (
                    format!("hello-ss-{r}"),
                    format!("\n  hostname: hello-ss-{r}\n  subdomain: hello"),
                )
            } else {
                (format!("hello-{r}"), String::new())
            };
            yaml.push_str(&format!(
                r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: hello}}}}
spec:{host}
  containers:
  - {{name: tcp, image: alpine/socat:1.7.4.4, ports: [{{containerPort: 42}}]}}
  - {{name: udp, image: alpine/socat:1.7.4.4, ports: [{{containerPort: 42, protocol: UDP}}]}}
"#
            ));
        }
        self.set.apply(i, &yaml);
    }

    /// Exports `hello` in cluster `i`, with `spec` (YAML flow, may be empty).
    fn export(&self, i: usize, spec: &str) {
        self.set.apply(
            i,
            &format!(
                "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata:\n  name: hello\n  namespace: {}\n  labels: {{dummy-svcexport: dummy}}\n  annotations: {{dummy-svcexport: dummy}}\n{}",
                self.ns,
                if spec.is_empty() { String::new() } else { format!("spec: {spec}\n") }
            ),
        );
    }

    fn unexport(&self, i: usize) {
        self.set
            .kubectl(i, &["delete", "serviceexport", "hello", "-n", &self.ns]);
    }

    async fn api<K>(&self, i: usize) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.set.members[i].client().await, &self.ns)
    }

    async fn import(&self, i: usize) -> Option<ServiceImport> {
        self.api::<ServiceImport>(i).await.get_opt("hello").await.unwrap()
    }

    async fn service(&self, i: usize) -> Service {
        self.api::<Service>(i).await.get("hello").await.unwrap()
    }

    /// Waits for cluster `i`'s import, until `ok` holds of it.
    async fn wait_import(&self, i: usize, what: &str, ok: impl Fn(&ServiceImport) -> bool) -> ServiceImport {
        eventually(what, SUITE_WAIT, || async {
            self.import(i).await.filter(|imp| ok(imp))
        })
        .await
    }

    async fn wait_no_import(&self, i: usize) {
        eventually("the import to be deleted", SUITE_WAIT, || async {
            self.import(i).await.is_none().then_some(())
        })
        .await;
    }

    /// Asserts for [`STAYS`] that cluster `i` keeps (or keeps not having) the import.
    async fn import_stays(&self, i: usize, present: bool) {
        let until = Instant::now() + STAYS;
        while Instant::now() < until {
            assert_eq!(
                self.import(i).await.is_some(),
                present,
                "cluster {i}: the import should {}",
                if present { "stay" } else { "stay absent" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The condition `type_` of cluster `i`'s export, once its status is `status`.
    async fn wait_condition(&self, i: usize, type_: &str, status: &str) -> (String, String) {
        eventually(
            &format!("{type_}={status} on cluster {i}'s export"),
            SUITE_WAIT,
            || async {
                let export = self
                    .api::<ServiceExport>(i)
                    .await
                    .get_opt("hello")
                    .await
                    .unwrap()?;
                let c = export
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == type_ && c.status == status)?;
                Some((c.reason, c.message))
            },
        )
        .await
    }

    /// MCS EndpointSlices for `hello` in cluster `i`.
    async fn mcs_slices(&self, i: usize) -> Vec<EndpointSlice> {
        self.api::<EndpointSlice>(i)
            .await
            .list(&ListParams::default().labels(&format!("{}=hello", names::LABEL_SERVICE_NAME)))
            .await
            .unwrap()
            .items
    }

    /// The ready addresses of cluster 0's own (`kubernetes.io/service-name=hello`) slices.
    async fn local_ready_addresses(&self) -> BTreeSet<String> {
        self.api::<EndpointSlice>(0)
            .await
            .list(&ListParams::default().labels("kubernetes.io/service-name=hello"))
            .await
            .unwrap()
            .items
            .into_iter()
            .flat_map(|s| s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .flat_map(|e| e.addresses)
            .collect()
    }

    fn fqdn(&self) -> String {
        format!("hello.{}.svc.clusterset.local", self.ns)
    }

    async fn stop(self) {
        self.set.stop().await;
    }
}

fn qtype(ip: &str) -> &'static str {
    if ip.contains(':') { "AAAA" } else { "A" }
}

fn family(ip: &str) -> IPFamily {
    match ip.parse::<IpAddr>().expect("an IP") {
        IpAddr::V4(_) => IPFamily::IPv4,
        IpAddr::V6(_) => IPFamily::IPv6,
    }
}

fn ports_of(import: &ServiceImport) -> Vec<(String, String, i32)> {
    let mut ports: Vec<_> = import
        .spec
        .ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default().to_lowercase(),
                format!("{:?}", p.protocol),
                p.port,
            )
        })
        .collect();
    ports.sort();
    ports
}

/// #1: a ServiceImport exists as long as at least one cluster exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c01_an_import_exists_as_long_as_one_cluster_exports() {
    let d = Driver::new(2, HELLO, true).await;
    d.wait_import(0, "cluster 0's import", |_| true).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    d.deploy(1, HELLO, "");
    d.export(1, "");
    d.wait_condition(1, "Ready", "True").await;
    d.import_stays(0, true).await;
    d.unexport(0);
    d.import_stays(0, true).await;
    d.unexport(1);
    d.wait_no_import(0).await;
    d.wait_no_import(1).await;
    d.stop().await;
}

/// #2: only the labels and annotations the export names are propagated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_only_exported_labels_and_annotations_reach_the_import() {
    let d = Driver::new(1, HELLO, false).await;
    d.export(
        0,
        "{exportedLabels: {dummy-label: 'true'}, exportedAnnotations: {dummy-annotation: 'true'}}",
    );
    let import = d
        .wait_import(0, "an import with the exported label", |i| {
            i.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("dummy-label"))
        })
        .await;
    let labels = import.metadata.labels.unwrap();
    let annotations = import.metadata.annotations.unwrap();
    assert_eq!(labels["dummy-label"], "true");
    assert_eq!(annotations["dummy-annotation"], "true");
    for key in ["dummy-svc", "dummy-svcexport"] {
        assert!(!labels.contains_key(key), "{key} is not exported: {labels:?}");
        assert!(
            !annotations.contains_key(key),
            "{key} is not exported: {annotations:?}"
        );
    }
    d.stop().await;
}

/// #3: conflicting exported labels and annotations: the oldest export's win, Conflict on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c03_conflicting_exported_labels_resolve_to_the_oldest_and_conflict_on_both() {
    let d = Driver::new(2, HELLO, false).await;
    d.export(
        0,
        "{exportedLabels: {dummy-label: 'true'}, exportedAnnotations: {dummy-annotation: 'true'}}",
    );
    d.wait_import(0, "cluster 0's import", |_| true).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    d.deploy(1, HELLO, "");
    d.export(
        1,
        "{exportedLabels: {dummy-label2: 'true'}, exportedAnnotations: {dummy-annotation2: 'true'}}",
    );
    for i in 0..2 {
        d.wait_condition(i, "Conflict", "True").await;
    }
    for i in 0..2 {
        let import = d.wait_import(i, "the import", |_| true).await;
        let labels = import.metadata.labels.unwrap_or_default();
        let annotations = import.metadata.annotations.unwrap_or_default();
        assert_eq!(labels.get("dummy-label").map(String::as_str), Some("true"));
        assert_eq!(
            annotations.get("dummy-annotation").map(String::as_str),
            Some("true")
        );
        assert!(!labels.contains_key("dummy-label2"), "{labels:?}");
        assert!(!annotations.contains_key("dummy-annotation2"), "{annotations:?}");
    }
    d.stop().await;
}

/// #4–#9: a ClusterSetIP import in every cluster, with the exported Service's properties, one
/// clusterset IP per family, and gone everywhere on unexport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c04_to_c09_a_cluster_ip_export_imports_everywhere_with_its_properties() {
    let d = Driver::new(3, HELLO, false).await;
    // #6 and #7 need these set on the Service.
    d.deploy(
        0,
        HELLO,
        "\n  internalTrafficPolicy: Cluster\n  trafficDistribution: PreferClose",
    );
    d.export(0, "");
    let (reason, _) = d.wait_condition(0, "Valid", "True").await;
    assert_eq!(reason, names::conditions::valid::VALID);
    let service = d.service(0).await.spec.unwrap();
    for i in 0..3 {
        let import = d
            .wait_import(i, "a ClusterSetIP import with its IPs", |imp| {
                !imp.spec.ips.is_empty()
            })
            .await;
        assert_eq!(import.spec.type_, ServiceImportType::ClusterSetIP);
        // #5 session affinity.
        assert_eq!(format!("{:?}", import.spec.session_affinity), "Some(ClientIP)");
        assert_eq!(
            import
                .spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds),
            Some(10)
        );
        // #6 internalTrafficPolicy, #7 trafficDistribution: what the API server returned.
        assert_eq!(
            import.spec.internal_traffic_policy.map(|p| format!("{p:?}")),
            service.internal_traffic_policy.clone(),
        );
        assert_eq!(import.spec.traffic_distribution, service.traffic_distribution);
        // #8 one IP per family, in the families' order.
        assert_eq!(import.spec.ips.len(), import.spec.ip_families.len());
        assert_eq!(
            import.spec.ips.len(),
            2,
            "PreferDualStack in a dual-stack cluster"
        );
        for (ip, fam) in import.spec.ips.iter().zip(&import.spec.ip_families) {
            assert_eq!(&family(ip), fam, "{ip}");
        }
        // #9 ports equal to the Service's.
        let mut want: Vec<_> = service
            .ports
            .clone()
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.name.unwrap_or_default().to_lowercase(),
                    p.protocol.unwrap_or_else(|| "TCP".into()),
                    p.port,
                )
            })
            .collect();
        want.sort();
        assert_eq!(ports_of(&import), want);
    }
    d.unexport(0);
    for i in 0..3 {
        d.wait_no_import(i).await;
    }
    d.stop().await;
}

/// #11: a port name clash: the oldest export's definition wins, Conflict on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c11_conflicting_ports_resolve_to_the_oldest_and_conflict_on_both() {
    let d = Driver::new(2, HELLO, true).await;
    d.wait_import(0, "cluster 0's import", |_| true).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    d.deploy(
        1,
        Hello {
            ports: "[{name: tcp, port: 43, protocol: TCP}]",
            ..HELLO
        },
        "",
    );
    d.export(1, "");
    for i in 0..2 {
        let (reason, _) = d.wait_condition(i, "Conflict", "True").await;
        assert_eq!(reason, names::conditions::conflict::PORT);
    }
    for i in 0..2 {
        let import = d.wait_import(i, "the import", |_| true).await;
        assert_eq!(
            ports_of(&import),
            [
                ("tcp".to_string(), "TCP".to_string(), 42),
                ("udp".to_string(), "UDP".to_string(), 42)
            ]
        );
    }
    d.stop().await;
}

/// #12, #13: a headless export imports as Headless everywhere, never gets an IP, and goes on
/// unexport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c12_c13_a_headless_export_imports_as_headless_without_ips() {
    let headless = Hello {
        headless: true,
        ..HELLO
    };
    let d = Driver::new(3, headless, true).await;
    for i in 0..3 {
        let import = d.wait_import(i, "a Headless import", |_| true).await;
        assert_eq!(import.spec.type_, ServiceImportType::Headless);
    }
    let until = Instant::now() + STAYS;
    while Instant::now() < until {
        for i in 0..3 {
            let import = d.import(i).await.expect("the import stays");
            assert!(import.spec.ips.is_empty(), "{:?}", import.spec.ips);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.unexport(0);
    for i in 0..3 {
        d.wait_no_import(i).await;
    }
    d.stop().await;
}

/// #15: conflicting headlessness: the oldest export's type, Conflict on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c15_conflicting_headlessness_resolves_to_the_oldest_and_conflicts_on_both() {
    let d = Driver::new(2, HELLO, true).await;
    d.wait_import(0, "cluster 0's import", |_| true).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    d.deploy(
        1,
        Hello {
            headless: true,
            ..HELLO
        },
        "",
    );
    d.export(1, "");
    for i in 0..2 {
        let (reason, _) = d.wait_condition(i, "Conflict", "True").await;
        assert_eq!(reason, names::conditions::conflict::TYPE);
    }
    for i in 0..2 {
        let import = d.import(i).await.unwrap();
        assert_eq!(import.spec.type_, ServiceImportType::ClusterSetIP);
    }
    d.stop().await;
}

/// #16: an MCS EndpointSlice per family in every cluster, with the required labels and at least
/// one endpoint; deleted on unexport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c16_mcs_endpoint_slices_per_family_with_the_required_labels() {
    let d = Driver::new(3, HELLO, true).await;
    for i in 0..3 {
        let import = d
            .wait_import(i, "the import with its families", |imp| {
                !imp.spec.ip_families.is_empty()
            })
            .await;
        for fam in &import.spec.ip_families {
            let want = format!("{fam:?}");
            let slice = eventually(
                &format!("a {want} MCS slice with an endpoint in cluster {i}"),
                SUITE_WAIT,
                || async {
                    d.mcs_slices(i)
                        .await
                        .into_iter()
                        .find(|s| s.address_type == want && !s.endpoints.is_empty())
                },
            )
            .await;
            let labels = slice.metadata.labels.unwrap();
            assert_eq!(labels[names::LABEL_SERVICE_NAME], "hello");
            assert_eq!(labels[names::LABEL_SOURCE_CLUSTER], "cluster-a");
            let managed_by = &labels[names::LABEL_MANAGED_BY];
            assert_ne!(managed_by, "endpointslice-controller.k8s.io");
            for address in slice.endpoints.iter().flat_map(|e| &e.addresses) {
                assert_eq!(format!("{:?}", family(address)), want, "{address}");
            }
        }
    }
    d.unexport(0);
    for i in 0..3 {
        eventually("every MCS slice to be deleted", SUITE_WAIT, || async {
            d.mcs_slices(i).await.is_empty().then_some(())
        })
        .await;
    }
    d.stop().await;
}

/// #17, #18, #19: DNS for a ClusterSetIP import in every cluster: A and AAAA give the clusterset
/// IPs, the bare-name SRV gives exactly one record, and `cluster.local` is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c17_c18_c19_dns_for_a_cluster_set_ip_import() {
    let d = Driver::new(3, HELLO, true).await;
    let fqdn = d.fqdn();
    for i in 0..3 {
        let import = d
            .wait_import(i, "the import with both IPs", |imp| imp.spec.ips.len() == 2)
            .await;
        let dns = d.set.members[i].dns;
        for ip in &import.spec.ips {
            eventually(
                &format!("{fqdn} {} in cluster {i}", qtype(ip)),
                SUITE_WAIT,
                || async { (dig(&dns, &fqdn, qtype(ip)) == Answer::ok(&[ip])).then_some(()) },
            )
            .await;
        }
        // #18: one SRV record for the bare name: port 42 (TCP and UDP share it), the name itself.
        // Weight: floor(100 / candidates), 2 IPs × 2 ports before de-duplication (checklist §5.2).
        let srv = dig(&dns, &fqdn, "SRV");
        assert_eq!(srv, Answer::ok(&[&format!("0 25 42 {fqdn}.")]), "cluster {i}");
    }
    // #19: cluster.local is not ours: mcsd refuses it, and the local Service keeps its own IP.
    let local = format!("hello.{}.svc.cluster.local", d.ns);
    assert_eq!(dig(&d.set.members[0].dns, &local, "A").status, "REFUSED");
    let service = d.service(0).await.spec.unwrap();
    let import = d.import(0).await.unwrap();
    assert!(service.cluster_ip.is_some());
    assert!(!import.spec.ips.contains(service.cluster_ip.as_ref().unwrap()));
    d.stop().await;
}

/// #20, #22: DNS for a headless import: the A/AAAA set equals the ready addresses of the
/// exporting cluster's pods, and the bare-name SRV has one record per ready address, each
/// target led by the endpoint's (dashed-IP) hostname.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c20_c22_dns_for_a_headless_import_answers_every_ready_endpoint() {
    let headless = Hello {
        headless: true,
        replicas: 2,
        ..HELLO
    };
    let d = Driver::new(3, headless, true).await;
    let fqdn = d.fqdn();
    let ready = eventually(
        "cluster 0's two pods ready in both families",
        SUITE_WAIT,
        || async {
            let a = d.local_ready_addresses().await;
            (a.len() == 4).then_some(a)
        },
    )
    .await;
    for i in 0..3 {
        let dns = d.set.members[i].dns;
        for qt in ["A", "AAAA"] {
            let want: Vec<&str> = ready
                .iter()
                .filter(|ip| qtype(ip) == qt)
                .map(String::as_str)
                .collect();
            assert_eq!(want.len(), 2);
            eventually(
                &format!("{qt} of every ready endpoint in cluster {i}"),
                SUITE_WAIT,
                || async { (dig(&dns, &fqdn, qt) == Answer::ok(&want)).then_some(()) },
            )
            .await;
        }
        let srv = dig(&dns, &fqdn, "SRV");
        assert_eq!(srv.records.len(), ready.len(), "{srv:?}");
        // Weight: floor(100 / candidates), 4 addresses × 2 ports (checklist §5.2).
        for ip in &ready {
            let dashed = ip.replace(['.', ':'], "-");
            let target = format!("{dashed}.cluster-a.{fqdn}.");
            assert!(
                srv.records.contains(&format!("0 12 42 {target}")),
                "no SRV record for {target} in {srv:?}"
            );
        }
    }
    d.stop().await;
}

/// #21: a StatefulSet's pods: every MCS slice endpoint has its hostname, and
/// `<hostname>.<cluster>.hello.<ns>.svc.clusterset.local` answers exactly its addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c21_dns_for_each_stateful_pod_by_hostname_and_cluster() {
    let stateful = Hello {
        headless: true,
        replicas: 2,
        hostnames: true,
        ..HELLO
    };
    let d = Driver::new(3, stateful, true).await;
    for i in 0..3 {
        let dns = d.set.members[i].dns;
        for fam in ["IPv4", "IPv6"] {
            // A pod has its address before it is ready (as a kubelet reports it: the sandbox
            // first, then the containers), and the slices say so: wait until both are ready.
            let slice = eventually(
                &format!("an {fam} MCS slice of 2 ready endpoints in cluster {i}"),
                SUITE_WAIT,
                || async {
                    d.mcs_slices(i).await.into_iter().find(|s| {
                        s.address_type == fam
                            && s.endpoints.len() == 2
                            && s.endpoints
                                .iter()
                                .all(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                    })
                },
            )
            .await;
            let cluster = &slice.metadata.labels.as_ref().unwrap()[names::LABEL_SOURCE_CLUSTER];
            for endpoint in &slice.endpoints {
                let hostname = endpoint
                    .hostname
                    .as_ref()
                    .expect("a StatefulSet pod has a hostname");
                let name = format!("{hostname}.{cluster}.{}", d.fqdn());
                let want: Vec<&str> = endpoint.addresses.iter().map(String::as_str).collect();
                let qt = if fam == "IPv4" { "A" } else { "AAAA" };
                eventually(&format!("{name} {qt} in cluster {i}"), SUITE_WAIT, || async {
                    (dig(&dns, &name, qt) == Answer::ok(&want)).then_some(())
                })
                .await;
            }
        }
    }
    // The pods are what the Service selects: the hostnames are the pods' own.
    let pods = d.api::<Pod>(0).await.list(&ListParams::default()).await.unwrap();
    assert_eq!(pods.items.len(), 2);
    d.stop().await;
}

//! The real `kubectl` against the sandbox. `cargo test` installs `kubectl` when it may (see
//! `tests/tools`); these tests fail, rather than skip, when it is missing.

mod common;

use std::path::PathBuf;

use common::*;

struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(cluster: &mcsd_sandbox::Cluster, test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mcsd-sandbox-kubectl-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).unwrap();
        Self { kubeconfig }
    }

    /// Runs kubectl; returns stdout, panicking with stderr when it fails.
    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (code, out, err) = self.run(args, stdin).await;
        assert!(code, "kubectl {} failed: {err}", args.join(" "));
        out
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        use tokio::io::AsyncWriteExt;
        let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| {
            mcsd_test_tools::require(&["kubectl"]);
            "kubectl".into()
        });
        let mut child = tokio::process::Command::new(&kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("kubectl ({kubectl}) is required for these tests and could not be run: {e}")
            });
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).await.unwrap();
        }
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn crds_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crds")
        .display()
        .to_string()
}

const DEMO: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: Service
metadata:
  name: serve
  namespace: demo
spec:
  selector:
    app: serve
  ports:
  - name: http
    port: 80
    targetPort: web
---
apiVersion: v1
kind: Pod
metadata:
  name: serve-0
  namespace: demo
  labels:
    app: serve
spec:
  containers:
  - name: c
    image: nginx
    ports:
    - name: web
      containerPort: 8080
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata:
  name: serve
  namespace: demo
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_project_crds_and_waits_for_them_to_be_established() {
    let cluster = cluster_with(|c| c.install_crds = false).await;
    let k = Kubectl::new(&cluster, "crds");
    let out = k.ok(&["apply", "-f", &crds_dir()], None).await;
    assert!(
        out.contains("serviceexports.multicluster.x-k8s.io created"),
        "{out}"
    );
    k.ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=10s",
            "crd/serviceexports.multicluster.x-k8s.io",
            "crd/serviceimports.multicluster.x-k8s.io",
            "crd/clusterproperties.about.k8s.io",
        ],
        None,
    )
    .await;
    let again = k.ok(&["apply", "-f", &crds_dir()], None).await;
    assert!(again.contains("unchanged"), "{again}");
    let names = k.ok(&["get", "crd", "-o", "name"], None).await;
    assert_eq!(names.lines().count(), 3, "{names}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_gets_waits_for_and_deletes_a_service_export_service_and_pod() {
    let cluster = cluster().await;
    let k = Kubectl::new(&cluster, "demo");
    let out = k.ok(&["apply", "-f", "-"], Some(DEMO)).await;
    for line in [
        "namespace/demo created",
        "service/serve created",
        "pod/serve-0 created",
        "serviceexport.multicluster.x-k8s.io/serve created",
    ] {
        assert!(out.contains(line), "{out}");
    }
    let again = k.ok(&["apply", "-f", "-"], Some(DEMO)).await;
    assert_eq!(again.matches("unchanged").count(), 4, "{again}");
    k.ok(
        &[
            "wait",
            "--for=condition=Ready",
            "--timeout=10s",
            "-n",
            "demo",
            "pod/serve-0",
        ],
        None,
    )
    .await;
    let yaml = k
        .ok(
            &["get", "-n", "demo", "serviceexport", "serve", "-o", "yaml"],
            None,
        )
        .await;
    assert!(
        yaml.contains("kind: ServiceExport") && yaml.contains("spec: {}"),
        "{yaml}"
    );
    let svc = k
        .ok(
            &[
                "get",
                "-n",
                "demo",
                "svc",
                "serve",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            None,
        )
        .await;
    assert!(svc.starts_with("10.96."), "{svc}");
    let slices = k
        .ok(
            &[
                "get",
                "-n",
                "demo",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=serve",
                "-o",
                "jsonpath={.items[*].endpoints[*].targetRef.name}",
            ],
            None,
        )
        .await;
    assert_eq!(slices, "serve-0");
    let table = k.ok(&["get", "-n", "demo", "svcex"], None).await;
    assert!(
        table.starts_with("NAME") && table.contains("VALID") && table.contains("serve"),
        "{table}"
    );
    // Server-side apply, then a second manager's conflicting apply is refused.
    let ssa =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: demo\ndata:\n  owner: first\n";
    let out = k
        .ok(
            &["apply", "--server-side", "--field-manager=first", "-f", "-"],
            Some(ssa),
        )
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    let other = ssa.replace("owner: first", "owner: second");
    let (ok, _, err) = k
        .run(
            &["apply", "--server-side", "--field-manager=second", "-f", "-"],
            Some(&other),
        )
        .await;
    assert!(!ok && err.contains("conflict"), "{err}");
    k.ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=second",
            "-f",
            "-",
        ],
        Some(&other),
    )
    .await;
    let owner = k
        .ok(
            &["get", "-n", "demo", "cm", "cfg", "-o", "jsonpath={.data.owner}"],
            None,
        )
        .await;
    assert_eq!(owner, "second");
    k.ok(&["delete", "-n", "demo", "serviceexport", "serve"], None)
        .await;
    let (ok, _, err) = k
        .run(&["get", "-n", "demo", "serviceexport", "serve"], None)
        .await;
    assert!(!ok && err.contains("NotFound"), "{err}");
    k.ok(&["delete", "namespace", "demo", "--timeout=20s"], None)
        .await;
    let (ok, _, _) = k.run(&["get", "namespace", "demo"], None).await;
    assert!(!ok, "the namespace is gone once kubectl delete returns");
}

/// The lines of `kubectl get configmaps -n many ARGS`.
async fn get_many(k: &Kubectl, args: &[&str]) -> Vec<String> {
    let all = [&["get", "configmaps", "-n", "many"], args].concat();
    k.ok(&all, None).await.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_a_long_list_in_chunks_as_names_and_as_tables() {
    let cluster = cluster().await;
    namespace(&cluster.admin_client().await.unwrap(), "many").await;
    let names = config_maps(&cluster, "many", 1200);
    let k = Kubectl::new(&cluster, "chunks");
    let all: Vec<String> = names.iter().map(|n| format!("configmap/{n}")).collect();
    for chunk in ["--chunk-size=100", "--chunk-size=0", "--chunk-size=500"] {
        assert_eq!(get_many(&k, &["-o", "name", chunk]).await, all, "{chunk}");
    }
    let even = get_many(&k, &["-o", "name", "-l", "parity=even", "--chunk-size=100"]).await;
    assert_eq!(even, all.iter().step_by(2).cloned().collect::<Vec<_>>());
    // `kubectl get` asks for Tables, here 100 rows at a time: one header, then every row.
    let table = get_many(&k, &["--chunk-size=100"]).await;
    assert!(table[0].starts_with("NAME"), "{table:?}");
    let rows: Vec<&str> = table[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(rows, names);
    let everywhere = k
        .ok(
            &["get", "configmaps", "-A", "--chunk-size=100", "--no-headers"],
            None,
        )
        .await;
    assert_eq!(
        everywhere.lines().filter(|l| l.starts_with("many ")).count(),
        1200
    );
}

/// kubectl's typed generators send protobuf bodies; the sandbox takes them as kube-apiserver does
/// and the objects come out as `kubectl apply` would have made them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_typed_generators_send_protobuf_and_create_what_they_say() {
    let cluster = cluster().await;
    let k = Kubectl::new(&cluster, "generators");
    for args in [
        &["create", "namespace", "demo"][..],
        &[
            "-n",
            "demo",
            "create",
            "configmap",
            "cfg",
            "--from-literal=mode=fast",
        ],
        &[
            "-n",
            "demo",
            "create",
            "secret",
            "generic",
            "pw",
            "--from-literal=password=hunter2",
        ],
        &[
            "-n",
            "demo",
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
        ],
        &["-n", "demo", "create", "serviceaccount", "bot"],
        &[
            "-n",
            "demo",
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=pods",
        ],
        &[
            "-n",
            "demo",
            "create",
            "rolebinding",
            "bot-reads",
            "--role=reader",
            "--serviceaccount=demo:bot",
        ],
        &[
            "-n",
            "demo",
            "run",
            "hello",
            "--image=nginx",
            "--port=8080",
            "--labels=app=hello",
        ],
        &[
            "-n",
            "demo",
            "expose",
            "pod",
            "hello",
            "--port=80",
            "--target-port=8080",
            "--name=hello",
        ],
    ] {
        k.ok(args, None).await;
    }
    let get = |what: &'static str, path: &'static str| {
        let k = &k;
        async move {
            k.ok(
                &["-n", "demo", "get", what, "-o", &format!("jsonpath={path}")],
                None,
            )
            .await
        }
    };
    assert_eq!(get("configmap/cfg", "{.data.mode}").await, "fast");
    assert_eq!(get("secret/pw", "{.data.password}").await, "aHVudGVyMg==");
    assert_eq!(
        get("service/web", "{.spec.ports[0].port}/{.spec.ports[0].targetPort}").await,
        "80/8080"
    );
    assert_eq!(get("rolebinding/bot-reads", "{.subjects[0].name}").await, "bot");
    assert_eq!(get("role/reader", "{.rules[0].verbs}").await, r#"["get","list"]"#);
    assert_eq!(
        get("pod/hello", "{.spec.containers[0].ports[0].containerPort}").await,
        "8080"
    );
    // `expose` read the pod's labels for its selector, and the Service selects the pod.
    assert_eq!(get("service/hello", "{.spec.selector.app}").await, "hello");
    // A Time the generator left unset stays unset (Go's zero time is null, not year 1).
    assert!(
        !get("pod/hello", "{.metadata.creationTimestamp}")
            .await
            .starts_with("0001")
    );
    // A TokenRequest in protobuf: a token that authenticates as the ServiceAccount.
    let token = k
        .ok(&["-n", "demo", "create", "token", "bot", "--duration=15m"], None)
        .await;
    // The token is the ServiceAccount's, with the Role the generators bound to it.
    let pods = k
        .ok(
            &["-n", "demo", "get", "pods", "--token", token.trim(), "-o", "name"],
            None,
        )
        .await;
    assert_eq!(pods.trim(), "pod/hello");
    let (allowed, _, denied) = k
        .run(&["-n", "demo", "get", "secrets", "--token", token.trim()], None)
        .await;
    assert!(
        !allowed && denied.contains("system:serviceaccount:demo:bot"),
        "{denied}"
    );
}

/// Deployments, ReplicaSets, StatefulSets and Jobs behave as kubectl expects of a cluster:
/// rollout status, scale, a template change rolling the pods, events, `get all`, cascading delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_deployments_stateful_sets_and_jobs_as_a_cluster_does() {
    let cluster = cluster().await;
    let k = Kubectl::new(&cluster, "workloads");
    k.ok(&["create", "namespace", "apps"], None).await;
    in_apps(
        &k,
        &["create", "deployment", "web", "--image=nginx", "--replicas=2"],
    )
    .await;
    in_apps(&k, &["rollout", "status", "deployment/web", "--timeout=10s"]).await;
    assert_eq!(app_pods(&k, "app=web").await.len(), 2);
    in_apps(&k, &["scale", "deployment/web", "--replicas=3"]).await;
    in_apps(&k, &["rollout", "status", "deployment/web", "--timeout=10s"]).await;
    assert_eq!(app_pods(&k, "app=web").await.len(), 3);
    let ready = in_apps(
        &k,
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}",
        ],
    )
    .await;
    assert_eq!(ready, "3/3");
    // A template change: a new ReplicaSet takes over, the old one is scaled to zero.
    let first = app_pods(&k, "app=web").await;
    in_apps(&k, &["set", "image", "deployment/web", "nginx=nginx:1.27"]).await;
    in_apps(&k, &["rollout", "status", "deployment/web", "--timeout=10s"]).await;
    let second = app_pods(&k, "app=web").await;
    assert_eq!(second.len(), 3);
    assert!(second.iter().all(|p| !first.contains(p)), "{first:?} {second:?}");
    let sets = in_apps(
        &k,
        &[
            "get",
            "rs",
            "-o",
            "jsonpath={range .items[*]}{.spec.replicas} {end}",
        ],
    )
    .await;
    let mut sets: Vec<&str> = sets.split_whitespace().collect();
    sets.sort();
    assert_eq!(sets, ["0", "3"]);
    let image = in_apps(
        &k,
        &[
            "get",
            "pod",
            &second[0],
            "-o",
            "jsonpath={.spec.containers[0].image}",
        ],
    )
    .await;
    assert_eq!(image, "nginx:1.27");
    // What happened is in the events, and `describe` shows them.
    let events = in_apps(
        &k,
        &[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.reason}:{.involvedObject.kind};{end}",
        ],
    )
    .await;
    for want in [
        "ScalingReplicaSet:Deployment",
        "SuccessfulCreate:ReplicaSet",
        "SuccessfulDelete:ReplicaSet",
        "Scheduled:Pod",
    ] {
        assert!(events.contains(want), "{want} in {events}");
    }
    let describe = in_apps(&k, &["describe", "deployment", "web"]).await;
    assert!(describe.contains("Scaled up replica set"), "{describe}");

    // A StatefulSet: ordinal names, hostname and subdomain for per-pod DNS names.
    k.ok(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: apps}\nspec:\n  serviceName: db\n  replicas: 2\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: postgres}]}\n",
        ),
    )
    .await;
    in_apps(&k, &["rollout", "status", "statefulset/db", "--timeout=10s"]).await;
    let mut db = app_pods(&k, "app=db").await;
    db.sort();
    assert_eq!(db, ["db-0", "db-1"]);
    assert_eq!(
        in_apps(
            &k,
            &[
                "get",
                "pod",
                "db-1",
                "-o",
                "jsonpath={.spec.hostname}.{.spec.subdomain}"
            ]
        )
        .await,
        "db-1.db"
    );
    in_apps(&k, &["scale", "statefulset/db", "--replicas=1"]).await;
    assert_eq!(app_pods(&k, "app=db").await, ["db-0"]);

    // A Job: its pod runs (at once, in the sandbox) and the Job completes.
    in_apps(&k, &["create", "job", "once", "--image=busybox"]).await;
    in_apps(
        &k,
        &["wait", "--for=condition=complete", "job/once", "--timeout=10s"],
    )
    .await;

    // Listed with `get all` and in discovery.
    let all = in_apps(&k, &["get", "all", "-o", "name"]).await;
    for want in [
        "deployment.apps/web",
        "statefulset.apps/db",
        "job.batch/once",
        "replicaset.apps/web-",
    ] {
        assert!(all.contains(want), "{want} in {all}");
    }
    let resources = k
        .ok(&["api-resources", "--api-group=apps", "-o", "name"], None)
        .await;
    assert!(
        resources.contains("deployments.apps") && resources.contains("statefulsets.apps"),
        "{resources}"
    );

    // A selector that does not select the template is refused, as kube-apiserver refuses it.
    let (ok, _, err) = k
        .run(
            &["apply", "-f", "-"],
            Some("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad, namespace: apps}\nspec:\n  selector: {matchLabels: {app: one}}\n  template:\n    metadata: {labels: {app: two}}\n    spec: {containers: [{name: c, image: nginx}]}\n"),
        )
        .await;
    assert!(
        !ok && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    in_apps(&k, &["delete", "deployment", "web"]).await;
    eventually("the Deployment's pods to go", || async {
        let left = in_apps(&k, &["get", "rs,pods", "-l", "app=web", "-o", "name"]).await;
        left.trim().is_empty().then_some(())
    })
    .await;
}

/// `kubectl auth can-i` (SelfSubjectAccessReview) and `--as` (impersonation) answer through the
/// sandbox's RBAC, and `kubectl auth whoami` says who the caller is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_and_as_follow_rbac() {
    let cluster = cluster().await;
    let k = Kubectl::new(&cluster, "auth");
    for args in [
        &["create", "namespace", "team"][..],
        &["-n", "team", "create", "serviceaccount", "bot"],
        &[
            "-n",
            "team",
            "create",
            "role",
            "reader",
            "--verb=get,list,watch",
            "--resource=configmaps",
        ],
        &[
            "-n",
            "team",
            "create",
            "rolebinding",
            "bot-reads",
            "--role=reader",
            "--serviceaccount=team:bot",
        ],
    ] {
        k.ok(args, None).await;
    }
    let bot = "--as=system:serviceaccount:team:bot";
    let can = |args: &'static [&'static str]| {
        let k = &k;
        async move {
            k.run(&[&["auth", "can-i"], args, &[bot]].concat(), None)
                .await
                .1
                .trim()
                .to_string()
        }
    };
    assert_eq!(can(&["list", "configmaps", "-n", "team"]).await, "yes");
    assert_eq!(can(&["get", "configmaps/settings", "-n", "team"]).await, "yes");
    assert_eq!(can(&["delete", "configmaps", "-n", "team"]).await, "no");
    assert_eq!(can(&["list", "configmaps", "-n", "default"]).await, "no");
    assert_eq!(can(&["get", "/healthz"]).await, "yes");
    // Acting as the ServiceAccount: its own rights, not the admin's.
    let (ok, _, err) = k.run(&["-n", "team", "get", "secrets", bot], None).await;
    assert!(
        !ok && err.contains("User \"system:serviceaccount:team:bot\" cannot list resource \"secrets\""),
        "{err}"
    );
    let who = k
        .ok(
            &[
                "auth",
                "whoami",
                bot,
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        )
        .await;
    assert_eq!(who, "system:serviceaccount:team:bot");
    // The ServiceAccount may not impersonate anyone.
    let token = k.ok(&["-n", "team", "create", "token", "bot"], None).await;
    let (ok, _, err) = k
        .run(
            &[
                "-n",
                "team",
                "get",
                "configmaps",
                "--token",
                token.trim(),
                "--as=someone",
            ],
            None,
        )
        .await;
    assert!(
        !ok && err.contains("cannot impersonate resource \"users\""),
        "{err}"
    );
}

/// kubectl in namespace `apps`.
async fn in_apps(k: &Kubectl, args: &[&str]) -> String {
    k.ok(&[&["-n", "apps"], args].concat(), None).await
}

/// The names of the pods `selector` selects in namespace `apps`.
async fn app_pods(k: &Kubectl, selector: &str) -> Vec<String> {
    in_apps(
        k,
        &[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    )
    .await
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

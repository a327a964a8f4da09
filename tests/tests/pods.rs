//! What a pod sees: clusterset names resolved by the pod's own resolver (glibc and `nslookup`,
//! through the cluster DNS and its search path), and packets that cross clusters, carried by the
//! real kube-proxy of each node to the exporting pods of other clusters, only on the ports each
//! exports. `kubectl exec` into the pod named, with and without a terminal and stdin.
//!
//! Real Kubernetes with the pod network only (`tests/kube/up.sh`, which gives kwok's pods a
//! network namespace, their commands and exec): the sandbox's pods run nothing, so `cargo test`
//! lists these as ignored, with that reason. `tests/kube/test.sh` runs them in both of
//! kube-proxy's modes.

use std::{collections::BTreeSet, process::Output, time::Duration};

use mcsd_tests::{ClusterSet, WAIT, eventually};

/// The real ClusterSet (with its pod network) and namespace `ns` in every cluster.
async fn real_with_pods(ns: &str) -> ClusterSet {
    assert!(
        mcsd_tests::real_clusterset().is_some(),
        "this test needs real clusters with a pod network: run tests/kube/test.sh (or point {} at tests/kube/up.sh's directory)",
        mcsd_tests::CLUSTERSET_ENV
    );
    let set = ClusterSet::with_namespace(3, ns).await;
    for member in &set.members {
        assert!(
            member.pod_network,
            "{} has no pod network: start the tier without --no-pod-network",
            member.name
        );
    }
    set
}

/// A Deployment `name` of `replicas` pods, each answering HTTP on every port of `ports` with
/// `<pod> <cluster> <port>`, Ready while `/tmp/ready` exists in it (a readiness probe every
/// second), and its Service (dual-stack) on `ports`.
fn hello(ns: &str, name: &str, cluster: &str, replicas: u32, ports: &[u16]) -> String {
    let service_ports: Vec<String> = ports
        .iter()
        .map(|p| format!("{{name: p{p}, port: {p}, protocol: TCP}}"))
        .collect();
    let ports_words: Vec<String> = ports.iter().map(ToString::to_string).collect();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: server
        image: alpine/socat
        command: [/bin/sh, -c]
        args:
        - |
          cat > /tmp/respond <<'EOF'
          read -r request
          printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n%s %s %s\n' "$POD_NAME" "$CLUSTER" "$1"
          EOF
          touch /tmp/ready
          echo "serving on $PORTS as $POD_NAME ($POD_IPS)"
          for port in $PORTS; do
            socat TCP6-LISTEN:$port,ipv6only=0,fork,reuseaddr SYSTEM:"sh /tmp/respond $port" &
          done
          wait
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: POD_IPS, valueFrom: {{fieldRef: {{fieldPath: status.podIPs}}}}}}
        - {{name: CLUSTER, value: {cluster}}}
        - {{name: PORTS, value: "{words}"}}
        readinessProbe:
          exec: {{command: [cat, /tmp/ready]}}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ipFamilyPolicy: PreferDualStack
  ports: [{ports}]
"#,
        words = ports_words.join(" "),
        ports = service_ports.join(", "),
    )
}

fn export(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {{name: {name}, namespace: {ns}}}\n"
    )
}

/// A pod that runs a shell loop, as the conformance suite's `request` pod does (an image's
/// entrypoint given as `args`).
fn client(ns: &str, name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}
spec:
  containers:
  - name: client
    image: nicolaka/netshoot
    args: [/bin/sh, -ec, "echo started $HOSTNAME; while :; do sleep 5; done"]
"#
    )
}

/// `kubectl exec` of `sh -c script` in pod `pod` of cluster `i`.
fn exec(set: &ClusterSet, i: usize, ns: &str, pod: &str, script: &str) -> Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&set.members[i].kubeconfig)
        .args(["exec", "-n", ns, pod, "--", "sh", "-c", script])
        .output()
        .expect("kubectl runs")
}

/// What `script` prints in pod `pod` of cluster `i`; fails the test if it fails.
fn exec_ok(set: &ClusterSet, i: usize, ns: &str, pod: &str, script: &str) -> String {
    let out = exec(set, i, ns, pod, script);
    assert!(
        out.status.success(),
        "kubectl exec {pod} -- sh -c {script:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tries` requests from `pod` of cluster `i` to `url` (curl, with `flags`): every answer's
/// first words (`<pod> <cluster> <port>`), and how many requests got none.
fn ask(
    set: &ClusterSet,
    i: usize,
    ns: &str,
    pod: &str,
    flags: &str,
    url: &str,
    tries: u32,
) -> (BTreeSet<String>, u32) {
    let script = format!(
        "for i in $(seq {tries}); do curl -s {flags} --connect-timeout 1 --max-time 2 {url} || echo FAILED; done"
    );
    let out = exec_ok(set, i, ns, pod, &script);
    let failed = out.lines().filter(|l| l.trim() == "FAILED").count() as u32;
    let answers = out
        .lines()
        .filter(|l| l.trim() != "FAILED" && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    (answers, failed)
}

/// Waits until 30 requests in a row all get an answer, from exactly `expected`; fails with what
/// the last round saw.
async fn reaches_exactly(
    set: &ClusterSet,
    i: usize,
    ns: &str,
    pod: &str,
    flags: &str,
    url: &str,
    expected: &BTreeSet<String>,
) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (seen, failed) = ask(set, i, ns, pod, flags, url, 30);
        if seen == *expected && failed == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} ({flags}) from {pod} in {}: expected answers from exactly {expected:?}, the last 30 requests got {seen:?} and {failed} failed",
            set.members[i].name
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The names of the Ready pods of `app` in cluster `i`.
fn ready_pods(set: &ClusterSet, i: usize, ns: &str, app: &str) -> Vec<String> {
    let text = set.kubectl(
        i,
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ],
    );
    text.lines()
        .filter_map(|l| l.strip_suffix(" True"))
        .map(str::to_string)
        .collect()
}

/// Waits for `replicas` Ready pods of `app` in cluster `i`; their names.
async fn wait_ready(set: &ClusterSet, i: usize, ns: &str, app: &str, replicas: usize) -> Vec<String> {
    eventually(
        &format!("{replicas} Ready pods of {app} in {}", set.members[i].name),
        WAIT,
        || {
            let ready = ready_pods(set, i, ns, app);
            async move { (ready.len() == replicas).then_some(ready) }
        },
    )
    .await
}

/// The first address `getent DATABASE name` gives in pod `pod` of cluster `i` (`ahostsv4`,
/// `ahostsv6`: through the pod's resolver, as any glibc program resolves).
fn getent(set: &ClusterSet, i: usize, ns: &str, pod: &str, database: &str, name: &str) -> String {
    let out = exec_ok(set, i, ns, pod, &format!("getent {database} {name} | head -1"));
    out.split_whitespace().next().unwrap_or_default().to_string()
}

fn answers(pods: &[String], cluster: &str, port: u16) -> BTreeSet<String> {
    pods.iter().map(|p| format!("{p} {cluster} {port}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes with the pod network only: tests/kube/test.sh runs it"]
async fn a_pod_reaches_the_exporting_pods_of_other_clusters_only_on_the_ports_each_exports() {
    let ns = "pods-reach";
    let set = real_with_pods(ns).await;
    set.apply(0, &hello(ns, "hello", "cluster-a", 2, &[8080, 9090]));
    set.apply(0, &export(ns, "hello"));
    set.apply(1, &hello(ns, "hello", "cluster-b", 1, &[8080]));
    set.apply(1, &export(ns, "hello"));
    // In cluster-a only, and never exported.
    set.apply(0, &hello(ns, "private", "cluster-a", 1, &[8080]));
    set.apply(2, &client(ns, "client"));
    let a = wait_ready(&set, 0, ns, "hello", 2).await;
    let b = wait_ready(&set, 1, ns, "hello", 1).await;
    wait_ready(&set, 0, ns, "private", 1).await;
    wait_ready(&set, 2, ns, "client", 1).await;
    let name = format!("hello.{ns}.svc.clusterset.local");

    // The pod's own resolver (glibc, then bind's nslookup) gives cluster-c's clusterset IP,
    // through the cluster DNS (the kube-dns Service, routed by kube-proxy) and its forward stub.
    let ips = eventually(
        "cluster-c's ServiceImport to have its clusterset IPs",
        WAIT,
        || {
            let ips = set.kubectl(
                2,
                &[
                    "get",
                    "serviceimport",
                    "hello",
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={.spec.ips[*]}",
                ],
            );
            async move { (ips.split_whitespace().count() == 2).then_some(ips) }
        },
    )
    .await;
    let v4 = ips
        .split_whitespace()
        .find(|ip| ip.contains('.'))
        .unwrap()
        .to_string();
    let v6 = ips
        .split_whitespace()
        .find(|ip| ip.contains(':'))
        .unwrap()
        .to_string();
    assert_eq!(getent(&set, 2, ns, "client", "ahostsv4", &name), v4);
    assert_eq!(getent(&set, 2, ns, "client", "ahostsv6", &name), v6);
    let looked_up = exec_ok(&set, 2, ns, "client", &format!("nslookup -type=A {name}"));
    assert!(
        looked_up.contains(&format!("Address: {v4}")),
        "nslookup: {looked_up}"
    );
    let resolv_conf = exec_ok(&set, 2, ns, "client", "cat /etc/resolv.conf");
    assert!(
        resolv_conf.contains(&format!(
            "search {ns}.svc.cluster.local svc.cluster.local cluster.local"
        )),
        "{resolv_conf}"
    );

    // Port 8080 is exported by both clusters: requests reach all three pods, over IPv4 and IPv6.
    let url = |port: u16| format!("http://{name}:{port}/");
    // From the client pod of cluster-c, over `flags` (-4, -6), to `port` of the clusterset name.
    let from_c = |flags: &'static str, port: u16, expected: BTreeSet<String>| {
        let (set, url) = (&set, url(port));
        async move { reaches_exactly(set, 2, ns, "client", flags, &url, &expected).await }
    };
    let both: BTreeSet<String> = answers(&a, "cluster-a", 8080)
        .union(&answers(&b, "cluster-b", 8080))
        .cloned()
        .collect();
    from_c("-4", 8080, both.clone()).await;
    from_c("-6", 8080, both).await;
    // Port 9090 only by cluster-a: every request lands there (strict routing: none goes to
    // cluster-b, where nothing serves it).
    let (seen, failed) = ask(&set, 2, ns, "client", "-4", &url(9090), 30);
    assert_eq!((seen, failed), (answers(&a, "cluster-a", 9090), 0));

    // A name that is not exported does not exist, and nothing is reached by it.
    let private = format!("private.{ns}.svc.clusterset.local");
    let out = exec(&set, 2, ns, "client", &format!("nslookup {private}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NXDOMAIN"), "nslookup {private}: {text}");
    let out = exec(
        &set,
        2,
        ns,
        "client",
        &format!("curl -s --max-time 2 http://{private}:8080/"),
    );
    assert_eq!(out.status.code(), Some(6), "curl exits 6: could not resolve host");

    // A pod of cluster-a turns unready: it is no longer reached; ready again, it is.
    exec_ok(&set, 0, ns, &a[0], "rm /tmp/ready");
    let rest = answers(&a[1..], "cluster-a", 9090);
    from_c("-4", 9090, rest).await;
    exec_ok(&set, 0, ns, &a[0], "touch /tmp/ready");
    from_c("-4", 9090, answers(&a, "cluster-a", 9090)).await;

    // cluster-b withdraws its export: only cluster-a is reached.
    set.kubectl(1, &["delete", "serviceexport", "hello", "-n", ns]);
    from_c("-4", 8080, answers(&a, "cluster-a", 8080)).await;
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes with the pod network only: tests/kube/test.sh runs it"]
async fn a_headless_clusterset_name_reaches_each_pod_and_each_pod_by_its_own_name() {
    let ns = "pods-headless";
    let set = real_with_pods(ns).await;
    let statefulset = hello(ns, "db", "cluster-a", 2, &[8080])
        .replace("kind: Deployment", "kind: StatefulSet")
        .replace("  replicas: 2\n", "  replicas: 2\n  serviceName: db\n")
        .replace(
            "  selector: {app: db}\n  ipFamilyPolicy",
            "  clusterIP: None\n  selector: {app: db}\n  ipFamilyPolicy",
        );
    set.apply(0, &statefulset);
    set.apply(0, &export(ns, "db"));
    set.apply(2, &client(ns, "client"));
    let pods = wait_ready(&set, 0, ns, "db", 2).await;
    wait_ready(&set, 2, ns, "client", 1).await;
    let ip_of = |pod: &str| {
        set.kubectl(
            0,
            &["get", "pod", pod, "-n", ns, "-o", "jsonpath={.status.podIP}"],
        )
    };
    let expected: BTreeSet<String> = pods.iter().map(|p| ip_of(p)).collect();
    let name = format!("db.{ns}.svc.clusterset.local");
    eventually(
        "the headless name to give both pods' addresses in cluster-c",
        WAIT,
        || {
            let out = exec(&set, 2, ns, "client", &format!("getent ahostsv4 {name}"));
            let seen: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect();
            let done = seen == expected;
            async move { done.then_some(()) }
        },
    )
    .await;
    // Each pod by its address and by its own name, `<hostname>.<cluster>.<service>…`.
    for pod in &pods {
        let ip = ip_of(pod);
        let own = format!("{pod}.cluster-a.{name}");
        assert_eq!(getent(&set, 2, ns, "client", "ahostsv4", &own), ip, "{own}");
        for host in [&ip, &own] {
            let url = format!("http://{host}:8080/");
            let answer = exec_ok(&set, 2, ns, "client", &format!("curl -s --max-time 2 {url}"));
            assert_eq!(answer.trim(), format!("{pod} cluster-a 8080"), "{url}");
        }
    }
    set.stop().await;
}

/// What `kubectl ARGS` prints when its input and output are a terminal (`script`'s), with
/// `input` typed into it once the command has had time to start.
fn in_a_terminal(kubeconfig: &std::path::Path, ns: &str, args: &str, input: Option<&str>) -> String {
    use std::io::Write as _;
    let line = format!("kubectl --kubeconfig {} -n {ns} {args}", kubeconfig.display());
    let mut child = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script runs");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        std::thread::sleep(Duration::from_secs(2));
        stdin.write_all(input.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args} in a terminal failed: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes with the pod network only: tests/kube/test.sh runs it"]
async fn kubectl_exec_runs_in_the_pod_named_with_and_without_a_terminal_and_stdin() {
    let ns = "pods-exec";
    let set = real_with_pods(ns).await;
    set.apply(1, &client(ns, "one"));
    set.apply(1, &client(ns, "two"));
    wait_ready(&set, 1, ns, "one", 1).await;
    wait_ready(&set, 1, ns, "two", 1).await;
    let kubeconfig = set.members[1].kubeconfig.clone();
    let kubectl = |args: &[&str], input: Option<&str>| -> String {
        use std::io::Write as _;
        let mut child = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["-n", ns])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for pod in ["one", "two"] {
        let ip = set.kubectl(
            1,
            &["get", "pod", pod, "-n", ns, "-o", "jsonpath={.status.podIP}"],
        );
        // No terminal, no stdin: the pod named, its address, its environment.
        let out = kubectl(
            &[
                "exec",
                pod,
                "--",
                "sh",
                "-c",
                "cat /etc/hostname; echo $HOSTNAME; ip -o -4 addr show eth0",
            ],
            None,
        );
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(pod));
        assert_eq!(lines.next(), Some(pod));
        assert!(
            lines.next().is_some_and(|l| l.contains(&format!("inet {ip}/32"))),
            "{out}"
        );
        // A terminal without stdin, as the conformance suite execs (kwok crashed on it):
        // kubectl asks for a terminal only when its own input is one, so it runs in `script`'s.
        let out = in_a_terminal(
            &kubeconfig,
            ns,
            &format!("exec -t {pod} -- cat /etc/hostname"),
            None,
        );
        assert_eq!(out, format!("{pod}\r\n"));
        // Stdin without a terminal.
        let out = kubectl(
            &[
                "exec",
                "-i",
                pod,
                "--",
                "sh",
                "-c",
                "read line; echo \"$line from $HOSTNAME\"",
            ],
            Some("hello\n"),
        );
        assert_eq!(out, format!("hello from {pod}\n"));
        // An absolute path runs in the pod too.
        let out = kubectl(&["exec", pod, "--", "/bin/cat", "/etc/hostname"], None);
        assert_eq!(out, format!("{pod}\n"));
    }
    // Both: the line typed reaches the pod's shell.
    let out = in_a_terminal(
        &kubeconfig,
        ns,
        "exec -it one -- sh -c 'read line; echo \"got $line in $HOSTNAME\"'",
        Some("typed\n"),
    );
    assert!(out.contains("got typed in one\r\n"), "kubectl exec -it: {out:?}");

    // The container's output, through kubectl logs.
    let logs = kubectl(&["logs", "one"], None);
    assert_eq!(logs, "started one\n");

    // A pod replaced under the same name: exec reaches the new one, in its own sandbox.
    let old_uid = set.kubectl(
        1,
        &["get", "pod", "two", "-n", ns, "-o", "jsonpath={.metadata.uid}"],
    );
    set.kubectl(1, &["delete", "pod", "two", "-n", ns, "--wait=true"]);
    set.apply(1, &client(ns, "two"));
    wait_ready(&set, 1, ns, "two", 1).await;
    let new_uid = set.kubectl(
        1,
        &["get", "pod", "two", "-n", ns, "-o", "jsonpath={.metadata.uid}"],
    );
    assert_ne!(old_uid, new_uid);
    let ip = set.kubectl(
        1,
        &["get", "pod", "two", "-n", ns, "-o", "jsonpath={.status.podIP}"],
    );
    let out = kubectl(
        &["exec", "two", "--", "sh", "-c", "ip -o -4 addr show eth0"],
        None,
    );
    assert!(out.contains(&format!("inet {ip}/32")), "{out}");
    let old_netns = format!(
        "mcsd-pod-{}",
        old_uid.replace('-', "").chars().take(12).collect::<String>()
    );
    eventually("the replaced pod's network namespace to be gone", WAIT, || {
        let list = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap();
        let gone = !String::from_utf8_lossy(&list.stdout).contains(&old_netns);
        async move { gone.then_some(()) }
    })
    .await;

    // Inside a cluster, a plain Service is kube-proxy's too: the search path finds the API
    // server's, through the kube-dns Service.
    let looked_up = kubectl(&["exec", "one", "--", "nslookup", "kubernetes.default"], None);
    assert!(
        looked_up.contains("Name:\tkubernetes.default.svc.cluster.local"),
        "{looked_up}"
    );
    set.stop().await;
}

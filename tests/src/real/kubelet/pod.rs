//! One pod's life on the kubelet stand-in: addresses and a sandbox, its init containers then its
//! containers run (and restarted as its `restartPolicy` says), readiness probes, the status a
//! kubelet reports, and the teardown once the pod is deleted.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    PodHandle, Shared,
    containers::{self, Check, Downward, Env, Readiness},
    volumes,
};
use crate::real::network::{PodFiles, PodSandbox};

/// How long a crashed container waits before it is started again, doubled up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// A running pod: what exec and logs need to reach it.
#[derive(Debug)]
pub(super) struct Runtime {
    /// The pod's sandbox.
    pub sandbox: PodSandbox,
    /// Its private `/tmp` (shared by its containers and every exec into it).
    tmp: PathBuf,
    /// Where its containers' output goes, `<container>.log`.
    logs: PathBuf,
    /// Each container's environment, once resolved.
    envs: Mutex<HashMap<String, Env>>,
    /// Each container's working directory.
    working_dirs: HashMap<String, String>,
    /// Each container's volumes.
    mounts: HashMap<String, Vec<Mount>>,
    /// The pod's `HOME` (an image's home is its own, not this machine's).
    home: PathBuf,
    ip: PathBuf,
}

/// One volume mounted in a container.
#[derive(Debug)]
struct Mount {
    /// The pod's directory of the volume (or a path in it: `subPath`).
    source: PathBuf,
    /// Where the container sees it.
    target: String,
    read_only: bool,
}

impl Runtime {
    /// The command line that runs `command` in `container` of this pod: in the pod's network
    /// namespace (with its `/etc` files), its private `/tmp` and the container's volumes
    /// mounted, the container's environment plus `extra`, in its working directory.
    /// `None` for a container the pod does not have.
    pub fn enter(&self, container: &str, extra: &[(&str, &str)], command: &[String]) -> Option<Vec<String>> {
        let dir = self.working_dirs.get(container)?;
        let envs = self.envs.lock().unwrap();
        let env = envs.get(container).cloned().unwrap_or_default();
        let mut argv: Vec<String> = vec![
            self.ip.display().to_string(),
            "netns".into(),
            "exec".into(),
            self.sandbox.netns.clone(),
            "/bin/sh".into(),
            "-c".into(),
            // `ip netns exec` gave the command a mount namespace of its own: what is mounted
            // here is seen by this container's processes only.
            // The volumes first: their files may be under this machine's /tmp.
            r#"while [ "$1" != -- ]; do mount -o "$3" "$1" "$2" || exit 1; shift 3; done
               shift; mount --bind "$0" /tmp && exec "$@""#
                .into(),
            self.tmp.display().to_string(),
        ];
        for mount in self.mounts.get(container).into_iter().flatten() {
            let options = if mount.read_only { "bind,ro" } else { "bind" };
            argv.extend([
                mount.source.display().to_string(),
                mount.target.clone(),
                options.into(),
            ]);
        }
        argv.extend(["--".into(), "env".into(), "-i".into(), format!("--chdir={dir}")]);
        argv.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        argv.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        argv.extend(command.iter().cloned());
        Some(argv)
    }

    /// The file `container`'s output goes to (every run of it, appended).
    pub fn log_file(&self, container: &str) -> Option<PathBuf> {
        self.working_dirs
            .contains_key(container)
            .then(|| self.logs.join(format!("{container}.log")))
    }
}

/// Runs `pod` until `handle.stop`, then tears it down; whether it was stopped because it is
/// being deleted (then it may go for good).
pub(super) async fn run(shared: &Arc<Shared>, pod: Pod, handle: &PodHandle) -> bool {
    let who = format!("{}/{}", handle.namespace, handle.name);
    let (runtime, slot, ips) = match prepare(shared, &pod, &handle.stop).await {
        Ok(ready) => ready,
        Err(problem) => {
            shared.say(&format!("{who}: no sandbox: {problem}"));
            patch_status(
                shared,
                &pod,
                json!({"conditions": [{"type": "PodReadyToStartContainers", "status": "False", "reason": "SandboxFailed", "message": problem, "lastTransitionTime": now()}]}),
            )
            .await;
            handle.stop.cancelled().await;
            return handle.deleting.get().is_some();
        }
    };
    let runtime = Arc::new(runtime);
    let _ = handle.runtime.set(runtime.clone());
    shared.say(&format!(
        "{who}: sandbox {} with {}",
        runtime.sandbox.netns,
        ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    ));
    live(shared, Arc::new(pod), &runtime, ips, handle).await;
    let ip = shared.config.ip.clone();
    let sandbox = runtime.sandbox.clone();
    let _ = tokio::task::spawn_blocking(move || sandbox.remove(&ip)).await;
    // Its logs stay for whoever reads them; its files, tokens included, go.
    for dir in [&runtime.tmp, &runtime.home, &runtime.logs.join("volumes")] {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Some(slot) = slot {
        shared.addresses.give_back(slot);
    }
    shared.say(&format!("{who}: stopped, sandbox removed"));
    handle.deleting.get().is_some()
}

/// The pod's addresses, its sandbox and its directories.
async fn prepare(
    shared: &Arc<Shared>,
    pod: &Pod,
    stop: &CancellationToken,
) -> Result<(Runtime, Option<u128>, Vec<IpAddr>), String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let node = shared.config.node.clone();
    let host_network = spec.host_network == Some(true);
    let (slot, ips) = if host_network {
        (None, node.addresses.to_vec())
    } else {
        let (slot, ips) = shared.addresses.take().ok_or("the node's pod ranges are full")?;
        (Some(slot), ips)
    };
    let give_back = |problem: String| {
        if let Some(slot) = slot {
            shared.addresses.give_back(slot);
        }
        problem
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = shared.config.dir.join("pods").join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        &uid[..uid.len().min(8)]
    ));
    let tmp = dir.join("tmp");
    let home = dir.join("home");
    for d in [&tmp, &home] {
        std::fs::create_dir_all(d).map_err(|e| give_back(format!("creating {}: {e}", d.display())))?;
    }
    // As a kubelet retries a mount: a ConfigMap may not be there yet (kube-root-ca.crt is
    // published into a new namespace shortly after it is made).
    let mut said = false;
    let volumes = loop {
        match volumes::write(shared, pod, &ips, &dir.join("volumes")).await {
            Ok(volumes) => break volumes,
            Err(problem) => {
                if !said {
                    shared.say(&format!(
                        "{}: volumes not ready, retrying: {problem}",
                        pod_name(pod)
                    ));
                    said = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return Err(give_back(problem)),
                }
            }
        }
    };
    let mut mounts: HashMap<String, Vec<Mount>> = HashMap::new();
    for container in spec.init_containers.iter().flatten().chain(&spec.containers) {
        for mount in container.volume_mounts.iter().flatten() {
            let Some(volume) = volumes.get(&mount.name) else {
                shared.say(&format!(
                    "{}: {}: volume {} is of a kind this kubelet does not make; {} left as this machine has it",
                    pod_name(pod),
                    container.name,
                    mount.name,
                    mount.mount_path
                ));
                continue;
            };
            if !std::path::Path::new(&mount.mount_path).exists() || mount.mount_path.starts_with("/tmp") {
                shared.say(&format!(
                    "{}: {}: volume {} not mounted: {} is no mount point on this machine (or is under the pod's own /tmp)",
                    pod_name(pod),
                    container.name,
                    mount.name,
                    mount.mount_path
                ));
                continue;
            }
            let source = match mount.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => volume.dir.join(sub),
                _ => volume.dir.clone(),
            };
            mounts.entry(container.name.clone()).or_default().push(Mount {
                source,
                target: mount.mount_path.clone(),
                read_only: volume.read_only || mount.read_only == Some(true),
            });
        }
    }
    // The sandbox last: nothing after it can fail, so nothing has to take it down again.
    let sandbox = if host_network {
        PodSandbox::host(&node)
    } else {
        let files = pod_files(pod, &ips, shared.config.cluster_dns);
        let ip = shared.config.ip.clone();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let addresses = ips.clone();
        tokio::task::spawn_blocking(move || PodSandbox::create(&ip, &node, &uid, &addresses, &files))
            .await
            .map_err(|e| give_back(e.to_string()))?
            .map_err(|e| give_back(format!("{e:#}")))?
    };
    let working_dirs = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| {
            (
                c.name.clone(),
                c.working_dir.clone().unwrap_or_else(|| "/".into()),
            )
        })
        .collect();
    Ok((
        Runtime {
            sandbox,
            tmp,
            logs: dir,
            envs: Mutex::new(HashMap::new()),
            working_dirs,
            mounts,
            home,
            ip: shared.config.ip.clone(),
        },
        slot,
        ips,
    ))
}

/// The pod's `/etc` files.
fn pod_files(pod: &Pod, ips: &[IpAddr], cluster_dns: std::net::Ipv4Addr) -> PodFiles {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let hostname = spec
        .hostname
        .clone()
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let names = match &spec.subdomain {
        Some(subdomain) if !subdomain.is_empty() => {
            format!("{hostname}.{subdomain}.{namespace}.svc.cluster.local {hostname}")
        }
        _ => hostname.clone(),
    };
    let mut hosts = String::from(
        "# the pod's hosts file, as a kubelet writes it\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    for ip in ips {
        hosts.push_str(&format!("{ip}\t{names}\n"));
    }
    for alias in spec.host_aliases.iter().flatten() {
        hosts.push_str(&format!(
            "{}\t{}\n",
            alias.ip,
            alias.hostnames.clone().unwrap_or_default().join(" ")
        ));
    }
    let (mut nameservers, mut searches, mut options) = match spec.dns_policy.as_deref() {
        Some("None") => (Vec::new(), Vec::new(), Vec::new()),
        Some("Default") => host_resolver(),
        _ => (
            vec![cluster_dns.to_string()],
            vec![
                format!("{namespace}.svc.cluster.local"),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            vec!["ndots:5".to_string()],
        ),
    };
    if let Some(config) = &spec.dns_config {
        nameservers.extend(config.nameservers.iter().flatten().cloned());
        searches.extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            options.retain(|o| o.split(':').next() != Some(name.as_str()));
            options.push(match &option.value {
                Some(value) => format!("{name}:{value}"),
                None => name,
            });
        }
    }
    let mut resolv_conf = String::from("# the pod's resolver, as a kubelet writes it\n");
    if !searches.is_empty() {
        resolv_conf.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for nameserver in &nameservers {
        resolv_conf.push_str(&format!("nameserver {nameserver}\n"));
    }
    if !options.is_empty() {
        resolv_conf.push_str(&format!("options {}\n", options.join(" ")));
    }
    PodFiles {
        resolv_conf,
        hosts,
        hostname: format!("{hostname}\n"),
    }
}

/// The host's own resolver settings (`dnsPolicy: Default`).
fn host_resolver() -> (Vec<String>, Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (mut nameservers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => nameservers.extend(words.map(str::to_string)),
            Some("search") => searches.extend(words.map(str::to_string)),
            Some("options") => options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    (nameservers, searches, options)
}

/// What happens to a container, as its keeper and its prober say.
#[derive(Debug)]
enum Event {
    Waiting {
        index: usize,
        reason: String,
        message: String,
    },
    Started {
        index: usize,
    },
    Exited {
        index: usize,
        code: i32,
        restarting: bool,
    },
    Ready {
        index: usize,
        ready: bool,
    },
}

/// A container's state, as its status reports it.
#[derive(Clone, Debug)]
enum State {
    Waiting { reason: String, message: String },
    Running { since: String },
    Terminated { code: i32, since: String, until: String },
}

#[derive(Clone, Debug)]
struct ContainerStatus {
    name: String,
    image: String,
    state: State,
    last: Option<State>,
    restarts: u32,
    probed: bool,
    probe_ready: bool,
    /// A keeper will start it again.
    restarting: bool,
}

impl ContainerStatus {
    fn new(container: &Container) -> Self {
        Self {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            last: None,
            restarts: 0,
            probed: container.readiness_probe.is_some(),
            probe_ready: false,
            restarting: false,
        }
    }

    fn ready(&self) -> bool {
        matches!(self.state, State::Running { .. }) && (!self.probed || self.probe_ready)
    }

    fn json(&self, uid: &str) -> Value {
        let state = |state: &State| match state {
            State::Waiting { reason, message } => json!({"waiting": {"reason": reason, "message": message}}),
            State::Running { since } => json!({"running": {"startedAt": since}}),
            State::Terminated { code, since, until } => json!({"terminated": {
                "exitCode": code, "startedAt": since, "finishedAt": until,
                "reason": if *code == 0 { "Completed" } else { "Error" },
            }}),
        };
        let mut status = json!({
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "containerID": format!("mcsd://{}-{}-{}", &uid[..uid.len().min(8)], self.name, self.restarts),
            "ready": self.ready(),
            "started": matches!(self.state, State::Running { .. }),
            "restartCount": self.restarts,
            "state": state(&self.state),
        });
        if let Some(last) = &self.last {
            status["lastState"] = state(last);
        }
        status
    }
}

/// Runs the pod's containers until `stop`, reporting its status as it changes.
async fn live(
    shared: &Arc<Shared>,
    pod: Arc<Pod>,
    runtime: &Arc<Runtime>,
    ips: Vec<IpAddr>,
    handle: &PodHandle,
) {
    let stop = &handle.stop;
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let host_ips = shared.config.node.addresses.to_vec();
    let started = now();
    let mut report = Report {
        phase: "Pending",
        ips: ips.clone(),
        host_ips: host_ips.clone(),
        started: started.clone(),
        initialized: spec.init_containers.as_ref().is_none_or(Vec::is_empty),
        init: spec
            .init_containers
            .iter()
            .flatten()
            .map(ContainerStatus::new)
            .collect(),
        containers: spec.containers.iter().map(ContainerStatus::new).collect(),
        gates: spec
            .readiness_gates
            .iter()
            .flatten()
            .map(|g| g.condition_type.clone())
            .collect(),
        since: HashMap::new(),
        sent: None,
    };
    report.send(shared, &pod, &uid).await;
    let children = stop.child_token();
    let context = Arc::new(Context {
        shared: shared.clone(),
        pod: pod.clone(),
        runtime: runtime.clone(),
        ips,
        host_ips,
        deleting: handle.deleting.clone(),
    });

    if !run_init_containers(&context, &spec, &policy, &mut report, stop).await {
        return;
    }
    report.initialized = true;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (index, container) in spec.containers.iter().enumerate() {
        tasks.push(tokio::spawn(keep(
            context.clone(),
            container.clone(),
            index,
            policy.clone(),
            tx.clone(),
            children.clone(),
        )));
        let pod_ip = context
            .ips
            .first()
            .copied()
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        match Readiness::of(container, pod_ip) {
            Ok(Some(readiness)) => tasks.push(tokio::spawn(probe(
                context.clone(),
                container.name.clone(),
                index,
                readiness,
                tx.clone(),
                children.clone(),
            ))),
            Ok(None) => {}
            Err(problem) => shared.say(&format!("{}: {}: {problem}", pod_name(&pod), container.name)),
        }
    }
    drop(tx);
    loop {
        let first = tokio::select! {
            event = rx.recv() => event,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        report.event(first);
        // Whatever else is already waiting goes into the same status write.
        while let Ok(event) = rx.try_recv() {
            report.event(event);
        }
        report.send(shared, &pod, &uid).await;
    }
    children.cancel();
    for task in tasks {
        let _ = task.await;
    }
}

/// Runs the pod's init containers one after the other, each to success (a failure is retried,
/// unless the pod's policy is `Never`, which fails the pod). `false` if the pod stopped or failed
/// meanwhile.
async fn run_init_containers(
    context: &Arc<Context>,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    policy: &str,
    report: &mut Report,
    stop: &CancellationToken,
) -> bool {
    let uid = context.pod.metadata.uid.clone().unwrap_or_default();
    for (index, container) in spec.init_containers.iter().flatten().enumerate() {
        loop {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let keeper = tokio::spawn(keep(
                context.clone(),
                container.clone(),
                index,
                "Never".into(),
                tx,
                stop.child_token(),
            ));
            let mut code = None;
            while let Some(event) = tokio::select! { e = rx.recv() => e, _ = stop.cancelled() => None } {
                if let Event::Exited { code: c, .. } = event {
                    code = Some(c);
                }
                report.init_event(event);
                report.send(&context.shared, &context.pod, &uid).await;
            }
            let _ = keeper.await;
            match code {
                _ if stop.is_cancelled() => return false,
                Some(0) => break,
                _ if policy == "Never" => {
                    report.phase = "Failed";
                    report.send(&context.shared, &context.pod, &uid).await;
                    stop.cancelled().await;
                    return false;
                }
                _ => tokio::time::sleep(BACKOFF_FIRST).await,
            }
        }
    }
    true
}

/// What a container's keeper and prober need of the pod.
#[derive(Debug)]
struct Context {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    runtime: Arc<Runtime>,
    ips: Vec<IpAddr>,
    host_ips: Vec<IpAddr>,
    /// The pod's grace period, once it is being deleted.
    deleting: Arc<std::sync::OnceLock<Duration>>,
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Keeps one container running as `policy` says: its environment resolved (retried while a
/// ConfigMap or Secret it names is missing), its command started in the pod, started again
/// after it exits (with a growing pause) unless the policy says otherwise. A container with no
/// command line runs nothing and counts as running. Stops (killing what it started) on `stop`.
async fn keep(
    context: Arc<Context>,
    container: Container,
    index: usize,
    policy: String,
    events: mpsc::UnboundedSender<Event>,
    stop: CancellationToken,
) {
    let downward = Downward {
        pod: &context.pod,
        pod_ips: &context.ips,
        host_ips: &context.host_ips,
    };
    let mut given = vec![("HOME".to_string(), context.runtime.home.display().to_string())];
    given.extend(containers::kubernetes_env(context.shared.config.api_service));
    let env = loop {
        match containers::environment(&context.shared.client, &downward, &container, &given).await {
            Ok(env) => break env,
            Err(message) => {
                let _ = events.send(Event::Waiting {
                    index,
                    reason: "CreateContainerConfigError".into(),
                    message,
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    let entrypoint = container
        .image
        .as_deref()
        .and_then(|image| containers::entrypoint(image, &context.shared.config.images));
    let command = containers::command_line(&container, &env, entrypoint);
    context
        .runtime
        .envs
        .lock()
        .unwrap()
        .insert(container.name.clone(), env);
    if command.is_empty() {
        let _ = events.send(Event::Started { index });
        stop.cancelled().await;
        return;
    }
    let mut pause = BACKOFF_FIRST;
    loop {
        let code = match run_once(&context, &container.name, &command, &events, index, &stop).await {
            Ok(Some(code)) => code,
            Ok(None) => return,
            Err(problem) => {
                let _ = events.send(Event::Waiting {
                    index,
                    reason: "RunContainerError".into(),
                    message: problem,
                });
                -1
            }
        };
        let restarting = match policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        let _ = events.send(Event::Exited {
            index,
            code,
            restarting,
        });
        if !restarting {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
        pause = (pause * 2).min(BACKOFF_CAP);
    }
}

/// Runs the container's command once; its exit code, or `None` if stopped first (its process
/// group killed).
async fn run_once(
    context: &Context,
    name: &str,
    command: &[String],
    events: &mpsc::UnboundedSender<Event>,
    index: usize,
    stop: &CancellationToken,
) -> Result<Option<i32>, String> {
    let argv = context
        .runtime
        .enter(name, &[], command)
        .ok_or_else(|| format!("no container {name}"))?;
    let log_path = context.runtime.log_file(name).unwrap_or_default();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", argv[0]))?;
    let group = child.id();
    let _ = events.send(Event::Started { index });
    tokio::select! {
        status = child.wait() => {
            let status = status.map_err(|e| e.to_string())?;
            use std::os::unix::process::ExitStatusExt as _;
            Ok(Some(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))))
        }
        _ = stop.cancelled() => {
            // As a kubelet stops a container of a pod being deleted: SIGTERM, then SIGKILL once
            // the pod's grace period is over. When the kubelet itself stops, or the pod was
            // force-deleted: SIGKILL at once.
            let signal = |signal| {
                if let Some(group) = group {
                    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group as i32), signal);
                }
            };
            let grace = context.deleting.get().copied().unwrap_or_default();
            if !grace.is_zero() {
                signal(nix::sys::signal::Signal::SIGTERM);
            }
            if grace.is_zero() || tokio::time::timeout(grace, child.wait()).await.is_err() {
                signal(nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait().await;
            }
            Ok(None)
        }
    }
}

/// Runs a container's readiness probe every period; says when the container turns ready (after
/// `success_threshold` successes in a row) or unready (after `failure_threshold` failures).
async fn probe(
    context: Arc<Context>,
    name: String,
    index: usize,
    readiness: Readiness,
    events: mpsc::UnboundedSender<Event>,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = tokio::time::sleep(readiness.initial_delay) => {}
        _ = stop.cancelled() => return,
    }
    let (mut ready, mut successes, mut failures) = (false, 0u32, 0u32);
    loop {
        let passed = tokio::select! {
            passed = check(&context, &name, &readiness) => passed,
            _ = stop.cancelled() => return,
        };
        if passed {
            successes += 1;
            failures = 0;
            if !ready && successes >= readiness.success_threshold {
                ready = true;
                let _ = events.send(Event::Ready { index, ready });
            }
        } else {
            failures += 1;
            successes = 0;
            if ready && failures >= readiness.failure_threshold {
                ready = false;
                let _ = events.send(Event::Ready { index, ready });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(readiness.period) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One run of a probe, within its timeout.
async fn check(context: &Context, name: &str, readiness: &Readiness) -> bool {
    let attempt = async {
        match &readiness.check {
            Check::Exec(command) => {
                let Some(argv) = context.runtime.enter(name, &[], command) else {
                    return false;
                };
                let mut child = match tokio::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn()
                {
                    Ok(child) => child,
                    Err(_) => return false,
                };
                child.wait().await.is_ok_and(|s| s.success())
            }
            Check::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
            Check::Http(addr, path) => mcsd::commands::admin_client::get(*addr, path, readiness.timeout)
                .await
                .is_ok_and(|r| (200..400).contains(&r.status)),
        }
    };
    tokio::time::timeout(readiness.timeout, attempt)
        .await
        .unwrap_or(false)
}

/// The status the pod's task reports, and what it last sent.
#[derive(Debug)]
struct Report {
    phase: &'static str,
    ips: Vec<IpAddr>,
    host_ips: Vec<IpAddr>,
    started: String,
    initialized: bool,
    init: Vec<ContainerStatus>,
    containers: Vec<ContainerStatus>,
    gates: Vec<String>,
    /// Each condition's status and since when.
    since: HashMap<&'static str, (bool, String)>,
    sent: Option<Value>,
}

impl Report {
    fn apply(statuses: &mut [ContainerStatus], event: Event) {
        let at = now();
        match event {
            Event::Waiting {
                index,
                reason,
                message,
            } => {
                statuses[index].state = State::Waiting { reason, message };
            }
            Event::Started { index } => statuses[index].state = State::Running { since: at },
            Event::Exited {
                index,
                code,
                restarting,
            } => {
                let status = &mut statuses[index];
                let since = match &status.state {
                    State::Running { since } => since.clone(),
                    _ => at.clone(),
                };
                let finished = State::Terminated {
                    code,
                    since,
                    until: at,
                };
                status.restarting = restarting;
                if restarting {
                    status.last = Some(finished);
                    status.restarts += 1;
                    status.state = State::Waiting {
                        reason: if code == 0 {
                            "Completed"
                        } else {
                            "CrashLoopBackOff"
                        }
                        .into(),
                        message: String::new(),
                    };
                } else {
                    status.state = finished;
                }
            }
            Event::Ready { index, ready } => statuses[index].probe_ready = ready,
        }
    }

    fn init_event(&mut self, event: Event) {
        Self::apply(&mut self.init, event);
    }

    fn event(&mut self, event: Event) {
        Self::apply(&mut self.containers, event);
    }

    fn phase(&self) -> &'static str {
        if self.phase == "Failed" {
            return "Failed";
        }
        if !self.initialized {
            return "Pending";
        }
        let done: Vec<i32> = self
            .containers
            .iter()
            .filter_map(|c| match c.state {
                State::Terminated { code, .. } if !c.restarting => Some(code),
                _ => None,
            })
            .collect();
        if !self.containers.is_empty() && done.len() == self.containers.len() {
            if done.iter().all(|c| *c == 0) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if self
            .containers
            .iter()
            .all(|c| matches!(c.state, State::Waiting { ref reason, .. } if reason == "ContainerCreating"))
        {
            "Pending"
        } else {
            "Running"
        }
    }

    fn condition(&mut self, kind: &'static str, status: bool) -> Value {
        let entry = self.since.entry(kind).or_insert_with(|| (status, now()));
        if entry.0 != status {
            *entry = (status, now());
        }
        json!({"type": kind, "status": if status { "True" } else { "False" }, "lastTransitionTime": entry.1})
    }

    async fn send(&mut self, shared: &Shared, pod: &Pod, uid: &str) {
        let ready = self.initialized && self.containers.iter().all(ContainerStatus::ready);
        let initialized = self.initialized;
        let mut conditions = vec![
            self.condition("PodReadyToStartContainers", true),
            self.condition("Initialized", initialized),
            self.condition("ContainersReady", ready),
            self.condition("Ready", ready),
        ];
        for gate in self.gates.clone() {
            conditions.push(json!({"type": gate, "status": "True", "lastTransitionTime": self.started}));
        }
        let ip_list = |ips: &[IpAddr]| {
            ips.iter()
                .map(|ip| json!({"ip": ip.to_string()}))
                .collect::<Vec<_>>()
        };
        let status = json!({
            "phase": self.phase(),
            "hostIP": self.host_ips.first().map(ToString::to_string),
            "hostIPs": ip_list(&self.host_ips),
            "podIP": self.ips.first().map(ToString::to_string),
            "podIPs": ip_list(&self.ips),
            "startTime": self.started,
            "conditions": conditions,
            "initContainerStatuses": self.init.iter().map(|c| c.json(uid)).collect::<Vec<_>>(),
            "containerStatuses": self.containers.iter().map(|c| c.json(uid)).collect::<Vec<_>>(),
        });
        if self.sent.as_ref() == Some(&status) {
            return;
        }
        patch_status(shared, pod, status.clone()).await;
        self.sent = Some(status);
    }
}

/// Writes `status` into the pod's status (a strategic merge: conditions by type).
async fn patch_status(shared: &Shared, pod: &Pod, status: Value) {
    let api: kube::Api<Pod> = kube::Api::namespaced(
        shared.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let name = pod.metadata.name.clone().unwrap_or_default();
    let patch = Patch::Strategic(json!({"status": status}));
    match api.patch_status(&name, &PatchParams::default(), &patch).await {
        Ok(_) => {}
        // Deleted meanwhile: its task is about to stop.
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(error) => shared.say(&format!("{}: writing its status: {error}", pod_name(pod))),
    }
}

/// Now, to the second, as Kubernetes writes times.
fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_resolves_through_its_cluster_dns_with_the_search_path_of_its_namespace() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "hello-ss-0", "namespace": "demo"},
            "spec": {"hostname": "hello-ss-0", "subdomain": "hello", "containers": []},
        }))
        .unwrap();
        let ips: Vec<IpAddr> = vec!["10.160.0.2".parse().unwrap()];
        let files = pod_files(&pod, &ips, "10.96.0.10".parse().unwrap());
        assert!(files.resolv_conf.contains(
            "search demo.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        ));
        assert!(
            files
                .hosts
                .contains("10.160.0.2\thello-ss-0.hello.demo.svc.cluster.local hello-ss-0\n")
        );
        assert_eq!(files.hostname, "hello-ss-0\n");
    }

    #[test]
    fn a_container_that_exits_and_restarts_is_waiting_with_its_last_state() {
        let container: Container = serde_json::from_value(json!({"name": "c", "image": "busybox"})).unwrap();
        let mut statuses = vec![ContainerStatus::new(&container)];
        Report::apply(&mut statuses, Event::Started { index: 0 });
        assert!(statuses[0].ready());
        Report::apply(
            &mut statuses,
            Event::Exited {
                index: 0,
                code: 1,
                restarting: true,
            },
        );
        assert_eq!(statuses[0].restarts, 1);
        assert!(!statuses[0].ready());
        let json = statuses[0].json("0123456789");
        assert_eq!(json["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(json["lastState"]["terminated"]["exitCode"], 1);
    }
}

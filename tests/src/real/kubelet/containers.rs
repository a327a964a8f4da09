//! A container as the kubelet stand-in runs it: its environment (as a kubelet resolves it), its
//! command line, and its readiness probe.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Probe, Secret};

/// The `PATH` every container starts with (a Debian image's).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A container's resolved environment, in the order a kubelet gives it (later names win).
pub(super) type Env = Vec<(String, String)>;

/// What the downward API reads of the pod.
#[derive(Debug)]
pub(super) struct Downward<'a> {
    pub pod: &'a Pod,
    pub pod_ips: &'a [IpAddr],
    pub host_ips: &'a [IpAddr],
}

impl Downward<'_> {
    /// The value of `fieldRef.fieldPath`, or why it has none.
    pub fn field(&self, path: &str) -> Result<String, String> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        let join = |ips: &[IpAddr]| ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let first = |ips: &[IpAddr]| ips.first().map(ToString::to_string).unwrap_or_default();
        if let Some(key) = bracketed(path, "metadata.labels") {
            return Ok(meta
                .labels
                .as_ref()
                .and_then(|l| l.get(key))
                .cloned()
                .unwrap_or_default());
        }
        if let Some(key) = bracketed(path, "metadata.annotations") {
            return Ok(meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
                .unwrap_or_default());
        }
        Ok(match path {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            "spec.serviceAccountName" => spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            "status.podIP" => first(self.pod_ips),
            "status.podIPs" => join(self.pod_ips),
            "status.hostIP" => first(self.host_ips),
            "status.hostIPs" => join(self.host_ips),
            other => return Err(format!("the field {other} is not one the downward API gives")),
        })
    }
}

/// `key` of `prefix['key']`.
fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?.strip_prefix("['")?.strip_suffix("']")
}

/// Expands `$(NAME)` from `env` as a kubelet does: `$$` is a literal `$`, and a reference to a
/// name not defined is kept as written.
pub(super) fn expand(text: &str, env: &Env) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => out.push_str(&rest[at..at + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What a kubelet tells every container of where the API server is: the `kubernetes` Service
/// at `api` (its cluster IP and port), as in-cluster clients (client-go, kube-rs) read it.
pub(super) fn kubernetes_env(api: SocketAddr) -> Env {
    let (host, port) = (api.ip().to_string(), api.port().to_string());
    let url = format!("tcp://{api}");
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
        ("KUBERNETES_PORT".into(), url.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP"), url),
        (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host),
    ]
}

/// The environment of `container`: the image's basics (`PATH`, `HOSTNAME`), what the kubelet
/// gives every container (`given`: `HOME`, the `kubernetes` Service), then `envFrom`, then
/// `env`, each `$(VAR)` expanded from what precedes it. A reference that cannot be resolved (a
/// missing ConfigMap key not marked optional, an unknown field) is an error naming it, as the
/// kubelet reports `CreateContainerConfigError`.
pub(super) async fn environment(
    client: &kube::Client,
    downward: &Downward<'_>,
    container: &Container,
    given: &Env,
) -> Result<Env, String> {
    let namespace = downward.pod.metadata.namespace.clone().unwrap_or_default();
    let spec = downward.pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .or_else(|| downward.pod.metadata.name.clone())
        .unwrap_or_default();
    let mut env: Env = vec![("PATH".into(), PATH.into()), ("HOSTNAME".into(), hostname)];
    env.extend(given.iter().cloned());
    let mut sources = Sources {
        client,
        namespace: &namespace,
        read: BTreeMap::new(),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            sources
                .data(Source::ConfigMap, &r.name, r.optional.unwrap_or(false))
                .await?
        } else if let Some(r) = &from.secret_ref {
            sources
                .data(Source::Secret, &r.name, r.optional.unwrap_or(false))
                .await?
        } else {
            BTreeMap::new()
        };
        env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
    }
    for var in container.env.iter().flatten() {
        let value = value_of(var, &env, downward, &mut sources).await?;
        env.retain(|(n, _)| n != &var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

async fn value_of(
    var: &EnvVar,
    env: &Env,
    downward: &Downward<'_>,
    sources: &mut Sources<'_>,
) -> Result<String, String> {
    let Some(from) = &var.value_from else {
        return Ok(expand(var.value.as_deref().unwrap_or(""), env));
    };
    if let Some(field) = &from.field_ref {
        return downward
            .field(&field.field_path)
            .map_err(|e| format!("env {}: {e}", var.name));
    }
    let (source, name, key, optional) = if let Some(r) = &from.config_map_key_ref {
        (Source::ConfigMap, &r.name, &r.key, r.optional.unwrap_or(false))
    } else if let Some(r) = &from.secret_key_ref {
        (Source::Secret, &r.name, &r.key, r.optional.unwrap_or(false))
    } else {
        // resourceFieldRef: no limits are enforced here, so none is reported.
        return Ok(String::new());
    };
    match sources.data(source, name, optional).await?.get(key) {
        Some(value) => Ok(value.clone()),
        None if optional => Ok(String::new()),
        None => Err(format!("env {}: {source:?} {name} has no key {key}", var.name)),
    }
}

/// Where `envFrom`, `valueFrom` and volumes read keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Source {
    ConfigMap,
    Secret,
}

/// The keys of the ConfigMap (`data` and `binaryData`) or Secret `name` in `namespace`, or
/// `None` if it does not exist.
pub(super) async fn read(
    client: &kube::Client,
    namespace: &str,
    source: Source,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let found = match source {
        Source::ConfigMap => {
            let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), namespace);
            api.get_opt(name).await.map(|c| {
                c.map(|c| {
                    let text = c
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()));
                    let binary = c
                        .binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0));
                    text.chain(binary).collect()
                })
            })
        }
        Source::Secret => {
            let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
            api.get_opt(name).await.map(|s| {
                s.map(|s| {
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect()
                })
            })
        }
    };
    found.map_err(|e| format!("reading {source:?} {namespace}/{name}: {e}"))
}

/// The ConfigMaps and Secrets a container's environment reads, each read once.
struct Sources<'a> {
    client: &'a kube::Client,
    namespace: &'a str,
    read: BTreeMap<(Source, String), Option<BTreeMap<String, String>>>,
}

impl Sources<'_> {
    /// The data of the ConfigMap or Secret `name` (a Secret's decoded); empty if it is missing
    /// and `optional`, an error naming it if it is missing and not.
    async fn data(
        &mut self,
        source: Source,
        name: &str,
        optional: bool,
    ) -> Result<BTreeMap<String, String>, String> {
        let key = (source, name.to_string());
        if !self.read.contains_key(&key) {
            let found = read(self.client, self.namespace, source, name)
                .await?
                .map(|data| {
                    data.into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                        .collect()
                });
            self.read.insert(key.clone(), found);
        }
        match (&self.read[&key], optional) {
            (Some(data), _) => Ok(data.clone()),
            (None, true) => Ok(BTreeMap::new()),
            (None, false) => Err(format!("{source:?} {name} not found")),
        }
    }
}

/// The program that stands in for the entrypoint of `image`: the one `images` lists for the
/// image's name, its last path segment without tag or digest (`registry.example:5000/mcsd:0.1.0`
/// is `mcsd`).
pub(super) fn entrypoint<'a>(image: &str, images: &'a [(String, PathBuf)]) -> Option<&'a Path> {
    let reference = image.split('@').next().unwrap_or(image);
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let name = last.split(':').next().unwrap_or(last);
    images
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, program)| program.as_path())
}

/// What `container` runs: `command` + `args`, or the image's `entrypoint` (a program of this
/// machine standing in for it) + `args`, each `$(VAR)` expanded; an image with no stand-in has
/// an empty entrypoint (the host's programs stand in for the image's), so a container with
/// neither command nor args runs nothing.
pub(super) fn command_line(container: &Container, env: &Env, entrypoint: Option<&Path>) -> Vec<String> {
    let entrypoint = match (&container.command, entrypoint) {
        (None, Some(program)) => Some(program.display().to_string()),
        _ => None,
    };
    entrypoint
        .into_iter()
        .chain(
            container
                .command
                .iter()
                .flatten()
                .chain(container.args.iter().flatten())
                .map(|word| expand(word, env)),
        )
        .collect()
}

/// The readiness probe of a container, as the pod's task runs it.
#[derive(Clone, Debug)]
pub(super) struct Readiness {
    pub check: Check,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// What a probe checks.
#[derive(Clone, Debug)]
pub(super) enum Check {
    /// This command, run in the container, exits 0.
    Exec(Vec<String>),
    /// A TCP connection is accepted.
    Tcp(SocketAddr),
    /// `GET path` answers 200–399.
    Http(SocketAddr, String),
}

impl Readiness {
    /// The readiness probe of `container`, whose pod has `pod_ip`; an error for a probe that
    /// names a port the container does not declare.
    pub fn of(container: &Container, pod_ip: IpAddr) -> Result<Option<Self>, String> {
        let Some(probe) = &container.readiness_probe else {
            return Ok(None);
        };
        let port = |port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| -> Result<u16, String> {
            use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
            match port {
                IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok())
                    .ok_or_else(|| {
                        format!("the readiness probe names port {name}, which the container does not declare")
                    }),
            }
        };
        let host = |host: &Option<String>| -> Result<IpAddr, String> {
            match host {
                Some(h) if !h.is_empty() => {
                    h.parse().map_err(|_| format!("probe host {h} is not an address"))
                }
                _ => Ok(pod_ip),
            }
        };
        let check = if let Some(exec) = &probe.exec {
            Check::Exec(exec.command.clone().unwrap_or_default())
        } else if let Some(tcp) = &probe.tcp_socket {
            Check::Tcp(SocketAddr::new(host(&tcp.host)?, port(&tcp.port)?))
        } else if let Some(http) = &probe.http_get {
            Check::Http(
                SocketAddr::new(host(&http.host)?, port(&http.port)?),
                http.path.clone().unwrap_or_else(|| "/".into()),
            )
        } else {
            return Err("the readiness probe has no exec, tcpSocket or httpGet".into());
        };
        Ok(Some(Self::with_timing(check, probe)))
    }

    fn with_timing(check: Check, probe: &Probe) -> Self {
        let seconds =
            |v: Option<i32>, default: u64| Duration::from_secs(v.map_or(default, |s| s.max(0) as u64));
        Self {
            check,
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.map_or(1, |n| n.max(1) as u32),
            failure_threshold: probe.failure_threshold.map_or(3, |n| n.max(1) as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn references_expand_as_a_kubelet_expands_them() {
        let env = env(&[("A", "one"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &env), "one-two");
        assert_eq!(expand("$$(A) costs $5", &env), "$(A) costs $5");
        assert_eq!(expand("$(MISSING) stays", &env), "$(MISSING) stays");
        assert_eq!(expand("$(unclosed", &env), "$(unclosed");
    }

    #[test]
    fn the_downward_api_gives_pod_ips_comma_separated() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hello-0", "namespace": "demo", "labels": {"app": "hello"}},
            "spec": {"nodeName": "cluster-a-node", "containers": []},
        }))
        .unwrap();
        let ips: Vec<IpAddr> = vec!["10.160.0.2".parse().unwrap(), "fd00:10:244:1::2".parse().unwrap()];
        let downward = Downward {
            pod: &pod,
            pod_ips: &ips,
            host_ips: &ips[..1],
        };
        assert_eq!(
            downward.field("status.podIPs").unwrap(),
            "10.160.0.2,fd00:10:244:1::2"
        );
        assert_eq!(downward.field("status.podIP").unwrap(), "10.160.0.2");
        assert_eq!(downward.field("metadata.labels['app']").unwrap(), "hello");
        assert_eq!(downward.field("spec.nodeName").unwrap(), "cluster-a-node");
        assert!(downward.field("status.phase").is_err());
    }

    #[test]
    fn an_image_entrypoint_is_taken_as_empty() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "request", "args": ["/bin/sh", "-ec", "echo $(GREETING)"],
        }))
        .unwrap();
        assert_eq!(
            command_line(&container, &env(&[("GREETING", "hi")]), None),
            ["/bin/sh", "-ec", "echo hi"]
        );
    }

    #[test]
    fn an_image_with_a_stand_in_runs_it_as_its_entrypoint_unless_the_command_is_set() {
        let images = vec![("mcsd".to_string(), PathBuf::from("/opt/mcsd"))];
        for image in [
            "mcsd",
            "mcsd:0.1.0",
            "registry.example:5000/team/mcsd:0.2",
            "mcsd@sha256:ab",
        ] {
            assert_eq!(
                entrypoint(image, &images),
                Some(Path::new("/opt/mcsd")),
                "{image}"
            );
        }
        assert_eq!(entrypoint("registry.example/mcsd-tools:1", &images), None);
        let args_only: Container = serde_json::from_value(serde_json::json!({
            "name": "mcsd", "image": "mcsd:0.1.0", "args": ["run", "--pod=$(POD)"],
        }))
        .unwrap();
        let env = env(&[("POD", "mcsd-0")]);
        assert_eq!(
            command_line(&args_only, &env, Some(Path::new("/opt/mcsd"))),
            ["/opt/mcsd", "run", "--pod=mcsd-0"]
        );
        let with_command: Container = serde_json::from_value(serde_json::json!({
            "name": "mcsd", "image": "mcsd:0.1.0", "command": ["/bin/true"],
        }))
        .unwrap();
        assert_eq!(
            command_line(&with_command, &env, Some(Path::new("/opt/mcsd"))),
            ["/bin/true"]
        );
    }

    #[test]
    fn every_container_learns_where_the_api_server_is() {
        let env = kubernetes_env("10.96.0.1:443".parse().unwrap());
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP"), Some("tcp://10.96.0.1:443"));
    }
}

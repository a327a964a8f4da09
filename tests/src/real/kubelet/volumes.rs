//! A pod's volumes as the kubelet stand-in makes them: files under the pod's directory, which
//! each container's mount namespace binds onto the volume's mount path (`pod.rs`). Made here:
//! `projected` volumes (the `kube-api-access-…` volume the ServiceAccount admission adds to every
//! pod: a token bound to the pod, the cluster's CA, the namespace), `configMap`, `secret` and
//! `emptyDir`. Other kinds are not made; a container mounting one is told so in the kubelet's
//! log.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{KeyToPath, Pod, ServiceAccount},
};

use super::{
    Shared,
    containers::{Downward, Source, read},
};

/// How long a projected token lives when the volume does not say (a kubelet's default).
const TOKEN_SECONDS: i64 = 3607;

/// A volume made for a pod.
#[derive(Debug)]
pub(super) struct Volume {
    /// Its files.
    pub dir: PathBuf,
    /// Whether containers see it read-only whatever their mount says (projected, ConfigMap and
    /// Secret volumes, as a kubelet mounts them).
    pub read_only: bool,
}

/// Writes the files of `pod`'s volumes under `dir/<volume>/`; returns each volume made, by name.
/// A source that cannot be read (a ConfigMap that is missing and not optional, a key it lacks,
/// a token the API server refuses) is an error naming it.
pub(super) async fn write(
    shared: &Shared,
    pod: &Pod,
    ips: &[IpAddr],
    dir: &Path,
) -> Result<HashMap<String, Volume>, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let downward = Downward {
        pod,
        pod_ips: ips,
        host_ips: &shared.config.node.addresses,
    };
    let mut made = HashMap::new();
    for volume in spec.volumes.iter().flatten() {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    let account = spec.service_account_name.as_deref().unwrap_or("default");
                    let seconds = token.expiration_seconds.unwrap_or(TOKEN_SECONDS);
                    let audiences = token.audience.iter().cloned().collect();
                    let value = request_token(shared, pod, &namespace, account, audiences, seconds).await?;
                    files.insert(token.path.clone(), value.into_bytes());
                }
                if let Some(c) = &source.config_map {
                    let keys = (Source::ConfigMap, c.name.as_str(), c.items.as_ref(), c.optional);
                    files.extend(keyed(shared, &namespace, keys).await?);
                }
                if let Some(s) = &source.secret {
                    let keys = (Source::Secret, s.name.as_str(), s.items.as_ref(), s.optional);
                    files.extend(keyed(shared, &namespace, keys).await?);
                }
                if let Some(fields) = &source.downward_api {
                    for item in fields.items.iter().flatten() {
                        if let Some(field) = &item.field_ref {
                            let value = downward
                                .field(&field.field_path)
                                .map_err(|e| format!("volume {}: {e}", volume.name))?;
                            files.insert(item.path.clone(), value.into_bytes());
                        }
                    }
                }
            }
        } else if let Some(c) = &volume.config_map {
            let keys = (Source::ConfigMap, c.name.as_str(), c.items.as_ref(), c.optional);
            files.extend(keyed(shared, &namespace, keys).await?);
        } else if let Some(s) = &volume.secret {
            let name = s.secret_name.as_deref().unwrap_or_default();
            files.extend(
                keyed(
                    shared,
                    &namespace,
                    (Source::Secret, name, s.items.as_ref(), s.optional),
                )
                .await?,
            );
        } else if volume.empty_dir.is_none() {
            continue;
        }
        let volume_dir = dir.join(&volume.name);
        std::fs::create_dir_all(&volume_dir)
            .map_err(|e| format!("creating {}: {e}", volume_dir.display()))?;
        for (path, content) in files {
            let file = volume_dir.join(&path);
            if path.split('/').any(|part| part == "..") || Path::new(&path).is_absolute() {
                return Err(format!(
                    "volume {}: the path {path} leaves the volume",
                    volume.name
                ));
            }
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            std::fs::write(&file, content).map_err(|e| format!("writing {}: {e}", file.display()))?;
        }
        made.insert(
            volume.name.clone(),
            Volume {
                dir: volume_dir,
                read_only: volume.empty_dir.is_none(),
            },
        );
    }
    Ok(made)
}

/// A token of ServiceAccount `account` bound to `pod` (valid while the pod exists), as a
/// kubelet requests it for a projected volume.
async fn request_token(
    shared: &Shared,
    pod: &Pod,
    namespace: &str,
    account: &str,
    audiences: Vec<String>,
    seconds: i64,
) -> Result<String, String> {
    let api: kube::Api<ServiceAccount> = kube::Api::namespaced(shared.client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences,
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let answer = api
        .create_token_request(account, &Default::default(), &request)
        .await
        .map_err(|e| format!("a token of ServiceAccount {namespace}/{account}: {e}"))?;
    answer
        .status
        .map(|s| s.token)
        .ok_or_else(|| format!("the token of ServiceAccount {namespace}/{account} came back empty"))
}

/// The files of the ConfigMap or Secret `name`: the keys `items` names (each at its path), or
/// every key at its own name. A missing object, or a key named that it lacks, is an error unless
/// the source is `optional`.
async fn keyed(
    shared: &Shared,
    namespace: &str,
    (kind, name, items, optional): (Source, &str, Option<&Vec<KeyToPath>>, Option<bool>),
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let data = match read(&shared.client, namespace, kind, name).await? {
        Some(data) => data,
        None if optional == Some(true) => BTreeMap::new(),
        None => return Err(format!("{kind:?} {namespace}/{name} not found")),
    };
    let Some(items) = items.filter(|items| !items.is_empty()) else {
        return Ok(data);
    };
    let mut files = BTreeMap::new();
    for item in items {
        match data.get(&item.key) {
            Some(value) => {
                files.insert(item.path.clone(), value.clone());
            }
            None if optional == Some(true) => {}
            None => return Err(format!("{kind:?} {namespace}/{name} has no key {}", item.key)),
        }
    }
    Ok(files)
}

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
    core::v1::{ConfigMap, KeyToPath, Pod, Secret, ServiceAccount},
};

use super::{Shared, containers::Downward};

/// How long a projected token lives when the volume does not say (a kubelet's default).
const TOKEN_SECONDS: i64 = 3607;

/// Writes the files of `pod`'s volumes under `dir/<volume>/`; returns the directory of each
/// volume made, by name. A source that cannot be read (a ConfigMap that is missing and not
/// optional, a token the API server refuses) is an error naming it.
pub(super) async fn write(
    shared: &Shared,
    pod: &Pod,
    ips: &[IpAddr],
    dir: &Path,
) -> Result<HashMap<String, PathBuf>, String> {
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
                if let Some(config_map) = &source.config_map {
                    let data =
                        config_map_data(shared, &namespace, &config_map.name, config_map.optional).await?;
                    files.extend(select(data, config_map.items.as_ref()));
                }
                if let Some(secret) = &source.secret {
                    let data = secret_data(shared, &namespace, &secret.name, secret.optional).await?;
                    files.extend(select(data, secret.items.as_ref()));
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
        } else if let Some(config_map) = &volume.config_map {
            let name = config_map.name.clone();
            let data = config_map_data(shared, &namespace, &name, config_map.optional).await?;
            files.extend(select(data, config_map.items.as_ref()));
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            let data = secret_data(shared, &namespace, &name, secret.optional).await?;
            files.extend(select(data, secret.items.as_ref()));
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
        made.insert(volume.name.clone(), volume_dir);
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

/// The keys `items` names (each at its path), or every key at its own name.
fn select(data: BTreeMap<String, Vec<u8>>, items: Option<&Vec<KeyToPath>>) -> BTreeMap<String, Vec<u8>> {
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .filter_map(|item| data.get(&item.key).map(|v| (item.path.clone(), v.clone())))
            .collect(),
        _ => data,
    }
}

async fn config_map_data(
    shared: &Shared,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(shared.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(map)) => {
            let mut data: BTreeMap<String, Vec<u8>> = map
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                map.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            Ok(data)
        }
        Ok(None) if optional == Some(true) => Ok(BTreeMap::new()),
        Ok(None) => Err(format!("ConfigMap {namespace}/{name} not found")),
        Err(e) => Err(format!("reading ConfigMap {namespace}/{name}: {e}")),
    }
}

async fn secret_data(
    shared: &Shared,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: kube::Api<Secret> = kube::Api::namespaced(shared.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(secret)) => Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        Ok(None) if optional == Some(true) => Ok(BTreeMap::new()),
        Ok(None) => Err(format!("Secret {namespace}/{name} not found")),
        Err(e) => Err(format!("reading Secret {namespace}/{name}: {e}")),
    }
}

//! Following one cluster's exchange namespace (a peer's, or this cluster's own) into the view.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{core::v1::ConfigMap, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use mcsd_crds::{
    ClusterId,
    about::v1beta1::ClusterProperty,
    names::{PROPERTY_CLUSTER_ID, PROPERTY_CLUSTERSET},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    exchange::LABEL_EXCHANGE,
    view::{Key, Kind, Object, View},
};

/// Why a peer is not followed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The peer names itself differently from how it was configured.
    #[error("peer configured as {configured:?} says it is cluster {actual:?}; refusing it")]
    WrongId {
        /// The configured name.
        configured: String,
        /// Its `cluster.clusterset.k8s.io`.
        actual: String,
    },
    /// The peer belongs to another ClusterSet.
    #[error("peer {peer:?} is a member of ClusterSet {theirs:?}, not {ours:?}; refusing it")]
    OtherClusterSet {
        /// The peer.
        peer: String,
        /// Its `clusterset.k8s.io`.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The peer has no identity.
    #[error("peer {peer:?} has no ClusterProperty {property}; refusing it")]
    NoIdentity {
        /// The peer.
        peer: String,
        /// The missing property.
        property: &'static str,
    },
}

/// Checks that `client` reaches the cluster `expected` of ClusterSet `clusterset`.
pub async fn verify(
    client: &Client,
    expected: &ClusterId,
    clusterset: &str,
) -> Result<Result<(), Refusal>, kube::Error> {
    let api: Api<ClusterProperty> = Api::all(client.clone());
    let Some(id) = api.get_opt(PROPERTY_CLUSTER_ID).await? else {
        return Ok(Err(Refusal::NoIdentity {
            peer: expected.to_string(),
            property: PROPERTY_CLUSTER_ID,
        }));
    };
    if id.spec.value != expected.as_str() {
        return Ok(Err(Refusal::WrongId {
            configured: expected.to_string(),
            actual: id.spec.value,
        }));
    }
    let Some(set) = api.get_opt(PROPERTY_CLUSTERSET).await? else {
        return Ok(Err(Refusal::NoIdentity {
            peer: expected.to_string(),
            property: PROPERTY_CLUSTERSET,
        }));
    };
    if set.spec.value != clusterset {
        return Ok(Err(Refusal::OtherClusterSet {
            peer: expected.to_string(),
            theirs: set.spec.value,
            ours: clusterset.to_string(),
        }));
    }
    Ok(Ok(()))
}

/// Follows `cluster`'s exchange records into `view` until `shutdown`; calls `changed` with the
/// keys each event changed, and sets `synced` once both kinds have been listed.
pub async fn follow(
    cluster: ClusterId,
    client: Client,
    namespace: String,
    view: Arc<Mutex<View>>,
    changed: impl Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
    synced: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let (records_done_tx, mut records_done) = watch::channel(false);
    let (slices_done_tx, mut slices_done) = watch::channel(false);
    let records = follow_kind::<ConfigMap>(
        cluster.clone(),
        Api::namespaced(client.clone(), &namespace),
        Kind::Record,
        Object::Record,
        view.clone(),
        changed.clone(),
        records_done_tx,
    );
    let slices = follow_kind::<EndpointSlice>(
        cluster.clone(),
        Api::namespaced(client, &namespace),
        Kind::Slice,
        Object::Slice,
        view,
        changed,
        slices_done_tx,
    );
    let sync = async {
        let _ = records_done.wait_for(|d| *d).await;
        let _ = slices_done.wait_for(|d| *d).await;
        let _ = synced.send(true);
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = records => {}
        _ = slices => {}
        _ = sync => {}
        _ = shutdown.cancelled() => {}
    }
}

async fn follow_kind<K>(
    cluster: ClusterId,
    api: Api<K>,
    kind: Kind,
    wrap: fn(K) -> Object,
    view: Arc<Mutex<View>>,
    changed: impl Fn(BTreeSet<Key>),
    done: watch::Sender<bool>,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().labels(LABEL_EXCHANGE);
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut buffer: Option<Vec<Object>> = None;
    while let Some(event) = stream.next().await {
        let keys = match event {
            Ok(watcher::Event::Init) => {
                buffer = Some(Vec::new());
                continue;
            }
            Ok(watcher::Event::InitApply(object)) => {
                buffer.get_or_insert_with(Vec::new).push(wrap(object));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let objects = buffer.take().unwrap_or_default();
                let keys = view
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .reset(&cluster, kind, objects);
                let _ = done.send(true);
                keys
            }
            Ok(watcher::Event::Apply(object)) => view
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .apply(&cluster, wrap(object))
                .into_iter()
                .collect(),
            Ok(watcher::Event::Delete(object)) => view
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .delete(&cluster, &wrap(object))
                .into_iter()
                .collect(),
            Err(error) => {
                tracing::warn!(%cluster, kind = ?kind, %error, "watching exchange records failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !keys.is_empty() {
            changed(keys);
        }
    }
}

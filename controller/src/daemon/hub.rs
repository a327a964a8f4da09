//! Hub mode, a member's side (`core/hub.rs` has the names and rules): while Secret
//! `<exchange namespace>/hub` holds a kubeconfig for the hub, this cluster's own exchange records
//! are copied into its hub namespace (`hub/publish.rs`), and the other members' records are read
//! from the hub into the view (`hub/read.rs`), watching only the service namespaces this cluster
//! has. A cluster also followed as a mesh peer is read from that peer, not from the hub, so a
//! ClusterSet moves between mesh and hub one cluster at a time without a gap.

mod publish;
mod read;

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{Api, Client, runtime::watcher};
use mcsd_crds::ClusterId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{local::Local, peers::Shared};
use crate::{
    cluster::driver,
    core::{
        guard::NamespacePolicy,
        hub::{KEY_KUBECONFIG, SECRET},
        view::Key,
    },
};

/// What the hub follower needs of the daemon.
#[allow(missing_debug_implementations)]
pub(super) struct Context<F> {
    /// The local API server.
    pub client: Client,
    /// This cluster.
    pub cluster: ClusterId,
    /// What every peer's follower shares (view, states, grace, leader, shutdown).
    pub shared: Shared<F>,
    /// The local caches: the namespaces that exist here decide what is read from the hub.
    pub local: Local,
    /// Which local namespaces may import.
    pub namespaces: NamespacePolicy,
}

/// Follows Secret `<exchange namespace>/hub` until shutdown: while it holds a usable kubeconfig,
/// this cluster publishes to and reads from that hub; a changed Secret restarts the session with
/// the new credentials (the records read stay meanwhile), a deleted one ends it and withdraws
/// what was read from the hub. `listed` is set once the Secret has been looked for and, if there
/// is one, the hub's records have been listed (or the hub found unreachable or refusing).
pub(super) async fn follow_hub<F>(context: Context<F>, listed: watch::Sender<bool>)
where
    F: Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
{
    let api: Api<Secret> = Api::namespaced(context.client.clone(), &context.shared.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={SECRET}"));
    let mut secrets = driver::Watch::new(api, config, |_| {});
    let mut wanted = WantedSecret::default();
    let mut running: Option<(String, CancellationToken, tokio::task::JoinHandle<()>)> = None;
    let listed = Arc::new(listed);
    loop {
        let event = tokio::select! {
            _ = context.shared.shutdown.cancelled() => break,
            e = secrets.next() => match e { Some(e) => e, None => break },
        };
        if secrets.feed(&mut wanted, event) == driver::Step::Listing {
            continue;
        }
        let now = wanted.current.as_ref().map(|s| (fingerprint(s), s.clone()));
        if running.as_ref().map(|r| &r.0) == now.as_ref().map(|n| &n.0) {
            if now.is_none() {
                listed.send_replace(true);
            }
            continue;
        }
        if let Some((_, stop, task)) = running.take() {
            stop.cancel();
            let _ = task.await;
        }
        let Some((print, secret)) = now else {
            context.shared.states.set_hub(None);
            read::withdraw_all(&context.shared, &context.cluster);
            tracing::info!("hub Secret removed: this cluster has left the hub");
            listed.send_replace(true);
            continue;
        };
        let stop = context.shared.shutdown.child_token();
        match session(&context, &secret, stop.clone(), listed.clone()).await {
            Ok(task) => running = Some((print, stop, task)),
            Err(why) => {
                tracing::error!(secret = %format!("{}/{SECRET}", context.shared.namespace), %why, "hub Secret ignored");
                context.shared.states.set_hub(None);
                read::withdraw_all(&context.shared, &context.cluster);
                listed.send_replace(true);
                running = Some((print, stop, tokio::spawn(async {})));
            }
        }
    }
    if let Some((_, stop, task)) = running {
        stop.cancel();
        let _ = task.await;
    }
}

/// What identifies the Secret's content (its data and the renewal its annotations ask for): a
/// change restarts the session.
fn fingerprint(secret: &Secret) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for (key, value) in secret.data.iter().flatten() {
        hash.update(key.as_bytes());
        hash.update([0]);
        hash.update(&value.0);
        hash.update([0]);
    }
    if let Some(renewal) = crate::core::peer_secret::Renewal::of(secret) {
        hash.update(format!("{renewal:?}").as_bytes());
    }
    format!("{:x}", hash.finalize())
}

/// A client for the hub from the Secret's kubeconfig, and the hub's address.
async fn hub_client(secret: &Secret) -> Result<(Client, String), String> {
    let data = secret.data.clone().unwrap_or_default();
    let text = data
        .get(KEY_KUBECONFIG)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .ok_or_else(|| format!("has no key {KEY_KUBECONFIG:?}"))?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text)
        .map_err(|e| format!("key {KEY_KUBECONFIG:?} is not a kubeconfig: {e}"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("key {KEY_KUBECONFIG:?} is not usable: {e}"))?;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    Ok((client, url))
}

/// Starts one session with the hub of `secret`: the publisher and the reader, until `stop`.
async fn session<F>(
    context: &Context<F>,
    secret: &Secret,
    stop: CancellationToken,
    listed: Arc<watch::Sender<bool>>,
) -> Result<tokio::task::JoinHandle<()>, String>
where
    F: Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
{
    let (hub, url) = hub_client(secret).await?;
    tracing::info!(hub = %url, "following the hub");
    context.shared.states.set_hub(Some(url.clone()));
    let spread = crate::cluster::driver::Spread::default();
    let publisher = publish::Publisher {
        local: context.client.clone(),
        hub: hub.clone(),
        exchange_namespace: context.shared.namespace.clone(),
        cluster: context.cluster.clone(),
        leader: context.shared.leader.clone(),
        states: context.shared.states.clone(),
        spread: spread.clone(),
    };
    let reader = read::Reader {
        hub: hub.clone(),
        url,
        cluster: context.cluster.clone(),
        shared: context.shared.clone(),
        local_namespaces: context.local.namespaces.clone(),
        namespaces_changed: context.local.namespaces_changed.clone(),
        policy: context.namespaces.clone(),
        spread,
    };
    // A Secret written by `mcsd join --hub` asks for its token to be renewed halfway through
    // its life, as a peer Secret does; the new token restarts this session (records stay).
    let renewing = crate::core::peer_secret::Renewal::of(secret).map(|renewal| {
        let target = super::peers::renew::Target {
            peer: hub.clone(),
            local: context.client.clone(),
            namespace: context.shared.namespace.clone(),
            secret: SECRET.to_string(),
        };
        // A token that cannot be renewed takes every member read from the hub down when it
        // expires: each says so (`mcsd status`, `mcsd why`, ClustersAtRisk) while it still works.
        let (shared, own) = (context.shared.clone(), context.cluster.clone());
        let report = move |problem: Option<String>| {
            let problem = problem.map(|p| format!("the hub credential: {p}; run `mcsd join --hub` again"));
            let members = read::hub_members(&shared, &own);
            for member in &members {
                shared
                    .states
                    .set_credential_problem(member.as_str(), problem.clone());
            }
            super::peers::change_view(&shared, |view| {
                members
                    .iter()
                    .flat_map(|m| view.warn(m, problem.clone()))
                    .collect()
            });
        };
        super::peers::renew::renew(
            target,
            renewal,
            report,
            context.shared.leader.clone(),
            stop.clone(),
        )
    });
    let span = tracing::info_span!("hub");
    Ok(tokio::spawn(
        async move {
            let renewing = async {
                if let Some(r) = renewing {
                    r.await;
                }
            };
            tokio::join!(publisher.run(stop.clone()), reader.run(stop, listed), renewing);
        }
        .instrument(span),
    ))
}

/// The hub Secret as the watch last had it.
#[derive(Debug, Default)]
struct WantedSecret {
    current: Option<Secret>,
    relisting: Option<Secret>,
}

impl driver::Index<Secret> for WantedSecret {
    fn begin_relist(&mut self) {
        self.relisting = None;
    }
    fn relisted(&mut self, secret: Secret) {
        self.relisting = Some(secret);
    }
    fn end_relist(&mut self) {
        self.current = self.relisting.take();
    }
    fn apply(&mut self, secret: Secret) {
        self.current = Some(secret);
    }
    fn delete(&mut self, _: Secret) {
        self.current = None;
    }
}

/// The local namespaces whose services this cluster may import: those that exist here and its
/// policy allows.
fn interest(
    namespaces: &kube::runtime::reflector::Store<Namespace>,
    policy: &NamespacePolicy,
) -> BTreeSet<String> {
    namespaces
        .state()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .filter(|n| policy.permits(n))
        .collect()
}

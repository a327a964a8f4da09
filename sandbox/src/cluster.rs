//! A whole simulated cluster: its API server (which can be stopped and started again with the
//! same store, port and CA), its controllers, its admin and ServiceAccount credentials.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ipnet::IpNet;
use parking_lot::Mutex;
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{Api, Behaviour, Ctx};
use crate::auth::UserInfo;
use crate::error::{Error, Result};
use crate::http::{ServerSettings, serve};
use crate::tls::Pki;

/// How to make a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The cluster's name (and its ClusterProperty `cluster.clusterset.k8s.io`).
    pub name: String,
    /// The ClusterSet it belongs to (ClusterProperty `clusterset.k8s.io`).
    pub clusterset: String,
    /// Service ranges: at most one per family; the first is the primary family.
    pub service_cidrs: Vec<IpNet>,
    /// Pod ranges: at most one per family.
    pub pod_cidrs: Vec<IpNet>,
    /// The port to serve on; 0 picks a free one (kept across API server restarts).
    pub port: u16,
    /// How often watches that ask for bookmarks get one.
    pub bookmark_interval: Duration,
    /// How many events the watch log keeps; older resourceVersions are `410 Gone`.
    pub event_log_capacity: usize,
    /// Install mcsd's CRDs and set the cluster's ClusterProperties at start.
    pub install_crds: bool,
    /// The shortest lifetime a TokenRequest may ask for: 10 minutes, as kube-apiserver; tests
    /// of token renewal lower it to run several lifetimes in seconds.
    pub min_token_lifetime: Duration,
}

impl ClusterConfig {
    /// The configuration of the `index`th cluster of a sandbox: `cluster-a`, `cluster-b`, …
    /// with services in `10.(96+i).0.0/16` + `fd00:10:96:<i+1>::/112` and pods in
    /// `10.(160+i).0.0/16` + `fd00:10:244:<i+1>::/112`, so addresses tell clusters apart.
    pub fn nth(index: usize) -> Self {
        let letter = (b'a' + (index % 26) as u8) as char;
        let name = if index < 26 {
            format!("cluster-{letter}")
        } else {
            format!("cluster-{letter}{}", index / 26)
        };
        let i = index % 64;
        let parse = |s: String| s.parse::<IpNet>().expect("well-formed ranges");
        Self {
            name,
            clusterset: "sandbox".into(),
            service_cidrs: vec![
                parse(format!("10.{}.0.0/16", 96 + i)),
                parse(format!("fd00:10:96:{:x}::/112", i + 1)),
            ],
            pod_cidrs: vec![
                parse(format!("10.{}.0.0/16", 160 + i)),
                parse(format!("fd00:10:244:{:x}::/112", i + 1)),
            ],
            port: 0,
            bookmark_interval: Duration::from_secs(5),
            event_log_capacity: 100_000,
            install_crds: true,
            min_token_lifetime: Duration::from_secs(600),
        }
    }

    /// The first cluster's configuration with another name.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Self::nth(0)
        }
    }
}

#[derive(Debug)]
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// A running simulated cluster.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    api: Arc<Api>,
    pki: Pki,
    addr: SocketAddr,
    admin_token: String,
    server: Mutex<Option<Running>>,
    controllers: Running,
    held: Arc<tokio::sync::watch::Sender<BTreeSet<String>>>,
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Cluster {
    /// Starts a cluster: the API server on `127.0.0.1`, the controllers, the namespaces
    /// `default`, `kube-system`, `kube-public` and `kube-node-lease`, and (when configured) the
    /// CRDs and ClusterProperties.
    pub async fn start(config: ClusterConfig) -> Result<Self> {
        let check = |ranges: &[IpNet], what: &str| -> Result<()> {
            if ranges.is_empty() {
                return Err(Error::Config(format!("{what}: at least one range is needed")));
            }
            Ok(())
        };
        check(&config.service_cidrs, "service_cidrs")?;
        check(&config.pod_cidrs, "pod_cidrs")?;
        let api = Arc::new(Api::new(
            Behaviour {
                cluster: config.name.clone(),
            },
            config.service_cidrs.clone(),
            config.pod_cidrs.clone(),
            config.event_log_capacity,
        ));
        let admin_token = crate::meta::new_token();
        api.auth().add_token(admin_token.clone(), UserInfo::admin());
        let pki = Pki::new(&config.name)?;
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], config.port))).await?;
        let addr = listener.local_addr()?;

        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            crate::controllers::run(api.clone(), shutdown.clone())
                .instrument(tracing::info_span!("controllers", cluster = %config.name)),
        );
        let controllers = Running { shutdown, task };
        let cluster = Self {
            config,
            api,
            pki,
            addr,
            admin_token,
            server: Mutex::new(None),
            controllers,
            held: Arc::new(tokio::sync::watch::Sender::new(BTreeSet::new())),
        };
        cluster.serve(listener);
        let ns = cluster.api.resource("", "namespaces").expect("built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            cluster.api.create(&ns, "v1", "", body, &Ctx::system("sandbox"))?;
        }
        if cluster.config.install_crds {
            cluster.install_crds()?;
        }
        Ok(cluster)
    }

    fn serve(&self, listener: TcpListener) {
        let shutdown = CancellationToken::new();
        let settings = ServerSettings {
            bookmark_interval: self.config.bookmark_interval,
            min_token_lifetime: self.config.min_token_lifetime,
            address: self.addr.to_string(),
            held: self.held.clone(),
        };
        let task = tokio::spawn(
            serve(
                listener,
                self.pki.server.clone(),
                self.api.clone(),
                settings,
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("apiserver", cluster = %self.config.name)),
        );
        *self.server.lock() = Some(Running { shutdown, task });
    }

    /// Installs mcsd's CRDs (`mcsd_crds::generate::crds()`) and sets the ClusterProperties
    /// `cluster.clusterset.k8s.io` (the cluster's name) and `clusterset.k8s.io`. Idempotent.
    pub fn install_crds(&self) -> Result<()> {
        let crd_info = self
            .api
            .resource("apiextensions.k8s.io", "customresourcedefinitions")
            .expect("built in");
        let ctx = Ctx::system("sandbox");
        for generated in mcsd_crds::generate::crds()? {
            let body = serde_json::to_value(&generated.crd)?;
            match self.api.create(&crd_info, "v1", "", body, &ctx) {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let prop = self
            .api
            .resource(mcsd_crds::names::ABOUT_GROUP, "clusterproperties")
            .ok_or_else(|| Error::Config("the ClusterProperty CRD did not register".into()))?;
        for (name, value) in [
            (mcsd_crds::names::PROPERTY_CLUSTER_ID, self.config.name.as_str()),
            (
                mcsd_crds::names::PROPERTY_CLUSTERSET,
                self.config.clusterset.as_str(),
            ),
        ] {
            let body = json!({
                "apiVersion": format!("{}/{}", mcsd_crds::names::ABOUT_GROUP, prop.storage_version),
                "kind": "ClusterProperty",
                "metadata": {"name": name},
                "spec": {"value": value},
            });
            match self.api.create(&prop, &prop.storage_version, "", body, &ctx) {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// `https://127.0.0.1:PORT`.
    pub fn api_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The API server's address.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster CA's certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The admin's bearer token (`system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The in-process API (store, controllers' view), for tests that need to reach behind HTTP.
    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// A kubeconfig for a bearer token, with the cluster's CA; context and cluster are named
    /// after the cluster.
    pub fn kubeconfig_for_token(&self, user: &str, token: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.pki.ca_pem.as_bytes());
        let name = &self.config.name;
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {user}\ncurrent-context: {name}\n",
            url = self.api_url(),
        )
    }

    /// The admin's kubeconfig.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_for_token(&format!("{}-admin", self.config.name), &self.admin_token)
    }

    /// A kube client for a kubeconfig.
    pub async fn client_from_kubeconfig(yaml: &str) -> Result<kube::Client> {
        Ok(kube::Client::try_from(Self::config_from_kubeconfig(yaml).await?)?)
    }

    /// The kube client configuration a kubeconfig describes (its current context).
    pub async fn config_from_kubeconfig(yaml: &str) -> Result<kube::Config> {
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(yaml).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))
    }

    /// A kube client with the admin's rights, over HTTPS with the cluster's CA.
    pub async fn admin_client(&self) -> Result<kube::Client> {
        Self::client_from_kubeconfig(&self.kubeconfig_yaml()).await
    }

    /// A bearer token for the ServiceAccount `namespace/name`, creating the namespace and the
    /// ServiceAccount when they are missing. It authenticates as
    /// `system:serviceaccount:<namespace>:<name>` and has exactly the rights RBAC grants it. It
    /// does not expire, but deleting the ServiceAccount revokes it (as a real cluster's legacy
    /// and bound tokens are).
    pub fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        self.ensure_service_account(namespace, name)?;
        let (token, _) = self
            .api
            .auth()
            .issue_service_account_token(namespace, name, None)?;
        Ok(token)
    }

    /// [`Self::service_account_token`], valid for `ttl` only: past it, every request with it
    /// gets `401 Unauthorized`, as with an expired bound token. Unlike a TokenRequest (at least
    /// 10 minutes), any lifetime is allowed, so that tests can see a token expire.
    pub fn service_account_token_with_expiry(
        &self,
        namespace: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<String> {
        self.ensure_service_account(namespace, name)?;
        let (token, _) = self
            .api
            .auth()
            .issue_service_account_token(namespace, name, Some(ttl))?;
        Ok(token)
    }

    /// How many tokens this cluster has issued for the ServiceAccount `namespace/name` (through
    /// TokenRequests or the methods above), expired and revoked ones included: what a test counts
    /// to see who asked for tokens how often.
    pub fn tokens_issued(&self, namespace: &str, name: &str) -> usize {
        self.api.auth().tokens_issued(namespace, name)
    }

    fn ensure_service_account(&self, namespace: &str, name: &str) -> Result<()> {
        let ctx = Ctx::system("sandbox");
        let ns_info = self.api.resource("", "namespaces").expect("built in");
        if self.api.get(&ns_info, "", namespace).is_err() {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
            match self.api.create(&ns_info, "v1", "", body, &ctx) {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let sa_info = self.api.resource("", "serviceaccounts").expect("built in");
        if self.api.get(&sa_info, namespace, name).is_err() {
            let body = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
            match self.api.create(&sa_info, "v1", namespace, body, &ctx) {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A kubeconfig for the ServiceAccount `namespace/name` (see [`Self::service_account_token`]).
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<String> {
        let token = self.service_account_token(namespace, name)?;
        Ok(self.kubeconfig_for_token(&format!("system:serviceaccount:{namespace}:{name}"), &token))
    }

    /// A kube client for the ServiceAccount `namespace/name`.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<kube::Client> {
        Self::client_from_kubeconfig(&self.service_account_kubeconfig(namespace, name)?).await
    }

    /// Whether the API server is serving.
    pub fn is_serving(&self) -> bool {
        self.server.lock().is_some()
    }

    /// Stops the API server: the port closes and every open connection and watch is cut, as when
    /// a real API server goes away. The store and the controllers keep running.
    pub async fn stop_api_server(&self) {
        let running = self.server.lock().take();
        if let Some(r) = running {
            r.shutdown.cancel();
            let _ = r.task.await;
        }
    }

    /// Starts the API server again on the same address, with the same CA, tokens and data.
    pub async fn start_api_server(&self) -> Result<()> {
        if self.is_serving() {
            return Ok(());
        }
        let listener = bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    /// Holds every request for `resource` (a plural name, `leases`) unanswered: the API server
    /// accepts the connection and the request and says nothing, as one whose storage hangs.
    /// Held requests are carried out, late, when [`Cluster::release_requests`] is called, unless
    /// their client has closed the connection meanwhile.
    pub fn hold_requests(&self, resource: &str) {
        self.held.send_modify(|set| {
            set.insert(resource.to_string());
        });
    }

    /// Answers `resource`'s requests again, the held ones first.
    pub fn release_requests(&self, resource: &str) {
        self.held.send_modify(|set| {
            set.remove(resource);
        });
    }

    /// Stops the API server and the controllers.
    pub async fn shutdown(self) {
        self.stop_api_server().await;
        self.controllers.shutdown.cancel();
        let _ = self.controllers.task.await;
    }
}

//! Building API clients from kubeconfig files, with errors that name the file and the problem.

use std::path::{Path, PathBuf};

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read or parsed.
    #[error("cannot read kubeconfig {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig does not describe a usable cluster.
    #[error("kubeconfig {} is not usable: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig was given and none could be inferred (in-cluster or `~/.kube/config`).
    #[error("no kubeconfig given and none found (in-cluster or ~/.kube/config): {0}")]
    Infer(kube::config::InferConfigError),
    /// The client could not be built (TLS set-up, proxy).
    #[error("cannot build a client for {what}: {source}")]
    Client {
        /// Which cluster.
        what: String,
        /// Why.
        source: kube::Error,
    },
}

/// A client and the address of the API server it talks to (for error messages).
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Connection {
    /// The client.
    pub client: Client,
    /// The API server's URL.
    pub url: String,
    /// What the client was made from, for a second, independent client (leader election).
    pub config: Config,
}

fn connection(config: Config, what: &str) -> Result<Connection, Error> {
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config.clone()).map_err(|source| Error::Client {
        what: what.to_string(),
        source,
    })?;
    Ok(Connection { client, url, config })
}

/// A connection to the cluster `path` describes (its current context).
pub async fn connect_file(path: &Path) -> Result<Connection, Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
    connection(config, &path.display().to_string())
}

/// A connection from `path` if given, else from the environment (in-cluster, `KUBECONFIG`,
/// `~/.kube/config`).
pub async fn connect(path: Option<&Path>) -> Result<Connection, Error> {
    match path {
        Some(path) => connect_file(path).await,
        None => {
            let config = Config::infer().await.map_err(Error::Infer)?;
            connection(config, "the inferred cluster")
        }
    }
}

/// A client for the cluster `path` describes (its current context).
pub async fn client_from(path: &Path) -> Result<Client, Error> {
    connect_file(path).await.map(|c| c.client)
}

/// A client from `path` if given, else from the environment (in-cluster, `KUBECONFIG`, `~/.kube/config`).
pub async fn client(path: Option<&Path>) -> Result<Client, Error> {
    connect(path).await.map(|c| c.client)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn error_of(path: &Path) -> String {
        match client_from(path).await {
            Ok(_) => panic!("{} should not make a client", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_is_one_line_naming_the_file() {
        let err = error_of(Path::new("/nonexistent/peer.kubeconfig")).await;
        assert!(
            err.starts_with("cannot read kubeconfig /nonexistent/peer.kubeconfig"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[tokio::test]
    async fn a_kubeconfig_without_a_usable_context_says_so() {
        let dir = std::env::temp_dir().join(format!("mcsd-kubeconfig-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
        )
        .unwrap();
        let err = error_of(&path).await;
        assert!(
            err.starts_with(&format!("kubeconfig {} is not usable", path.display())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! `DIR/sandbox.json`: the clusters of a ClusterSet running on this machine, as `mcsd sandbox`
//! and the real tier (`tests/kube/up.sh`) list them for what reaches them (`mcsd why --sandbox`,
//! the end-to-end tests, a newcomer's scripts). One object per cluster, `cluster-a` first:
//!
//! ```text
//!  name, kubeconfig, api, dns, admin        every ClusterSet on this machine
//!  cluster_dns, reference_dns               the real tier: CoreDNS with the forward stub, and
//!                                           CoreDNS's own MCS support
//!  pod_network, pod_dns                     whether pods have a network (the real tier's), and
//!                                           the cluster DNS's address they reach, port 53
//!  helm_release                             the Helm release mcsd was installed with (the real
//!                                           tier's `--install helm`; dns and admin are then
//!                                           its Services' addresses)
//! ```

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the ClusterSet's directory.
pub const FILE: &str = "sandbox.json";

/// One cluster of the ClusterSet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `cluster-a`, …
    pub name: String,
    /// Its admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Its API server's URL.
    pub api: String,
    /// Its mcsd's DNS server (UDP and TCP).
    pub dns: SocketAddr,
    /// Its mcsd's admin listener (`/metrics`, `/readyz`, `/why`).
    pub admin: SocketAddr,
    /// The cluster DNS: CoreDNS forwarding `clusterset.local` to mcsd (real tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_dns: Option<SocketAddr>,
    /// CoreDNS's own `multicluster` option over the same cluster (real tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_dns: Option<SocketAddr>,
    /// Whether its pods have a network, run their commands and take `kubectl exec`.
    #[serde(default)]
    pub pod_network: bool,
    /// Where its pods reach the cluster DNS, port 53 (with the pod network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_dns: Option<SocketAddr>,
    /// The Helm release mcsd runs from, when it was installed with Helm (its pods then serve
    /// `dns` and `admin` through the release's Services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_release: Option<String>,
}

/// The members a file lists.
pub fn parse(text: &str) -> Result<Vec<Member>, serde_json::Error> {
    serde_json::from_str(text)
}

/// The file's text for `members`.
pub fn render(members: &[Member]) -> String {
    serde_json::to_string_pretty(members).expect("members serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_sandbox_writes_reads_back_and_the_real_tiers_fields_are_optional() {
        let member = Member {
            name: "cluster-a".into(),
            kubeconfig: "/tmp/s/cluster-a.kubeconfig".into(),
            api: "https://127.0.0.1:6443".into(),
            dns: "127.0.0.1:5353".parse().unwrap(),
            admin: "127.0.0.1:9090".parse().unwrap(),
            cluster_dns: None,
            reference_dns: None,
            pod_network: false,
            pod_dns: None,
            helm_release: None,
        };
        let text = render(std::slice::from_ref(&member));
        assert!(
            !text.contains("cluster_dns") && text.contains("\"pod_network\": false"),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), [member]);
        let real = r#"[{"name":"cluster-b","kubeconfig":"k","api":"a","dns":"127.0.0.1:1","admin":"127.0.0.1:2",
            "cluster_dns":"127.0.0.1:3","reference_dns":"127.0.0.1:4","pod_network":true,"pod_dns":"203.0.113.2:53"}]"#;
        let read = parse(real).unwrap();
        assert!(read[0].pod_network && read[0].pod_dns == Some("203.0.113.2:53".parse().unwrap()));
    }
}

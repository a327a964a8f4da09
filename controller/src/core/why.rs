//! `mcsd why NAME`: explains a DNS name of the zone.
//!
//! ```text
//!  mcsd why NAME ──GET /why?name=NAME──▶ admin listener of a running mcsd
//!                                          │ Sources::explain: the daemon's own view
//!                                          │   (every cluster's records, exclusions, peer states,
//!                                          │   this cluster's import and slices) and the zone
//!  text (or -o json) ◀── Explanation (JSON) ┘
//! ```
//!
//! The explanation is computed inside the daemon because only it knows what the API objects do
//! not say: which peers are excluded and why, what a refused peer publishes, and what its own DNS
//! server answers at this moment (asked of the very zone it serves, through the same handler).
//!
//! The model (what an explanation holds) is here; `core/why/render.rs` turns it into text;
//! `commands/why.rs` asks a running mcsd for it; the daemon's side, which computes it from what
//! the daemon holds, is `daemon/why.rs`.

mod render;

use serde::{Deserialize, Serialize};

use crate::core::view::Key;

pub use self::render::render;

/// What a name of the zone is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Form {
    /// `<service>.<namespace>.svc.<zone>`.
    Service,
    /// `_<port>._<protocol>.<service>.<namespace>.svc.<zone>`.
    Srv {
        /// The port name.
        port: String,
        /// `tcp`, `udp` or `sctp`.
        protocol: String,
    },
    /// `<hostname>.<cluster>.<service>.<namespace>.svc.<zone>`: one endpoint of a headless service.
    Hostname {
        /// The endpoint's hostname.
        hostname: String,
        /// Its cluster.
        cluster: String,
    },
    /// A name of the zone that is not a service's (the apex, `<namespace>.svc`, …).
    Other,
    /// Not in the zone: the server refuses it.
    OutsideZone,
}

/// What the server answers for one query type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// `A`, `AAAA`, `SRV`.
    pub qtype: String,
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`.
    pub rcode: String,
    /// The answer section's data, one record a line (`10.96.0.10`).
    pub records: Vec<String>,
}

/// A condition, as the API object carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cond {
    /// Type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// This cluster's ServiceImport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportFacts {
    /// `ClusterSetIP` or `Headless`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `spec.ips`.
    pub ips: Vec<String>,
    /// `spec.ports`, as `name 80/TCP`.
    pub ports: Vec<String>,
    /// `status.clusters`.
    pub clusters: Vec<String>,
    /// `status.conditions`.
    pub conditions: Vec<Cond>,
}

/// What one cluster of the ClusterSet contributes to the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// The cluster id.
    pub cluster: String,
    /// Whether this daemon holds an export record of the service from the cluster.
    pub exports: bool,
    /// When the cluster's ServiceExport was created (the conflict precedence key).
    pub since: Option<String>,
    /// The ports it exports.
    pub ports: Vec<String>,
    /// Of those, the ports its endpoints serve in the import (strict routing).
    pub serving: Vec<String>,
    /// Whether its endpoints are part of the import.
    pub contributes: bool,
    /// Why the cluster is left out of the merge, when it is.
    pub excluded: Option<String>,
    /// The peer's connection state (`None` for this cluster).
    pub peer: Option<String>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointFacts {
    /// Its addresses.
    pub addresses: Vec<String>,
    /// Its hostname.
    pub hostname: Option<String>,
    /// Ready (nil counts as ready).
    pub ready: bool,
}

/// One EndpointSlice of the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceFacts {
    /// The slice's name.
    pub name: String,
    /// The cluster its endpoints are in.
    pub cluster: String,
    /// Whether the slice is written in this cluster (false: a left-out cluster's published one).
    pub imported: bool,
    /// Its ports.
    pub ports: Vec<String>,
    /// Its endpoints.
    pub endpoints: Vec<EndpointFacts>,
}

/// Everything `mcsd why` says about a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The name asked about, as a fully qualified name.
    pub name: String,
    /// The cluster whose mcsd answers.
    pub cluster: String,
    /// Whether that mcsd holds its cluster's Lease (only the leader writes).
    pub leader: bool,
    /// Whether its watches have listed and its writers run.
    pub ready: bool,
    /// What kind of name it is.
    pub form: Form,
    /// The service the name belongs to.
    pub service: Option<(String, String)>,
    /// What the DNS server answers now.
    pub answers: Vec<DnsAnswer>,
    /// Whether the service's namespace exists in this cluster (imports exist only there).
    pub namespace_exists: bool,
    /// Whether a Service of that name exists in this cluster.
    pub local_service: bool,
    /// This cluster's ServiceExport's conditions, when it exports the service.
    pub export_here: Option<Vec<Cond>>,
    /// This cluster's ServiceImport.
    pub import: Option<ImportFacts>,
    /// Every cluster that exports the service, or is known to and is left out.
    pub clusters: Vec<ClusterFacts>,
    /// The conflicts between the exports.
    pub conflicts: Vec<String>,
    /// The slices: this cluster's imported ones, then what left-out clusters publish.
    pub slices: Vec<SliceFacts>,
    /// What is left out and why, one line each.
    pub left_out: Vec<String>,
    /// What will be left out unless fixed, when and why (credentials that cannot be renewed),
    /// one line each.
    #[serde(default)]
    pub at_risk: Vec<String>,
}

/// Splits `name` into its form and service, for a zone named `origin`.
pub fn parse(name: &str, origin: &str) -> (Form, Option<Key>) {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let origin = origin.trim_end_matches('.').to_ascii_lowercase();
    let relative = if name == origin {
        ""
    } else if let Some(r) = name.strip_suffix(&format!(".{origin}")) {
        r
    } else {
        return (Form::OutsideZone, None);
    };
    let labels: Vec<&str> = relative.split('.').collect();
    let key = |i: usize| Key::new(labels[i + 1], labels[i]);
    match labels.as_slice() {
        [_, _, "svc"] => (Form::Service, Some(key(0))),
        [port, protocol, _, _, "svc"] if port.starts_with('_') && protocol.starts_with('_') => (
            Form::Srv {
                port: port[1..].to_string(),
                protocol: protocol[1..].to_string(),
            },
            Some(key(2)),
        ),
        [hostname, cluster, _, _, "svc"] => (
            Form::Hostname {
                hostname: hostname.to_string(),
                cluster: cluster.to_string(),
            },
            Some(key(2)),
        ),
        _ => (Form::Other, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_into_form_and_service() {
        let svc = |ns: &str, n: &str| Some(Key::new(ns, n));
        let origin = "clusterset.local";
        assert_eq!(
            parse("hello.demo.svc.clusterset.local.", origin),
            (Form::Service, svc("demo", "hello"))
        );
        assert_eq!(
            parse("Hello.Demo.svc.clusterset.local", origin),
            (Form::Service, svc("demo", "hello"))
        );
        assert_eq!(
            parse("_http._tcp.hello.demo.svc.clusterset.local", origin),
            (
                Form::Srv {
                    port: "http".into(),
                    protocol: "tcp".into()
                },
                svc("demo", "hello")
            )
        );
        assert_eq!(
            parse("web-0.cluster-a.hello.demo.svc.clusterset.local", origin),
            (
                Form::Hostname {
                    hostname: "web-0".into(),
                    cluster: "cluster-a".into()
                },
                svc("demo", "hello")
            )
        );
        assert_eq!(parse("demo.svc.clusterset.local", origin), (Form::Other, None));
        assert_eq!(parse("clusterset.local", origin), (Form::Other, None));
        assert_eq!(
            parse("hello.demo.svc.cluster.local", origin),
            (Form::OutsideZone, None)
        );
        assert_eq!(parse("xclusterset.local", origin), (Form::OutsideZone, None));
    }
}

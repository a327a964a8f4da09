//! The domain structs the zone is built from. They carry what DNS needs and nothing of Kubernetes.

use std::net::IpAddr;

/// How an import is reached, which decides its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ImportKind {
    /// A virtual IP per address family: A/AAAA answer `ips`.
    #[default]
    ClusterSetIp,
    /// No virtual IP: A/AAAA answer every ready endpoint address of every cluster.
    Headless,
}

/// Transport protocol of a port, as in the `_<proto>` label of SRV names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Protocol {
    /// `_tcp`
    #[default]
    Tcp,
    /// `_udp`
    Udp,
    /// `_sctp`
    Sctp,
}

impl Protocol {
    /// The SRV label without the underscore.
    pub fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// One port of an import.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Port {
    /// The port name; unnamed ports (`None` or empty) get no `_<port>._<proto>` SRV name.
    pub name: Option<String>,
    /// The protocol.
    pub protocol: Protocol,
    /// The port number.
    pub port: u16,
}

/// A ServiceImport as DNS sees it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Import {
    /// Namespace of the import.
    pub namespace: String,
    /// Name of the import (= the exported Service's name).
    pub name: String,
    /// ClusterSetIP or Headless.
    pub kind: ImportKind,
    /// The clusterset IPs (ClusterSetIP only); IPv4 and IPv6 may both be present.
    pub ips: Vec<IpAddr>,
    /// The ports.
    pub ports: Vec<Port>,
}

/// One endpoint of one source cluster.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Its hostname; without one, each address is named by its dashed form (`10-1-2-3`).
    pub hostname: Option<String>,
    /// Whether it is ready; only ready endpoints are answered.
    pub ready: bool,
}

/// The service an endpoint set or an import belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl ServiceRef {
    /// A reference to `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl Import {
    /// The service this import names.
    pub fn service_ref(&self) -> ServiceRef {
        ServiceRef::new(self.namespace.clone(), self.name.clone())
    }
}

/// The DNS label of an address used when an endpoint has no hostname: `10.1.2.3` → `10-1-2-3`,
/// `5678:abcd::1` → `5678-abcd--1`, and a trailing `-` gets a `0` (`fd00::` → `fd00--0`).
pub fn dashed_ip(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut s = v6.to_string().replace(':', "-");
            if s.ends_with('-') {
                s.push('0');
            }
            s
        }
    }
}

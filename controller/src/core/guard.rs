//! What a peer's exchange records may put into this cluster. A member cluster can be
//! compromised: whoever holds its admin rights can write any record into its exchange namespace,
//! and every other cluster reads them. Read-only peering already keeps one member from changing
//! another's records; this guard decides which of a peer's own records, and which of their
//! addresses, are taken at all.
//!
//! * **Namespaces**: records for a namespace the policy denies are ignored (by default every
//!   `kube-*` namespace and the exchange namespace; `--allow-namespace` and `--deny-namespace`
//!   change that). The export controller applies the same policy to local ServiceExports.
//! * **Addresses**: an endpoint address that is unspecified, loopback, link-local (which covers
//!   169.254.169.254, the cloud metadata service), multicast or broadcast, not of its slice's
//!   address type, or outside the ranges declared for the peer, is dropped before it reaches an
//!   EndpointSlice or DNS; the rest of the slice stays.
//! * **Names**: a record whose port names, or a slice whose endpoint hostnames or port names, are
//!   not DNS labels is ignored whole, never half-applied.
//! * **Limits**: records per peer, endpoints per service per peer, and bytes per record; past one
//!   the excess is refused, and no other peer is affected.
//!
//! Pure: the view asks, and reports what was refused.

use std::net::{IpAddr, Ipv4Addr};

/// Why something a peer published was refused: the `reason` label of
/// `mcsd_peer_records_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// A record for a namespace the policy denies.
    Namespace,
    /// An unspecified address (`0.0.0.0`, `::`).
    Unspecified,
    /// A loopback address.
    Loopback,
    /// A link-local address (IPv4 `169.254.0.0/16`, IPv6 `fe80::/10`).
    LinkLocal,
    /// A multicast or broadcast address.
    Multicast,
    /// Not an address of the slice's address type (or not an address at all).
    WrongFamily,
    /// Outside the ranges declared for the peer.
    OutsideRanges,
    /// An endpoint hostname that is not a DNS label.
    Hostname,
    /// A port name that is not a DNS label.
    PortName,
    /// More records than the peer may publish.
    TooManyRecords,
    /// More endpoints for one service than a peer may publish.
    TooManyEndpoints,
    /// A record larger than a peer may publish.
    TooLarge,
    /// A record that names another cluster (or another service) than where it was read: a
    /// peer, or a hub member, speaking for someone else.
    Misattributed,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Namespace => "namespace_denied",
            Self::Unspecified => "address_unspecified",
            Self::Loopback => "address_loopback",
            Self::LinkLocal => "address_link_local",
            Self::Multicast => "address_multicast",
            Self::WrongFamily => "address_family",
            Self::OutsideRanges => "address_outside_ranges",
            Self::Hostname => "invalid_hostname",
            Self::PortName => "invalid_port_name",
            Self::TooManyRecords => "too_many_records",
            Self::TooManyEndpoints => "too_many_endpoints",
            Self::TooLarge => "record_too_large",
            Self::Misattributed => "names_another_cluster",
        }
    }

    /// Every reason, for metrics that list them all.
    pub const ALL: [Refusal; 13] = [
        Self::Namespace,
        Self::Unspecified,
        Self::Loopback,
        Self::LinkLocal,
        Self::Multicast,
        Self::WrongFamily,
        Self::OutsideRanges,
        Self::Hostname,
        Self::PortName,
        Self::TooManyRecords,
        Self::TooManyEndpoints,
        Self::TooLarge,
        Self::Misattributed,
    ];
}

/// Which namespaces may export (locally) and be imported (from peers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacePolicy {
    allow: Vec<String>,
    deny: Vec<String>,
}

/// One namespace pattern: a name, or a prefix ending in `*`.
fn matches(pattern: &str, namespace: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => namespace.starts_with(prefix),
        None => pattern == namespace,
    }
}

impl NamespacePolicy {
    /// The policy: `deny` and, always, `kube-*` and the exchange namespace, unless `allow` names
    /// them; an allowed namespace wins over a denied one.
    pub fn new(exchange_namespace: &str, allow: Vec<String>, deny: Vec<String>) -> Self {
        let mut denied = vec!["kube-*".to_string(), exchange_namespace.to_string()];
        denied.extend(deny);
        Self { allow, deny: denied }
    }

    /// Whether `namespace` may export and be imported.
    pub fn permits(&self, namespace: &str) -> bool {
        self.allow.iter().any(|p| matches(p, namespace)) || !self.deny.iter().any(|p| matches(p, namespace))
    }

    /// Why `namespace` is denied, in one sentence with the fix.
    pub fn why_denied(&self, namespace: &str) -> String {
        let pattern = self
            .deny
            .iter()
            .find(|p| matches(p, namespace))
            .map(String::as_str)
            .unwrap_or(namespace);
        format!(
            "namespace {namespace} is denied by mcsd's namespace policy ({pattern}); \
             run mcsd with --allow-namespace={namespace} to allow it"
        )
    }
}

/// Limits on what one peer may publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Export records (exported services).
    pub records: usize,
    /// Endpoints of one service, across that peer's slices.
    pub endpoints_per_service: usize,
    /// Bytes of one record (an export record's JSON; a slice's addresses and names).
    pub bytes_per_record: usize,
}

/// The export records a reader takes from one peer, by default (a hub's quota per member too).
pub const RECORDS: usize = 20_000;

impl Default for Limits {
    /// Sized for real clusters: 20,000 exported services per cluster (twice the largest tested),
    /// 10,000 endpoints per service per cluster (ten full 1,000-endpoint slices), 256 KiB per
    /// record (an export record with hundreds of ports, or a 1,000-endpoint slice, is a few
    /// tens of KiB).
    fn default() -> Self {
        Self {
            records: RECORDS,
            endpoints_per_service: 10_000,
            bytes_per_record: 256 * 1024,
        }
    }
}

/// The guard: the namespace policy and the limits.
#[derive(Clone, Debug)]
pub struct Guard {
    /// Which namespaces may export and be imported.
    pub namespaces: NamespacePolicy,
    /// What one peer may publish.
    pub limits: Limits,
}

impl Guard {
    /// Whether an endpoint address in a slice of `address_type` may be taken (the ranges declared
    /// per peer are the view's to check).
    pub fn address(&self, address_type: &str, address: &str) -> Result<(), Refusal> {
        let ip: IpAddr = address.parse().map_err(|_| Refusal::WrongFamily)?;
        let family_ok = matches!(
            (address_type, ip),
            ("IPv4", IpAddr::V4(_)) | ("IPv6", IpAddr::V6(_))
        );
        if !family_ok {
            return Err(Refusal::WrongFamily);
        }
        classify(ip)
    }
}

/// Refuses the addresses no Service endpoint of another cluster can legitimately have.
fn classify(ip: IpAddr) -> Result<(), Refusal> {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    if let Some(v4) = v4 {
        return classify_v4(v4);
    }
    let IpAddr::V6(v6) = ip else {
        unreachable!("v4 handled above")
    };
    if v6.is_unspecified() {
        Err(Refusal::Unspecified)
    } else if v6.is_loopback() {
        Err(Refusal::Loopback)
    } else if v6.is_unicast_link_local() {
        Err(Refusal::LinkLocal)
    } else if v6.is_multicast() {
        Err(Refusal::Multicast)
    } else {
        Ok(())
    }
}

fn classify_v4(v4: Ipv4Addr) -> Result<(), Refusal> {
    if v4.is_unspecified() || v4.octets()[0] == 0 {
        Err(Refusal::Unspecified)
    } else if v4.is_loopback() {
        Err(Refusal::Loopback)
    } else if v4.is_link_local() {
        Err(Refusal::LinkLocal)
    } else if v4.is_multicast() || v4.is_broadcast() {
        Err(Refusal::Multicast)
    } else {
        Ok(())
    }
}

/// Whether `name` is a DNS label (RFC 1123): 1–63 of `a-z`, `0-9`, `-`, alphanumeric at both ends.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// What an address refusal looks like to a user: "is link-local", for "left out: cluster-a's
/// endpoint 169.254.169.254 is link-local".
pub fn describe(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Namespace => "is in a namespace the policy denies",
        Refusal::Unspecified => "is unspecified",
        Refusal::Loopback => "is loopback",
        Refusal::LinkLocal => "is link-local",
        Refusal::Multicast => "is multicast or broadcast",
        Refusal::WrongFamily => "is not an address of its slice's address type",
        Refusal::OutsideRanges => "is outside the ranges declared for the peer",
        Refusal::Hostname => "has a hostname that is not a DNS label",
        Refusal::PortName => "has a port name that is not a DNS label",
        Refusal::TooManyRecords => "is past the peer's limit of records",
        Refusal::TooManyEndpoints => "is past the peer's limit of endpoints per service",
        Refusal::TooLarge => "is larger than a record may be",
        Refusal::Misattributed => "names another cluster or service",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard {
            namespaces: NamespacePolicy::new("mcsd-system", vec![], vec![]),
            limits: Limits::default(),
        }
    }

    #[test]
    fn kube_namespaces_and_the_exchange_namespace_are_denied_unless_allowed() {
        let policy = NamespacePolicy::new("mcsd-system", vec![], vec!["secret-*".into()]);
        for ns in ["kube-system", "kube-public", "mcsd-system", "secret-stuff"] {
            assert!(!policy.permits(ns), "{ns}");
        }
        for ns in ["default", "demo", "kubernetes-dashboard"] {
            assert!(policy.permits(ns), "{ns}");
        }
        let allowed = NamespacePolicy::new("mcsd-system", vec!["kube-dns-*".into()], vec![]);
        assert!(allowed.permits("kube-dns-cache") && !allowed.permits("kube-system"));
        assert!(
            policy
                .why_denied("kube-system")
                .contains("--allow-namespace=kube-system")
        );
    }

    #[test]
    fn addresses_no_endpoint_can_have_are_refused() {
        let g = guard();
        for (ty, addr, why) in [
            ("IPv4", "127.0.0.1", Refusal::Loopback),
            ("IPv4", "0.0.0.0", Refusal::Unspecified),
            ("IPv4", "169.254.169.254", Refusal::LinkLocal),
            ("IPv4", "224.0.0.1", Refusal::Multicast),
            ("IPv4", "255.255.255.255", Refusal::Multicast),
            ("IPv6", "::1", Refusal::Loopback),
            ("IPv6", "::", Refusal::Unspecified),
            ("IPv6", "fe80::1", Refusal::LinkLocal),
            ("IPv6", "ff02::1", Refusal::Multicast),
            ("IPv6", "::ffff:169.254.169.254", Refusal::LinkLocal),
            ("IPv4", "fd00::1", Refusal::WrongFamily),
            ("IPv6", "10.0.0.1", Refusal::WrongFamily),
            ("IPv4", "not-an-ip", Refusal::WrongFamily),
        ] {
            assert_eq!(g.address(ty, addr), Err(why), "{addr}");
        }
        assert_eq!(g.address("IPv4", "10.1.2.3"), Ok(()));
        assert_eq!(g.address("IPv6", "fd00:10:244::5"), Ok(()));
    }

    #[test]
    fn dns_labels() {
        for ok in ["web-0", "a", "x1", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Web",
            "a.b",
            "a_b",
            &"a".repeat(64),
            "kube-dns.kube-system",
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}

//! What a peer controls, fuzzed: its exchange records and mirrored slices (as its API server
//! serves them, through the guard into the view, and on into the objects the importer would
//! write) and the peer Secret an administrator pastes (its kubeconfig, name and ranges).
//!
//! [`check_exchange`] and [`check_peer_secret`] hold the properties for any input; [`Mutator`]
//! makes inputs from the seeds of [`seeds`], structure-aware (a JSON value is changed where it
//! is a JSON value, the record inside a ConfigMap where it is a record). The stable loop
//! (`controller/examples/fuzz_peer.rs`) runs them by the million; a unit test runs a few
//! thousand on every `cargo test`.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use mcsd_crds::ClusterId;
use serde_json::{Value, json};

use super::{
    exchange::{Kind, MirroredSlice, Object, RECORD_KEY},
    guard::{Guard, Limits, NamespacePolicy},
    import::{desired_derived_service, desired_import, desired_slices, owner},
    peer_secret::PeerSecret,
    view::{Key, View},
};

/// The peer the inputs come from.
const PEER: &str = "cluster-p";

/// Small limits, so that inputs reach them.
const LIMITS: Limits = Limits {
    records: 4,
    endpoints_per_service: 6,
    bytes_per_record: 2048,
};

/// One step of a peer's watch.
#[derive(Clone, Debug)]
pub enum Step {
    /// An object added or changed (its JSON, as the API server serves it).
    Apply(Kind, Value),
    /// An object deleted.
    Delete(Kind, Value),
    /// A re-list of one kind.
    Reset(Kind, Vec<Value>),
}

fn object(kind: Kind, value: &Value) -> Option<Object> {
    // What does not decode as its kind never reaches the view (the watch skips it).
    match kind {
        Kind::Record => serde_json::from_value::<ConfigMap>(value.clone())
            .ok()
            .map(Object::Record),
        Kind::Slice => serde_json::from_value::<MirroredSlice>(value.clone())
            .ok()
            .map(Object::Slice),
    }
}

/// The ranges declared for the peer in half the runs (the other half declares none, so that
/// the guard's own address checks are reached, not only the ranges').
const RANGES: [&str; 2] = ["10.160.0.0/16", "fd00:10:160::/64"];

/// The view as mcsd builds it for a peer: namespaces policed, small limits, and the peer's
/// declared ranges when `ranges`.
pub fn guarded_view(ranges: bool) -> View {
    let guard = Guard {
        namespaces: NamespacePolicy::new(super::exchange::DEFAULT_NAMESPACE, vec![], vec![]),
        limits: LIMITS,
    };
    let mut view = View::guarded(ClusterId::new("cluster-l").expect("a valid id"), guard);
    if ranges {
        view.set_ranges(
            &peer(),
            RANGES.iter().map(|r| r.parse().expect("a range")).collect(),
        );
    }
    view
}

fn peer() -> ClusterId {
    ClusterId::new(PEER).expect("a valid id")
}

/// Feeds `steps` to a guarded view as one peer's watch and checks after each: nothing panics;
/// what the view holds of the peer is within its limits, names the peer as its cluster, and
/// holds only addresses the guard allows; every refusal is counted against the peer; and every
/// service the view holds turns into a ServiceImport, a derived Service and EndpointSlices.
pub fn check_exchange(steps: &[Step], ranges: bool) {
    let mut view = guarded_view(ranges);
    let guard = Guard {
        namespaces: NamespacePolicy::new(super::exchange::DEFAULT_NAMESPACE, vec![], vec![]),
        limits: LIMITS,
    };
    let peer = peer();
    for step in steps {
        match step {
            Step::Apply(kind, value) => {
                if let Some(o) = object(*kind, value) {
                    view.apply(&peer, o);
                }
            }
            Step::Delete(kind, value) => {
                if let Some(o) = object(*kind, value) {
                    view.delete(&peer, &o);
                }
            }
            Step::Reset(kind, values) => {
                let objects = values.iter().filter_map(|v| object(*kind, v)).collect();
                view.reset(&peer, *kind, objects);
            }
        }
        holds(&view, &guard, &peer, ranges);
    }
}

/// Whether an endpoint may carry `address` in a slice of `address_type`: written out here
/// apart from the guard, so that a fault in the guard shows.
fn acceptable(address_type: &str, address: &str, ranges: bool) -> bool {
    let Ok(ip) = address.parse::<std::net::IpAddr>() else {
        return false;
    };
    let family = matches!(
        (address_type, ip),
        ("IPv4", std::net::IpAddr::V4(_)) | ("IPv6", std::net::IpAddr::V6(_))
    );
    let special = match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        std::net::IpAddr::V6(v6) => {
            v6.is_unspecified() || v6.is_loopback() || v6.is_unicast_link_local() || v6.is_multicast()
        }
    };
    let inside = !ranges
        || RANGES
            .iter()
            .any(|r| r.parse::<ipnet::IpNet>().expect("a range").contains(&ip));
    family && !special && inside
}

fn holds(view: &View, guard: &Guard, peer: &ClusterId, ranges: bool) {
    let keys: Vec<Key> = view.keys().cloned().collect();
    let mut records = 0;
    for key in &keys {
        if let Some(record) = view.published(peer, key).and_then(|p| p.record.as_ref()) {
            records += 1;
            assert_eq!(
                &record.cluster, peer,
                "a record held under {peer} names another cluster"
            );
            assert!(
                guard.namespaces.permits(&key.namespace),
                "a record of denied namespace {} was taken",
                key.namespace
            );
        }
        let slices = view.slices(key);
        let mut endpoints = 0;
        for slice in slices.get(peer).into_iter().flatten() {
            for endpoint in &slice.endpoints {
                endpoints += 1;
                for address in &endpoint.addresses {
                    assert!(
                        acceptable(&slice.address_type, address, ranges),
                        "{address} was taken in a slice of address type {:.40}",
                        slice.address_type
                    );
                }
            }
        }
        assert!(
            endpoints <= LIMITS.endpoints_per_service,
            "{endpoints} endpoints of {key:?} taken"
        );
        if let Some(merged) = view.merged(key) {
            let import = desired_import(&key.namespace, &key.name, &merged, None);
            assert_eq!(import.metadata.name.as_deref(), Some(key.name.as_str()));
            desired_derived_service(&key.namespace, &key.name, &merged);
            desired_slices(
                &key.namespace,
                &key.name,
                &merged,
                &slices,
                &owner(&key.name, "uid"),
            );
        }
        let _ = view.refused_lines(key);
    }
    assert!(records <= LIMITS.records, "{records} records taken");
    for (cluster, _) in view.refusal_counts().keys() {
        assert_eq!(cluster, peer, "a refusal counted against another cluster");
    }
}

/// Reads a peer Secret whose keys hold `name`, `kubeconfig` and `ranges` as given: nothing
/// panics, and what is read is what the Secret says (a valid cluster id, ranges that parse).
pub fn check_peer_secret(name: &[u8], kubeconfig: &[u8], ranges: &[u8]) {
    let data: BTreeMap<String, ByteString> = [("name", name), ("kubeconfig", kubeconfig), ("ranges", ranges)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
        .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("peer-x".into()),
            namespace: Some("mcsd-system".into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    if let Ok(read) = PeerSecret::read(&secret) {
        assert!(ClusterId::new(read.cluster.as_str()).is_ok());
        let _ = read.fingerprint();
    }
}

/// Seeds: valid records and slices of two services, and a valid peer Secret.
pub fn seeds() -> (Vec<(Kind, Value)>, [Vec<u8>; 3]) {
    let record = |ns: &str, name: &str, ty: &str| {
        let inner = json!({
            "cluster": PEER, "namespace": ns, "name": name,
            "exportCreated": "2026-12-01T10:00:00Z", "type": ty,
            "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
            "sessionAffinity": "None", "ipFamilies": ["IPv4"],
        });
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": format!("{ns}.{name}"), "namespace": "mcsd-system",
                "labels": {"mcsd.io/exchange": "v1", "mcsd.io/service-namespace": ns, "mcsd.io/service-name": name},
            },
            "data": {RECORD_KEY: inner.to_string()},
        })
    };
    let slice = |ns: &str, name: &str, family: &str, addresses: &[&str]| {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{ns}-{name}-abcde"), "namespace": "mcsd-system",
                "labels": {
                    "mcsd.io/exchange": "v1", "mcsd.io/service-namespace": ns, "mcsd.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "mcsd.io",
                },
            },
            "addressType": family,
            "endpoints": addresses.iter().map(|a| json!({
                "addresses": [a], "conditions": {"ready": true}, "hostname": "web-0",
            })).collect::<Vec<_>>(),
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        })
    };
    let objects = vec![
        (Kind::Record, record("demo", "web", "ClusterSetIP")),
        (
            Kind::Slice,
            slice("demo", "web", "IPv4", &["10.160.0.5", "10.160.0.6"]),
        ),
        (Kind::Record, record("shop", "db", "Headless")),
        (Kind::Slice, slice("shop", "db", "IPv6", &["fd00:10:160::7"])),
    ];
    let kubeconfig = b"apiVersion: v1\nkind: Config\nclusters:\n- name: p\n  cluster: {server: 'https://127.0.0.1:6443'}\nusers:\n- name: p\n  user: {token: abc}\ncontexts:\n- name: p\n  context: {cluster: p, user: p}\ncurrent-context: p\n";
    (
        objects,
        [
            PEER.as_bytes().to_vec(),
            kubeconfig.to_vec(),
            b"10.160.0.0/16,fd00:10:160::/64".to_vec(),
        ],
    )
}

/// Values a peer might put anywhere: addresses of every refused kind, names that are not DNS
/// labels, sizes at and past the limits, the wrong JSON types.
fn interesting(n: u64) -> Value {
    const STRINGS: &[&str] = &[
        "",
        "0.0.0.0",
        "::",
        "127.0.0.1",
        "::1",
        "169.254.169.254",
        "fe80::1",
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
        "10.160.0.9",
        "10.161.0.1",
        "fd00:10:160::9",
        "fd00:10:161::1",
        "::ffff:10.160.0.9",
        "10.160.0.09",
        "1e100",
        "IPv4",
        "IPv6",
        "FQDN",
        "kube-system",
        "mcsd-system",
        "default",
        "cluster-l",
        "cluster-p",
        "cluster-q",
        "v1",
        "v2",
        "UPPER",
        "a.b",
        "-x",
        "x-",
        "é",
        "a\u{0}b",
        "ClusterSetIP",
        "Headless",
        "TCP",
        "UDP",
        "SCTP",
        "http",
        "2026-12-01T10:00:00Z",
        "not a time",
        "{}",
        "[]",
        "{\"cluster\":1}",
    ];
    match n % 8 {
        0..=3 => Value::from(STRINGS[(n / 8) as usize % STRINGS.len()]),
        4 => Value::from("x".repeat((n / 8 % 3000) as usize)),
        5 => [
            json!((n / 8) as i64 - 1_000_000),
            json!(u64::MAX),
            json!(-1),
            json!(0),
            json!(65535),
            json!(65536),
        ][(n / 8 % 6) as usize]
            .clone(),
        6 => [Value::Null, json!(true), json!([]), json!({})][(n / 8 % 4) as usize].clone(),
        _ => Value::from(format!("10.160.{}.{}", n / 8 % 300, n / 2400 % 300)),
    }
}

/// A xorshift generator: inputs are reproducible from the seed of a run.
#[derive(Clone, Debug)]
pub struct Mutator(u64);

impl Mutator {
    /// A generator seeded with `seed` (not zero).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number.
    pub fn next_number(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_number() % n.max(1) as u64) as usize
    }

    /// `value` with a few of its nodes changed: replaced, removed, duplicated or (for the record a
    /// ConfigMap carries as text) changed inside the text.
    pub fn mutate(&mut self, value: &Value) -> Value {
        let mut out = value.clone();
        for _ in 0..1 + self.below(4) {
            self.change(&mut out, 0);
        }
        out
    }

    fn change(&mut self, value: &mut Value, depth: usize) {
        // The object itself is always changed inside; deeper, a container is now and then
        // replaced whole.
        let descend = depth == 0 || (depth < 6 && self.below(8) != 0);
        match value {
            Value::Object(map) if descend && !map.is_empty() => {
                let key = map.keys().nth(self.below(map.len())).cloned().unwrap_or_default();
                match self.below(8) {
                    0 if depth > 0 || self.below(4) == 0 => {
                        map.remove(&key);
                    }
                    1 => {
                        let n = self.next_number();
                        map.insert(format!("{key}{}", n % 3), interesting(n));
                    }
                    _ => {
                        if let Some(v) = map.get_mut(&key) {
                            self.change(v, depth + 1);
                        }
                    }
                }
            }
            Value::Array(items) if descend && !items.is_empty() => {
                let i = self.below(items.len());
                match self.below(6) {
                    0 => {
                        items.remove(i);
                    }
                    1 => {
                        for _ in 0..1 + self.below(8) {
                            let copy = items[i].clone();
                            items.push(copy);
                        }
                    }
                    _ => self.change(&mut items[i], depth + 1),
                }
            }
            Value::String(text) if descend && text.starts_with('{') => {
                // The record inside a ConfigMap: changed as JSON, or its text cut short.
                match serde_json::from_str::<Value>(text) {
                    Ok(mut inner) if self.below(5) != 0 => {
                        self.change(&mut inner, depth + 1);
                        *text = inner.to_string();
                    }
                    _ => {
                        let mut cut = self.below(text.len() + 1);
                        while !text.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        text.truncate(cut);
                    }
                }
            }
            _ => {
                // Mostly a value of the same JSON type, so that the object still decodes and the
                // change reaches the guard; now and then any value.
                let same_type = self.below(4) != 0;
                let mut n = self.next_number();
                if same_type {
                    let wanted = std::mem::discriminant(value);
                    for _ in 0..16 {
                        if std::mem::discriminant(&interesting(n)) == wanted {
                            break;
                        }
                        n = self.next_number();
                    }
                }
                *value = interesting(n);
            }
        }
    }

    /// A peer's watch: a few steps of applies, deletes and re-lists of mutated seeds.
    pub fn steps(&mut self, seeds: &[(Kind, Value)]) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..1 + self.below(12) {
            let (kind, seed) = &seeds[self.below(seeds.len())];
            let value = if self.below(4) == 0 {
                seed.clone()
            } else {
                self.mutate(seed)
            };
            steps.push(match self.below(10) {
                0 => Step::Delete(*kind, value),
                1 => {
                    let mut values = vec![value];
                    for _ in 0..self.below(LIMITS.records + 3) {
                        let (k, s) = &seeds[self.below(seeds.len())];
                        if k == kind {
                            values.push(self.mutate(s));
                        }
                    }
                    Step::Reset(*kind, values)
                }
                _ => Step::Apply(*kind, value),
            });
        }
        steps
    }

    /// Bytes for one key of a peer Secret: the seed changed byte by byte, cut, or random.
    pub fn bytes(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        match self.below(5) {
            0 => out = (0..self.below(300)).map(|_| self.next_number() as u8).collect(),
            1 => out.truncate(self.below(out.len() + 1)),
            _ => {
                for _ in 0..1 + self.below(6) {
                    if out.is_empty() {
                        break;
                    }
                    let i = self.below(out.len());
                    out[i] = self.next_number() as u8;
                }
            }
        }
        out
    }
}

/// Runs `inputs` exchange watches and as many peer Secrets from seed `seed`; returns how many
/// exchange objects reached the view's gate (decoded) out of those made.
pub fn run(seed: u64, inputs: u64) -> (u64, u64) {
    let (objects, secret) = seeds();
    let mut m = Mutator::new(seed);
    let (mut decoded, mut made) = (0, 0);
    for _ in 0..inputs {
        let steps = m.steps(&objects);
        for step in &steps {
            let values: Vec<(&Kind, &Value)> = match step {
                Step::Apply(k, v) | Step::Delete(k, v) => vec![(k, v)],
                Step::Reset(k, vs) => vs.iter().map(|v| (k, v)).collect(),
            };
            for (k, v) in values {
                made += 1;
                decoded += u64::from(object(*k, v).is_some());
            }
        }
        check_exchange(&steps, m.below(2) == 0);
        let [name, kubeconfig, ranges] = &secret;
        check_peer_secret(&m.bytes(name), &m.bytes(kubeconfig), &m.bytes(ranges));
    }
    (decoded, made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_are_taken_whole() {
        let (objects, [name, kubeconfig, ranges]) = seeds();
        let mut view = guarded_view(true);
        for (kind, value) in &objects {
            view.apply(&peer(), object(*kind, value).expect("a seed decodes"));
        }
        let web = Key::new("demo".to_string(), "web".to_string());
        assert!(view.merged(&web).is_some());
        assert_eq!(view.slices(&web)[&peer()][0].endpoints.len(), 2);
        assert!(view.refusal_counts().is_empty());
        let data = [("name", name), ("kubeconfig", kubeconfig), ("ranges", ranges)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v)))
            .collect();
        let secret = Secret {
            data: Some(data),
            ..Default::default()
        };
        assert_eq!(PeerSecret::read(&secret).unwrap().cluster.as_str(), PEER);
    }

    /// A short run on every `cargo test` (the long ones: `controller/examples/fuzz_peer.rs`).
    #[test]
    fn three_thousand_mutated_watches_and_peer_secrets_break_nothing() {
        let (decoded, made) = run(0x5eed_0001, 3000);
        // The mutations reach the guard, not only the decoder.
        assert!(decoded * 2 > made, "{decoded} of {made} decoded");
    }
}

//! Test objects shared by the unit tests of the core and the daemon: ServiceImports,
//! EndpointSlices, Namespaces, exchange records, and what the DNS index answers.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::Namespace,
    discovery::v1::{Endpoint, EndpointConditions, EndpointSlice},
};
use kube::api::ObjectMeta;
use mcsd_crds::{
    ClusterId,
    mcs::{self, ServicePort, v1beta1::ServiceImport, v1beta1::ServiceImportSpec},
};

use crate::{
    core::dns_index::DnsIndex,
    core::exchange::{ExportRecord, MirroredSlice},
    core::merge::ExportSpec,
    core::view::Object,
};

/// A cluster id (panics on a bad one).
pub fn id(s: &str) -> ClusterId {
    ClusterId::new(s).unwrap()
}

/// A ServiceImport `ns/name` of `kind` with `ips` and one port, `http` 80.
pub fn mk_service_import(ns: &str, name: &str, kind: mcs::ServiceImportType, ips: &[&str]) -> ServiceImport {
    let mut si = ServiceImport::new(
        name,
        ServiceImportSpec {
            type_: kind,
            ips: ips.iter().map(|s| s.to_string()).collect(),
            ports: vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    si.metadata.namespace = Some(ns.into());
    si
}

/// An IPv4 EndpointSlice `ns/name` with `labels` and one endpoint per `(address, ready)`.
pub fn mk_slice(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    eps: &[(&str, Option<bool>)],
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|(ip, ready)| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: None,
    }
}

/// A Namespace.
pub fn mk_namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// `cluster`'s export record of `ns/name`, its export created `secs` after a fixed time.
pub fn record(cluster: &str, ns: &str, name: &str, secs: i64) -> Object {
    let r = ExportRecord::new(
        id(cluster),
        ns,
        name,
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap(),
        ExportSpec::default(),
    );
    Object::Record(r.to_config_map("mcsd-system"))
}

/// A mirrored slice `slice` of `ns/name` with one endpoint, `addr`.
pub fn mirrored_slice(ns: &str, name: &str, slice: &str, addr: &str) -> Object {
    Object::Slice(MirroredSlice::from(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice.into()),
            labels: Some(crate::core::exchange::record_labels(ns, name)),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![addr.into()],
            ..Default::default()
        }],
        ports: None,
    }))
}

/// The addresses of the A records the index answers for `name`, sorted.
pub fn a_records(index: &DnsIndex, name: &str) -> Vec<String> {
    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RData, RecordType},
    };
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let mut out = Vec::new();
    mcsd_dns::answer(
        &index.zone().load(),
        &q.to_vec().unwrap(),
        mcsd_dns::Transport::Tcp,
        &mut out,
    );
    let mut v: Vec<String> = Message::from_vec(&out)
        .unwrap()
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

//! The DNS side of the daemon: watches of ServiceImports, MCS EndpointSlices and Namespaces feed
//! the DNS index, which publishes the zone the embedded server answers from. Every replica runs
//! this, leader or not. The zone counts as synced once each of the three kinds has been listed;
//! until then would-be negative answers are SERVFAIL.

use std::net::SocketAddr;

use k8s_openapi::api::{core::v1::Namespace, discovery::v1::EndpointSlice};
use kube::{Api, Client, ResourceExt, runtime::watcher};
use mcsd_crds::{mcs::v1beta1::ServiceImport, names};
use mcsd_dns::{SharedZone, ZoneConfig};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::driver::{Index, Step, Watch};
use crate::core::dns_index::DnsIndex;

/// Feeds a DNS index from `client`'s watches until `shutdown`; returns the zone it publishes.
pub fn feed(
    client: Client,
    config: ZoneConfig,
    shutdown: CancellationToken,
) -> Result<SharedZone, crate::core::dns_index::ConvertError> {
    let mut index = DnsIndex::new(config)?;
    let zone = index.zone();
    let mut imports = Watch::new(
        Api::<ServiceImport>::all(client.clone()),
        watcher::Config::default(),
        |_| {},
    );
    let mut slices = Watch::new(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(names::LABEL_SERVICE_NAME),
        |_| {},
    );
    let mut namespaces = Watch::new(Api::<Namespace>::all(client), watcher::Config::default(), |_| {});
    let span = tracing::info_span!("dns_feed");
    tokio::spawn(
        async move {
            // A re-list is applied as it arrives, and the zone is published once it is complete,
            // not once per listed object.
            loop {
                let step = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    e = imports.next() => match e { Some(e) => imports.feed(&mut index, e), None => return },
                    e = slices.next() => match e { Some(e) => slices.feed(&mut index, e), None => return },
                    e = namespaces.next() => match e { Some(e) => namespaces.feed(&mut index, e), None => return },
                };
                if step == Step::Listing {
                    continue;
                }
                if imports.is_listed() && slices.is_listed() && namespaces.is_listed() {
                    index.mark_synced();
                }
                index.publish();
            }
        }
        .instrument(span),
    );
    Ok(zone)
}

impl Index<ServiceImport> for DnsIndex {
    fn begin_relist(&mut self) {
        self.begin_service_import_relist();
    }
    fn relisted(&mut self, object: ServiceImport) {
        self.apply_service_import(&object);
    }
    fn end_relist(&mut self) {
        self.end_service_import_relist();
    }
    fn apply(&mut self, object: ServiceImport) {
        self.apply_service_import(&object);
    }
    fn delete(&mut self, object: ServiceImport) {
        self.delete_service_import(&object.namespace().unwrap_or_default(), &object.name_any());
    }
}

impl Index<EndpointSlice> for DnsIndex {
    fn begin_relist(&mut self) {
        self.begin_endpoint_slice_relist();
    }
    fn relisted(&mut self, object: EndpointSlice) {
        self.apply_endpoint_slice(&object);
    }
    fn end_relist(&mut self) {
        self.end_endpoint_slice_relist();
    }
    fn apply(&mut self, object: EndpointSlice) {
        self.apply_endpoint_slice(&object);
    }
    fn delete(&mut self, object: EndpointSlice) {
        self.delete_endpoint_slice(&object.namespace().unwrap_or_default(), &object.name_any());
    }
}

impl Index<Namespace> for DnsIndex {
    fn begin_relist(&mut self) {
        self.begin_namespace_relist();
    }
    fn relisted(&mut self, object: Namespace) {
        self.apply_namespace(&object);
    }
    fn end_relist(&mut self) {
        self.end_namespace_relist();
    }
    fn apply(&mut self, object: Namespace) {
        self.apply_namespace(&object);
    }
    fn delete(&mut self, object: Namespace) {
        self.delete_namespace(&object.name_any());
    }
}

/// Binds UDP and TCP on the same address; port 0 picks one port free for both.
pub fn bind_pair(addr: SocketAddr) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let attempts = if addr.port() == 0 { 32 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = std::net::UdpSocket::bind(addr)?;
        let mut tcp_addr = addr;
        tcp_addr.set_port(udp.local_addr()?.port());
        match std::net::TcpListener::bind(tcp_addr) {
            Ok(tcp) => {
                tcp.set_nonblocking(true)?;
                return Ok((udp, tcp));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

#[cfg(test)]
mod tests {
    use mcsd_crds::{
        mcs::ServiceImportType,
        names::{LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER},
    };

    use super::*;
    use crate::{
        cluster::driver,
        core::fixtures::{a_records, mk_namespace, mk_service_import, mk_slice},
    };

    fn index() -> DnsIndex {
        let mut index = DnsIndex::new(mcsd_dns::ZoneConfig::default()).unwrap();
        index.mark_synced();
        index
    }

    fn answers(index: &mut DnsIndex, name: &str) -> Vec<String> {
        index.publish();
        a_records(index, &format!("{name}.svc.clusterset.local."))
    }

    #[test]
    fn imports_a_relist_no_longer_has_leave_the_zone() {
        let mut index = index();
        index.apply_namespace(&mk_namespace("demo"));
        let import =
            |name: &str, ip: &str| mk_service_import("demo", name, ServiceImportType::ClusterSetIP, &[ip]);
        driver::check_relist_drops_a_missed_deletion(
            &mut index,
            import("kept", "10.1.0.1"),
            import("missed", "10.1.0.2"),
            |i, si| !answers(i, &format!("{}.demo", si.metadata.name.as_deref().unwrap())).is_empty(),
        );
    }

    #[test]
    fn slices_a_relist_no_longer_has_leave_the_zone() {
        let mut index = index();
        index.apply_namespace(&mk_namespace("demo"));
        index.apply_service_import(&mk_service_import("demo", "h", ServiceImportType::Headless, &[]));
        let slice = |name: &str, ip: &str| {
            let labels = [(LABEL_SERVICE_NAME, "h"), (LABEL_SOURCE_CLUSTER, "cluster-a")];
            mk_slice("demo", name, &labels, &[(ip, Some(true))])
        };
        driver::check_relist_drops_a_missed_deletion(
            &mut index,
            slice("kept", "10.0.0.1"),
            slice("missed", "10.0.0.2"),
            |i, es| answers(i, "h.demo").contains(&es.endpoints[0].addresses[0]),
        );
    }

    #[test]
    fn namespaces_a_relist_no_longer_has_leave_the_zone() {
        let mut index = index();
        for ns in ["kept", "missed"] {
            index.apply_service_import(&mk_service_import(
                ns,
                "s",
                ServiceImportType::ClusterSetIP,
                &["10.1.0.1"],
            ));
        }
        driver::check_relist_drops_a_missed_deletion(
            &mut index,
            mk_namespace("kept"),
            mk_namespace("missed"),
            |i, ns| !answers(i, &format!("s.{}", ns.metadata.name.as_deref().unwrap())).is_empty(),
        );
    }
}

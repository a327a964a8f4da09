//! The DNS side of the daemon: watches of ServiceImports, MCS EndpointSlices and Namespaces feed
//! the DNS index, which publishes the zone the embedded server answers from. Every replica runs
//! this, leader or not. The zone counts as synced once each of the three kinds has been listed;
//! until then would-be negative answers are SERVFAIL.

use std::net::SocketAddr;

use futures::{StreamExt, stream};
use k8s_openapi::api::{core::v1::Namespace, discovery::v1::EndpointSlice};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use mcsd_crds::{mcs::v1beta1::ServiceImport, names};
use mcsd_dns::{SharedZone, ZoneConfig};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::dns_index::DnsIndex;

enum Change {
    Import(watcher::Event<ServiceImport>),
    Slice(watcher::Event<EndpointSlice>),
    Namespace(watcher::Event<Namespace>),
}

/// Feeds a DNS index from `client`'s watches until `shutdown`; returns the zone it publishes.
pub fn feed(
    client: Client,
    config: ZoneConfig,
    shutdown: CancellationToken,
) -> Result<SharedZone, crate::dns_index::ConvertError> {
    let mut index = DnsIndex::new(config)?;
    let zone = index.zone();
    let imports = watcher(
        Api::<ServiceImport>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(Change::Import));
    let slices = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(names::LABEL_SERVICE_NAME),
    )
    .default_backoff()
    .map(|e| e.map(Change::Slice));
    let namespaces = watcher(Api::<Namespace>::all(client), watcher::Config::default())
        .default_backoff()
        .map(|e| e.map(Change::Namespace));
    let mut changes = stream::select(stream::select(imports, slices), namespaces).boxed();
    let span = tracing::info_span!("dns_feed");
    tokio::spawn(
        async move {
            // A re-list is applied as it arrives (only Namespace names are held until it ends), and
            // the zone is published once it is complete, not once per listed object.
            let mut namespaces: Vec<String> = Vec::new();
            let mut listed = [false; 3];
            loop {
                let change = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    c = changes.next() => c,
                };
                let Some(change) = change else { return };
                let mut listing = false;
                match change {
                    Ok(Change::Import(event)) => match event {
                        watcher::Event::Init => index.begin_service_import_relist(),
                        watcher::Event::InitApply(o) => {
                            index.apply_service_import(&o);
                            listing = true;
                        }
                        watcher::Event::InitDone => {
                            index.end_service_import_relist();
                            listed[0] = true;
                        }
                        watcher::Event::Apply(o) => index.apply_service_import(&o),
                        watcher::Event::Delete(o) => {
                            index.delete_service_import(&o.namespace().unwrap_or_default(), &o.name_any())
                        }
                    },
                    Ok(Change::Slice(event)) => match event {
                        watcher::Event::Init => index.begin_endpoint_slice_relist(),
                        watcher::Event::InitApply(o) => {
                            index.apply_endpoint_slice(&o);
                            listing = true;
                        }
                        watcher::Event::InitDone => {
                            index.end_endpoint_slice_relist();
                            listed[1] = true;
                        }
                        watcher::Event::Apply(o) => index.apply_endpoint_slice(&o),
                        watcher::Event::Delete(o) => {
                            index.delete_endpoint_slice(&o.namespace().unwrap_or_default(), &o.name_any())
                        }
                    },
                    Ok(Change::Namespace(event)) => match event {
                        watcher::Event::Init => namespaces.clear(),
                        watcher::Event::InitApply(o) => {
                            namespaces.push(o.name_any());
                            listing = true;
                        }
                        watcher::Event::InitDone => {
                            index.reset_namespace_names(std::mem::take(&mut namespaces));
                            listed[2] = true;
                        }
                        watcher::Event::Apply(o) => index.apply_namespace(&o),
                        watcher::Event::Delete(o) => index.delete_namespace(&o.name_any()),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "DNS watch failed; retrying");
                        continue;
                    }
                }
                if listing {
                    continue;
                }
                if listed.iter().all(|l| *l) {
                    index.mark_synced();
                }
                index.publish();
            }
        }
        .instrument(span),
    );
    Ok(zone)
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

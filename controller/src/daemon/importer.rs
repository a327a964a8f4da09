//! The import controller: the ClusterSet view → ServiceImports, derived Services and MCS
//! EndpointSlices in this cluster, written only when something changed.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::{ObjectRef, Store},
};
use mcsd_crds::{
    ClusterId,
    mcs::{ServiceImportType, v1beta1::ServiceImport},
    names::{self, derived_service_name},
};

use super::{
    apply::{
        ANNOTATION_APPLIED, Writes, apply_if_changed, apply_traced, delete, freshest, remember, written_at,
    },
    index::SliceIndex,
    metrics::Flow,
};
use crate::{
    core::exchange::MirroredSlice,
    core::import::{
        DerivedState, desired_derived_service, desired_import, desired_slices, import_status, owner,
        slice_name,
    },
    core::merge::Merged,
    core::view::{Key, View},
};

/// What the import controller reads and where it writes.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Importer {
    /// The local API server.
    pub client: Client,
    /// Local Namespaces: imports exist only where their namespace does.
    pub namespaces: Store<Namespace>,
    /// Local ServiceImports.
    pub imports: Store<ServiceImport>,
    /// Local Services (derived ones among them).
    pub services: Store<Service>,
    /// Local EndpointSlices (MCS ones among them).
    pub slices: Store<EndpointSlice>,
    /// The MCS slices of each import, by service.
    pub imported_slices: SliceIndex,
    /// The ClusterSet view.
    pub view: Arc<Mutex<View>>,
    /// Write counters.
    pub writes: Writes,
    /// Propagation latency and conflicts.
    pub flow: Flow,
}

/// One service as the importer finds it: the ClusterSet's view of it and what this cluster holds.
struct Observed {
    merged: Option<Merged>,
    records: BTreeMap<ClusterId, Vec<Arc<MirroredSlice>>>,
    excluded: Vec<(ClusterId, String)>,
    /// Included clusters about to be left out unless fixed, and why.
    at_risk: Vec<(ClusterId, String)>,
    /// When the exporting cluster wrote what changed, for the propagation histogram.
    record_written: Option<Timestamp>,
    import: Option<ServiceImport>,
    service: Option<Service>,
    slices: Vec<Arc<EndpointSlice>>,
}

/// The local APIs the importer writes one service's objects through.
struct Apis {
    imports: Api<ServiceImport>,
    services: Api<Service>,
    slices: Api<EndpointSlice>,
}

impl Importer {
    /// Brings the import of `key` in this cluster up to date: the ServiceImport, its derived
    /// Service, its EndpointSlices and its status, or, when nothing is exported under this name
    /// (or the namespace is gone), the withdrawal of what mcsd made.
    pub async fn reconcile(&self, key: &Key) -> kube::Result<()> {
        let Key { namespace: ns, name } = key;
        let apis = Apis {
            imports: Api::namespaced(self.client.clone(), ns),
            services: Api::namespaced(self.client.clone(), ns),
            slices: Api::namespaced(self.client.clone(), ns),
        };
        let mut observed = self.observe(key);
        let Some(merged) = observed.merged.take() else {
            return self.withdraw(key, &apis, &observed).await;
        };
        // The derived Service comes first: the import is then written once, with its IPs.
        let service = self.write_derived_service(key, &apis, &merged, &observed).await?;
        let derived = service.as_ref().map(DerivedState::of);
        let desired = desired_import(ns, name, &merged, derived.as_ref());
        let origin = observed.record_written.map(|t| (&self.flow, t));
        let written = apply_traced(
            &apis.imports,
            observed.import.as_ref(),
            desired,
            &self.writes,
            origin,
        )
        .await?;
        let import = match written {
            Some(written) => written,
            None => observed.import.clone().expect("unchanged means observed"),
        };
        let Some(uid) = import.uid() else { return Ok(()) };
        let owner = owner(name, &uid);
        self.write_slices(key, &apis, &merged, &observed, &owner).await?;
        self.write_status(key, &apis, &merged, &observed, &import).await
    }

    /// What the view says of `key` and what this cluster holds for it (the freshest of the
    /// store and our own recent writes). `merged` is `None` where the namespace does not exist.
    fn observe(&self, key: &Key) -> Observed {
        let Key { namespace: ns, name } = key;
        let namespace_exists = self
            .namespaces
            .get(&ObjectRef::new(ns))
            .is_some_and(|n| n.metadata.deletion_timestamp.is_none());
        let (merged, records, excluded, at_risk, record_written) = {
            let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            (
                view.merged(key),
                view.slices(key),
                view.excluded(key),
                view.warnings(key),
                view.record_written(key),
            )
        };
        let merged = merged.filter(|_| namespace_exists);
        self.flow.set_conflicts(
            key,
            merged
                .iter()
                .flat_map(|m| m.conflicts.iter().map(|c| c.reason))
                .collect(),
        );
        let import = self.imports.get(&ObjectRef::new(name).within(ns));
        let import = freshest(&self.writes, ns, name, import.as_deref());
        let derived_name = derived_service_name(ns, name);
        let service = self.services.get(&ObjectRef::new(&derived_name).within(ns));
        let service = freshest(&self.writes, ns, &derived_name, service.as_deref());
        let slices = self.imported_slices.get(&self.slices, key, |s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && s.labels().get(names::LABEL_SERVICE_NAME) == Some(name)
                && s.labels().get(names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY)
        });
        Observed {
            merged,
            records,
            excluded,
            at_risk,
            record_written,
            import,
            service,
            slices,
        }
    }

    /// Nothing is exported under this name (or the namespace is gone): deletes what we made.
    async fn withdraw(&self, key: &Key, apis: &Apis, observed: &Observed) -> kube::Result<()> {
        let made_by_us = |annotations: &std::collections::BTreeMap<String, String>| {
            annotations.contains_key(ANNOTATION_APPLIED)
        };
        if observed
            .import
            .as_ref()
            .is_some_and(|i| made_by_us(i.annotations()))
        {
            delete(&apis.imports, &key.name, &self.writes).await?;
        }
        if observed
            .service
            .as_ref()
            .is_some_and(|s| made_by_us(s.annotations()))
        {
            let derived_name = derived_service_name(&key.namespace, &key.name);
            delete(&apis.services, &derived_name, &self.writes).await?;
        }
        for slice in &observed.slices {
            delete(&apis.slices, &slice.name_any(), &self.writes).await?;
        }
        Ok(())
    }

    /// The derived Service (headlessness cannot change in place: it is replaced). Returns it as
    /// the server holds it, with its cluster IPs once allocated.
    ///
    /// It has no owner reference: the import that would own it is written after it, so that the
    /// import's first write already carries the Service's IPs (an owner needs the import's UID,
    /// which would cost the import a second write per cluster). mcsd deletes it when the
    /// import is withdrawn; deleting a ServiceImport by hand keeps it, and with it the IP.
    async fn write_derived_service(
        &self,
        key: &Key,
        apis: &Apis,
        merged: &Merged,
        observed: &Observed,
    ) -> kube::Result<Option<Service>> {
        let Key { namespace: ns, name } = key;
        let derived_name = derived_service_name(ns, name);
        let desired_service = desired_derived_service(ns, name, merged);
        let want_headless = merged.spec.type_ == ServiceImportType::Headless;
        let mut observed_service = observed.service.clone();
        if let Some(s) = &observed_service {
            let is_headless = s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
            if is_headless != want_headless {
                delete(&apis.services, &derived_name, &self.writes).await?;
                observed_service = None;
            }
        }
        Ok(apply_if_changed(
            &apis.services,
            observed_service.as_ref(),
            desired_service,
            &self.writes,
        )
        .await?
        .or(observed_service))
    }

    /// The MCS EndpointSlices: one per source slice of each contributing cluster; the rest go.
    async fn write_slices(
        &self,
        key: &Key,
        apis: &Apis,
        merged: &Merged,
        observed: &Observed,
        owner: &OwnerReference,
    ) -> kube::Result<()> {
        let Key { namespace: ns, name } = key;
        let wanted = desired_slices(ns, name, merged, &observed.records, owner);
        let wanted_names: Vec<String> = wanted.iter().map(|s| s.name_any()).collect();
        // When each source slice was written in its cluster, by the name of its import slice.
        let source_written: std::collections::HashMap<String, Timestamp> = observed
            .records
            .iter()
            .flat_map(|(cluster, sources)| {
                sources.iter().filter_map(move |s| {
                    let at = written_at(&**s)?;
                    Some((slice_name(name, cluster, s.metadata.name.as_deref()?), at))
                })
            })
            .collect();
        for slice in wanted {
            let current = observed.slices.iter().find(|o| o.name_any() == slice.name_any());
            let origin = source_written.get(&slice.name_any()).map(|t| (&self.flow, *t));
            apply_traced(
                &apis.slices,
                current.map(|o| o.as_ref()),
                slice,
                &self.writes,
                origin,
            )
            .await?;
        }
        for stale in observed
            .slices
            .iter()
            .filter(|o| !wanted_names.contains(&o.name_any()))
        {
            delete(&apis.slices, &stale.name_any(), &self.writes).await?;
        }
        Ok(())
    }

    /// The import's status: clusters, Ready, endpointSliceObjects; written only when it changed.
    async fn write_status(
        &self,
        key: &Key,
        apis: &Apis,
        merged: &Merged,
        observed: &Observed,
        import: &ServiceImport,
    ) -> kube::Result<()> {
        let ready = if merged.spec.type_ == ServiceImportType::ClusterSetIP && import.spec.ips.is_empty() {
            Err((
                names::conditions::ready::PENDING,
                "waiting for the derived Service's cluster IP".to_string(),
            ))
        } else {
            Ok(())
        };
        let status = import_status(
            merged,
            ready,
            &observed.excluded,
            &observed.at_risk,
            import.status.as_ref(),
            Timestamp::now(),
        );
        if import.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let body = serde_json::json!({
            "apiVersion": format!("{}/{}", names::MCS_GROUP, names::STORED_VERSION),
            "kind": "ServiceImport",
            "status": status,
        });
        let result = apis
            .imports
            .patch_status(
                &key.name,
                &PatchParams::apply(names::FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await;
        self.writes
            .record("ServiceImport/status", "apply", result.is_ok());
        remember(&self.writes, result?);
        Ok(())
    }
}

//! The import controller: the ClusterSet view → ServiceImports, derived Services and MCS
//! EndpointSlices in this cluster, written only when something changed.

use std::sync::{Arc, Mutex};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Service},
        discovery::v1::EndpointSlice,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::{ObjectRef, Store},
};
use mcsd_crds::{
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
    import::{
        DerivedState, desired_derived_service, desired_import, desired_slices, import_status, owner,
        slice_name,
    },
    view::{Key, View},
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

impl Importer {
    /// Brings the import of `key` in this cluster up to date.
    pub async fn reconcile(&self, key: &Key) -> kube::Result<()> {
        let Key { namespace: ns, name } = key;
        let namespace_exists = self
            .namespaces
            .get(&ObjectRef::new(ns))
            .is_some_and(|n| n.metadata.deletion_timestamp.is_none());
        let (merged, records, excluded, record_written) = {
            let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            (
                view.merged(key),
                view.slices(key),
                view.excluded(key),
                view.record_written(key),
            )
        };
        self.flow.set_conflicts(
            key,
            merged
                .iter()
                .filter(|_| namespace_exists)
                .flat_map(|m| m.conflicts.iter().map(|c| c.reason))
                .collect(),
        );
        let imports: Api<ServiceImport> = Api::namespaced(self.client.clone(), ns);
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let observed_import = self.imports.get(&ObjectRef::new(name).within(ns));
        let observed_import = freshest(&self.writes, ns, name, observed_import.as_deref());
        let derived_name = derived_service_name(ns, name);
        let observed_service = self.services.get(&ObjectRef::new(&derived_name).within(ns));
        let observed_service = freshest(&self.writes, ns, &derived_name, observed_service.as_deref());
        let observed_slices = self.imported_slices.get(&self.slices, key, |s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && s.labels().get(names::LABEL_SERVICE_NAME) == Some(name)
                && s.labels().get(names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY)
        });

        let merged = match merged {
            Some(m) if namespace_exists => m,
            _ => {
                // Nothing is exported under this name (or the namespace is gone): withdraw what we made.
                if observed_import
                    .as_ref()
                    .is_some_and(|i| i.annotations().contains_key(ANNOTATION_APPLIED))
                {
                    delete(&imports, name, &self.writes).await?;
                }
                if observed_service
                    .as_ref()
                    .is_some_and(|s| s.annotations().contains_key(ANNOTATION_APPLIED))
                {
                    delete(&services, &derived_name, &self.writes).await?;
                }
                for slice in &observed_slices {
                    delete(&slices, &slice.name_any(), &self.writes).await?;
                }
                return Ok(());
            }
        };

        let derived = observed_service.as_ref().map(DerivedState::of);
        let desired = desired_import(ns, name, &merged, derived.as_ref());
        let origin = record_written.map(|t| (&self.flow, t));
        let import =
            match apply_traced(&imports, observed_import.as_ref(), desired, &self.writes, origin).await? {
                Some(written) => written,
                None => observed_import.clone().expect("unchanged means observed"),
            };
        let Some(uid) = import.uid() else { return Ok(()) };
        let owner = owner(name, &uid);

        // The derived Service; headlessness cannot change in place.
        let desired_service = desired_derived_service(ns, name, &merged, owner.clone());
        let want_headless = merged.spec.type_ == ServiceImportType::Headless;
        let mut observed_service = observed_service.clone();
        if let Some(s) = &observed_service {
            let is_headless = s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
            if is_headless != want_headless {
                delete(&services, &derived_name, &self.writes).await?;
                observed_service = None;
            }
        }
        let service = apply_if_changed(
            &services,
            observed_service.as_ref(),
            desired_service,
            &self.writes,
        )
        .await?
        .or(observed_service);
        // Once the derived Service has its cluster IPs, the import carries them.
        let mut import = import;
        if let Some(service) = &service {
            let state = DerivedState::of(service);
            if derived.as_ref() != Some(&state) {
                let desired = desired_import(ns, name, &merged, Some(&state));
                if let Some(written) =
                    apply_if_changed(&imports, Some(&import), desired, &self.writes).await?
                {
                    import = written;
                }
            }
        }

        // MCS EndpointSlices, one per source slice of each contributing cluster.
        let wanted = desired_slices(ns, name, &merged, &records, &owner);
        let wanted_names: Vec<String> = wanted.iter().map(|s| s.name_any()).collect();
        // When each source slice was written in its cluster, by the name of its import slice.
        let source_written: std::collections::HashMap<String, Timestamp> = records
            .iter()
            .flat_map(|(cluster, sources)| {
                sources.iter().filter_map(move |s| {
                    let at = written_at(&**s)?;
                    Some((slice_name(name, cluster, s.metadata.name.as_deref()?), at))
                })
            })
            .collect();
        for slice in wanted {
            let observed = observed_slices.iter().find(|o| o.name_any() == slice.name_any());
            let origin = source_written.get(&slice.name_any()).map(|t| (&self.flow, *t));
            apply_traced(&slices, observed.map(|o| o.as_ref()), slice, &self.writes, origin).await?;
        }
        for stale in observed_slices
            .iter()
            .filter(|o| !wanted_names.contains(&o.name_any()))
        {
            delete(&slices, &stale.name_any(), &self.writes).await?;
        }

        // Status: clusters, Ready, endpointSliceObjects.
        let ready = if merged.spec.type_ == ServiceImportType::ClusterSetIP && import.spec.ips.is_empty() {
            Err((
                names::conditions::ready::PENDING,
                "waiting for the derived Service's cluster IP".to_string(),
            ))
        } else {
            Ok(())
        };
        let status = import_status(
            &merged,
            ready,
            &excluded,
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
        let result = imports
            .patch_status(
                name,
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

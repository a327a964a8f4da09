//! The export controller: this cluster's ServiceExports → exchange records and export conditions.

use std::sync::{Arc, Mutex};

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::Condition,
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::{ObjectRef, Store},
};
use mcsd_crds::{ClusterId, mcs::v1beta1::ServiceExport, names};

use super::{
    apply::{Writes, apply_if_changed, delete},
    index::SliceIndex,
};
use crate::{
    core::exchange::{ExportRecord, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE, mirror_slice},
    core::export::{Progress, evaluate, export_conditions},
    core::view::{Key, View},
};

/// What the export controller reads and where it writes.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Exporter {
    /// This cluster.
    pub cluster: ClusterId,
    /// The local API server.
    pub client: Client,
    /// Where this cluster's exchange records live.
    pub exchange_namespace: String,
    /// Local ServiceExports.
    pub exports: Store<ServiceExport>,
    /// Local Services.
    pub services: Store<Service>,
    /// Local EndpointSlices.
    pub slices: Store<EndpointSlice>,
    /// A local Service's own slices, by service.
    pub local_slices: SliceIndex,
    /// This cluster's mirrored slices, by exported service.
    pub mirrors: SliceIndex,
    /// This cluster's export records, as written.
    pub own_records: Store<ConfigMap>,
    /// The ClusterSet view.
    pub view: Arc<Mutex<View>>,
    /// Write counters.
    pub writes: Writes,
    /// Which namespaces may export.
    pub namespaces: crate::core::guard::NamespacePolicy,
    /// The conditions last written to each export, until the watch delivers them.
    pub statuses_in_flight: StatusesInFlight,
}

/// Export conditions written but not yet seen by the watch: by export, the resourceVersion the
/// write replaced and the conditions written. While the store still holds that resourceVersion,
/// a reconcile wanting the same conditions has nothing to write (in a burst the watch lags the
/// writes by seconds, and every export was otherwise written twice).
#[derive(Clone, Debug, Default)]
pub struct StatusesInFlight(Arc<Mutex<std::collections::HashMap<Key, InFlight>>>);

/// The resourceVersion a status write replaced, and the conditions it wrote.
type InFlight = (String, Vec<Condition>);

impl StatusesInFlight {
    /// Whether `conditions` were written over `resource_version` and the watch has not yet
    /// delivered that write. Forgets the entry once the store has moved past it.
    fn pending(&self, key: &Key, resource_version: Option<&str>, conditions: &[Condition]) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some((replaced, written)) if Some(replaced.as_str()) == resource_version => {
                same_conditions(conditions, written)
            }
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    fn written(&self, key: &Key, replaced: Option<String>, conditions: Vec<Condition>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match replaced {
            Some(rv) => map.insert(key.clone(), (rv, conditions)),
            None => map.remove(key),
        };
    }

    fn forget(&self, key: &Key) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

impl Exporter {
    /// Brings the exchange records and the export's conditions of `key` up to date.
    pub async fn reconcile(&self, key: &Key) -> kube::Result<()> {
        let Key { namespace: ns, name } = key;
        let export = self.exports.get(&ObjectRef::new(name).within(ns));
        let service = self.services.get(&ObjectRef::new(name).within(ns));
        let evaluation = export.as_deref().map(|e| {
            if self.namespaces.permits(ns) {
                evaluate(e, service.as_deref())
            } else {
                Err(crate::core::export::Invalid {
                    reason: mcsd_crds::names::conditions::valid::NAMESPACE_DENIED,
                    message: self.namespaces.why_denied(ns),
                })
            }
        });
        let record_name = ExportRecord::object_name(ns, name);
        let records: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.exchange_namespace);
        let mirrors: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.exchange_namespace);
        let observed_record = self
            .own_records
            .get(&ObjectRef::new(&record_name).within(&self.exchange_namespace));
        let observed_mirrors = self.mirrors.get(&self.slices, key, |s| {
            s.namespace().as_deref() == Some(self.exchange_namespace.as_str())
                && s.labels().get(LABEL_SERVICE_NAMESPACE) == Some(ns)
                && s.labels().get(LABEL_SERVICE_NAME) == Some(name)
        });

        let mut desired_record = None;
        match (&export, &evaluation) {
            (Some(export), Some(Ok(spec))) => {
                let created = export
                    .creation_timestamp()
                    .map(|t| t.0)
                    .unwrap_or_else(Timestamp::now);
                let record = ExportRecord::new(self.cluster.clone(), ns, name, created, spec.clone());
                apply_if_changed(
                    &records,
                    observed_record.as_deref(),
                    record.to_config_map(&self.exchange_namespace),
                    &self.writes,
                )
                .await?;
                desired_record = Some(record);
                let local = self.local_slices.get(&self.slices, key, |s| {
                    s.namespace().as_deref() == Some(ns.as_str())
                        && s.labels().get(names::LABEL_KUBERNETES_SERVICE_NAME) == Some(name)
                        && s.labels().get(names::LABEL_MANAGED_BY).map(String::as_str)
                            != Some(names::MANAGED_BY)
                });
                let mut wanted = Vec::new();
                for slice in &local {
                    let mirror = mirror_slice(ns, name, slice, &self.exchange_namespace);
                    let mirror_name = mirror.name_any();
                    let observed = observed_mirrors.iter().find(|o| o.name_any() == mirror_name);
                    apply_if_changed(&mirrors, observed.map(|o| o.as_ref()), mirror, &self.writes).await?;
                    wanted.push(mirror_name);
                }
                for stale in observed_mirrors
                    .iter()
                    .filter(|o| !wanted.contains(&o.name_any()))
                {
                    delete(&mirrors, &stale.name_any(), &self.writes).await?;
                }
            }
            _ => {
                if observed_record.is_some() {
                    delete(&records, &record_name, &self.writes).await?;
                }
                for stale in &observed_mirrors {
                    delete(&mirrors, &stale.name_any(), &self.writes).await?;
                }
            }
        }

        let Some(export) = export else {
            self.statuses_in_flight.forget(key);
            return Ok(());
        };
        let (published, merged) = {
            let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            let published = desired_record.as_ref().is_some_and(|want| {
                view.published(&self.cluster, key).and_then(|p| p.record.as_ref()) == Some(want)
            });
            (published, view.merged(key))
        };
        let previous = export
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let progress = match &evaluation {
            Some(Err(invalid)) => Progress::Invalid(invalid),
            _ if published => Progress::Published(merged.as_ref()),
            // The record is written (or was just now) but the view has not seen it yet: its
            // arrival queues this export again, and one status write then says Published. A
            // "publishing" status written now would be a second write nobody waits for.
            _ => return Ok(()),
        };
        let conditions = export_conditions(progress, &previous, Timestamp::now());
        let resource_version = export.resource_version();
        if same_conditions(&conditions, &previous)
            || self
                .statuses_in_flight
                .pending(key, resource_version.as_deref(), &conditions)
        {
            return Ok(());
        }
        let api: Api<ServiceExport> = Api::namespaced(self.client.clone(), ns);
        let status = serde_json::json!({
            "apiVersion": format!("{}/{}", names::MCS_GROUP, names::STORED_VERSION),
            "kind": "ServiceExport",
            "status": { "conditions": conditions },
        });
        let result = api
            .patch_status(
                name,
                &PatchParams::apply(names::FIELD_MANAGER).force(),
                &Patch::Apply(&status),
            )
            .await;
        self.writes
            .record("ServiceExport/status", "apply", result.is_ok());
        if result.is_ok() {
            self.statuses_in_flight.written(key, resource_version, conditions);
        }
        match result {
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// Whether `previous` already holds exactly the conditions we would write (and no other
/// condition of ours).
fn same_conditions(desired: &[Condition], previous: &[Condition]) -> bool {
    let ours = [
        names::conditions::VALID,
        names::conditions::READY,
        names::conditions::CONFLICT,
    ];
    let mut observed: Vec<_> = previous
        .iter()
        .filter(|c| ours.contains(&c.type_.as_str()))
        .collect();
    let mut wanted: Vec<_> = desired.iter().collect();
    observed.sort_by(|a, b| a.type_.cmp(&b.type_));
    wanted.sort_by(|a, b| a.type_.cmp(&b.type_));
    observed.len() == wanted.len()
        && observed.iter().zip(&wanted).all(|(o, w)| {
            o.type_ == w.type_ && o.status == w.status && o.reason == w.reason && o.message == w.message
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conditions::condition;

    fn ready(status: &str) -> Vec<Condition> {
        vec![condition(
            &[],
            "Ready",
            status,
            "Ready",
            "m".into(),
            Timestamp::now(),
        )]
    }

    #[test]
    fn a_status_in_flight_stands_until_the_store_moves_past_what_it_replaced() {
        let in_flight = StatusesInFlight::default();
        let key = Key::new("demo".to_string(), "hello".to_string());
        assert!(
            !in_flight.pending(&key, Some("7"), &ready("True")),
            "nothing written yet"
        );
        in_flight.written(&key, Some("7".into()), ready("True"));
        // The store still holds resourceVersion 7: the write is on its way.
        assert!(in_flight.pending(&key, Some("7"), &ready("True")));
        assert!(
            !in_flight.pending(&key, Some("7"), &ready("False")),
            "other conditions are written"
        );
        // The store moved on (our write, or anyone's): it is the truth again, and the entry goes.
        assert!(!in_flight.pending(&key, Some("9"), &ready("True")));
        assert!(!in_flight.pending(&key, Some("7"), &ready("True")));
    }
}

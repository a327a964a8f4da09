//! Setting a hub up and enrolling members in it (`core/hub.rs` says what is written): used by
//! `mcsd sandbox --hub` and by `mcsd hub init`.

use kube::Client;
use mcsd_crds::ClusterId;

use super::manifest;
use crate::core::hub::{MANIFEST, member_objects};

/// The field manager of what is written on the hub.
const MANAGER: &str = "mcsd-hub";

/// Installs what the hub needs (`manifests/hub.yaml`).
pub async fn install(hub: &Client) -> anyhow::Result<()> {
    manifest::apply_all(hub, MANAGER, MANIFEST).await
}

/// Enrols member `cluster` in the hub: its namespace, identity and rights.
pub async fn enrol(hub: &Client, cluster: &ClusterId, ranges: &[ipnet::IpNet]) -> anyhow::Result<()> {
    for object in member_objects(cluster, ranges) {
        manifest::apply(hub, MANAGER, &object).await?;
    }
    Ok(())
}

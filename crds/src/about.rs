//! `ClusterProperty` (group `about.k8s.io`, KEP-2149): cluster-scoped facts about a cluster, such as
//! its id (`cluster.clusterset.k8s.io`) and its ClusterSet (`clusterset.k8s.io`).

macro_rules! about_version {
    ($version:tt) => {
        use kube::CustomResource;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};

        /// ClusterProperty is a name/value pair of metadata about the cluster.
        #[derive(CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        #[kube(
            group = "about.k8s.io",
            version = $version,
            kind = "ClusterProperty",
            plural = "clusterproperties",
            singular = "clusterproperty",
            status = "ClusterPropertyStatus",
            derive = "PartialEq",
            derive = "Default",
            category = "multicluster",
            doc = "ClusterProperty is a resource provides a way to store identification related, cluster scoped information for multi-cluster tools while creating flexibility for implementations.",
            printcolumn(name = "Value", type_ = "string", json_path = ".spec.value"),
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
        )]
        pub struct ClusterPropertySpec {
            /// The property's value: for `cluster.clusterset.k8s.io`, the cluster id.
            #[schemars(length(min = 1))]
            pub value: String,
        }

        /// The (empty) status of a ClusterProperty.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub struct ClusterPropertyStatus {}
    };
}

/// The stored version.
pub mod v1beta1 {
    about_version!("v1beta1");
}

/// The older version, still served.
pub mod v1alpha1 {
    about_version!("v1alpha1");
}

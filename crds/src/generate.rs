//! The CustomResourceDefinitions of the types in this crate, and the YAML committed under `crds/`.
//!
//! `mcsd crds --dir crds` writes the files; a test fails when they differ from what the types
//! generate, so the committed YAML is always the schema the code speaks.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

use crate::{about, mcs, names};

/// Why the CRDs could not be generated (a bug in the type definitions, never user input).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// kube refused to merge the per-version CRDs.
    #[error("merging the versions of {kind}: {source}")]
    Merge {
        /// The kind whose versions did not merge.
        kind: &'static str,
        /// kube's reason.
        source: kube::core::crd::MergeError,
    },
    /// The CRD did not serialise.
    #[error("rendering {kind} as YAML: {source}")]
    Yaml {
        /// The kind that failed.
        kind: String,
        /// serde_yaml's reason.
        source: serde_yaml::Error,
    },
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One generated CRD and the file it lives in.
#[derive(Debug, Clone)]
pub struct GeneratedCrd {
    /// File name under `crds/`, e.g. `multicluster.x-k8s.io_serviceexports.yaml`.
    pub file_name: String,
    /// The CRD.
    pub crd: CustomResourceDefinition,
}

/// Every CRD mcsd needs: ServiceExport, ServiceImport (both versions, `v1beta1` stored) and
/// ClusterProperty (both versions, `v1beta1` stored).
pub fn crds() -> Result<Vec<GeneratedCrd>> {
    let merge = |kind: &'static str, crds: Vec<CustomResourceDefinition>| {
        merge_crds(crds, names::STORED_VERSION).map_err(|source| Error::Merge { kind, source })
    };
    let mut export = merge(
        "ServiceExport",
        vec![
            mcs::v1alpha1::ServiceExport::crd(),
            mcs::v1beta1::ServiceExport::crd(),
        ],
    )?;
    let import = merge(
        "ServiceImport",
        vec![
            mcs::v1alpha1::ServiceImport::crd(),
            mcs::v1beta1::ServiceImport::crd(),
        ],
    )?;
    let mut property = merge(
        "ClusterProperty",
        vec![
            about::v1alpha1::ClusterProperty::crd(),
            about::v1beta1::ClusterProperty::crd(),
        ],
    )?;
    // `about.k8s.io` is a protected group (KEP-1111): a kube-apiserver refuses a CRD in it
    // without the approval annotation, which names KEP-2149's API review.
    property.metadata.annotations = Some(
        [(
            names::ANNOTATION_API_APPROVED.to_string(),
            names::ABOUT_API_APPROVAL.to_string(),
        )]
        .into(),
    );
    // A ServiceExport's spec is optional: `kubectl apply` of a bare ServiceExport must work, and
    // the API server fills in `spec: {}` (structural defaulting, also on read), so every client
    // sees a spec.
    for version in export.spec.versions.iter_mut() {
        if let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            if let Some(spec) = root.properties.as_mut().and_then(|p| p.get_mut("spec")) {
                spec.default = Some(
                    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                        serde_json::json!({}),
                    ),
                );
            }
            if let Some(required) = root.required.as_mut() {
                required.retain(|r| r != "spec");
            }
            if root.required.as_ref().is_some_and(Vec::is_empty) {
                root.required = None;
            }
        }
    }
    Ok([export, import, property]
        .into_iter()
        // Files are named as upstream names them: `<group>_<plural>.yaml`.
        .map(|crd| GeneratedCrd {
            file_name: format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural),
            crd,
        })
        .collect())
}

/// The YAML text of one generated CRD, as committed.
pub fn render(crd: &GeneratedCrd) -> Result<String> {
    let body = serde_yaml::to_string(&crd.crd).map_err(|source| Error::Yaml {
        kind: crd.crd.spec.names.kind.clone(),
        source,
    })?;
    Ok(format!(
        "# Generated from the Rust types in crds/src by `mcsd crds --dir crds`. Do not edit.\n{body}"
    ))
}

/// Writes every CRD into `dir` (normally the repository's `crds/`), returning the paths written.
pub fn write_all(dir: &std::path::Path) -> std::result::Result<Vec<std::path::PathBuf>, WriteError> {
    let mut written = Vec::new();
    for crd in crds()? {
        let path = dir.join(&crd.file_name);
        std::fs::write(&path, render(&crd)?).map_err(|source| WriteError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Why [`write_all`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Generating failed.
    #[error(transparent)]
    Generate(#[from] Error),
    /// A file could not be written.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The reasons a CRD's schemas are not structural (empty when every served version is).
///
/// Checks what a kube-apiserver enforces for `apiextensions.k8s.io/v1`: every version has a schema
/// whose root is an object; every node names its `type` (or is int-or-string / preserves unknown
/// fields); no `$ref`; `properties` only on objects, `items` only on arrays; list-map keys exist and
/// are required or defaulted scalars.
pub fn structural_problems(crd: &CustomResourceDefinition) -> Vec<String> {
    let mut problems = Vec::new();
    for version in &crd.spec.versions {
        let at = format!("{} {}", crd.spec.names.kind, version.name);
        match version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            None => problems.push(format!("{at}: no openAPIV3Schema")),
            Some(root) => {
                if root.type_.as_deref() != Some("object") {
                    problems.push(format!("{at}: the root schema is not of type object"));
                }
                check_node(root, &format!("{at}: "), &mut problems);
            }
        }
    }
    problems
}

fn check_node(node: &JSONSchemaProps, path: &str, problems: &mut Vec<String>) {
    let special = node.x_kubernetes_int_or_string == Some(true)
        || node.x_kubernetes_preserve_unknown_fields == Some(true);
    if node.type_.is_none() && !special {
        problems.push(format!("{path}: no type"));
    }
    if node.ref_path.is_some() {
        problems.push(format!("{path}: $ref is not allowed"));
    }
    for (what, branches) in [
        ("anyOf", &node.any_of),
        ("oneOf", &node.one_of),
        ("allOf", &node.all_of),
    ] {
        for branch in branches.iter().flatten() {
            if branch.type_.is_some() && branch.type_ != node.type_ {
                problems.push(format!("{path}: {what} branch declares a type"));
            }
        }
    }
    if let Some(props) = &node.properties {
        if node.type_.as_deref() != Some("object") {
            problems.push(format!("{path}: properties on a non-object"));
        }
        for (name, child) in props {
            check_node(child, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = &node.items {
        if node.type_.as_deref() != Some("array") {
            problems.push(format!("{path}: items on a non-array"));
        }
        match items {
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(item) => {
                if node.x_kubernetes_list_type.as_deref() == Some("map") {
                    for key in node.x_kubernetes_list_map_keys.iter().flatten() {
                        let Some(key_schema) = item.properties.as_ref().and_then(|p| p.get(key)) else {
                            problems.push(format!("{path}: list-map key {key} is not a property of the items"));
                            continue;
                        };
                        let required = item.required.iter().flatten().any(|r| r == key);
                        if !required && key_schema.default.is_none() {
                            problems.push(format!("{path}: list-map key {key} is neither required nor defaulted"));
                        }
                    }
                }
                check_node(item, &format!("{path}[]"), problems);
            }
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schemas(_) => {
                problems.push(format!("{path}: tuple items are not allowed"))
            }
        }
    } else if node.type_.as_deref() == Some("array") {
        problems.push(format!("{path}: array without items"));
    }
    if let Some(
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(
            extra,
        ),
    ) = &node.additional_properties
    {
        check_node(extra, &format!("{path}.*"), problems);
    }
}

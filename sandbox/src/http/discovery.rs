//! Discovery and the other non-resource paths: `/version`, the health probes, `/api`, `/apis`,
//! the resource lists of each group version, and OpenAPI v3.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::api::Api;
use crate::error::{ApiError, ApiResult};

use super::{Body, ServerSettings, full, json_response};

/// The response for a non-resource `path` (without its trailing slash); `None` for a resource path.
pub(super) fn serve(api: &Api, settings: &ServerSettings, path: &str) -> Option<ApiResult<Response<Body>>> {
    let response = match path {
        "/version" => Ok(json_response(
            StatusCode::OK,
            &json!({
                "major": "1", "minor": "34", "gitVersion": "v1.34.0-mcsd-sandbox",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "rust", "compiler": "rustc", "platform": "linux/amd64",
                "emulationMajor": "1", "emulationMinor": "34"
            }),
        )),
        "/healthz" | "/livez" | "/readyz" => Ok(full(StatusCode::OK, "text/plain", b"ok".to_vec())),
        "/api" => Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": settings.address}]}),
        )),
        "/apis" => Ok(json_response(StatusCode::OK, &group_list(api))),
        "/openapi/v3" => Ok(json_response(StatusCode::OK, &openapi_root(api))),
        p if p.starts_with("/openapi/v3/") => {
            let gv = p.trim_start_matches("/openapi/v3/");
            openapi_group_version(api, gv).map(|v| json_response(StatusCode::OK, &v))
        }
        p if p.starts_with("/openapi") => Err(ApiError::new(
            404,
            "NotFound",
            "the sandbox serves OpenAPI v3 only",
        )),
        _ => return None,
    };
    Some(response)
}

fn group_list(api: &Api) -> Value {
    let groups: Vec<Value> = api
        .registry()
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(super) fn resource_list(api: &Api, group: &str, version: &str) -> ApiResult<Value> {
    let infos = api.registry().in_group_version(group, version);
    if infos.is_empty() {
        return Err(ApiError::no_route());
    }
    let mut resources = Vec::new();
    for info in infos {
        let mut r = json!({
            "name": info.resource, "singularName": info.singular, "namespaced": info.namespaced,
            "kind": info.kind, "verbs": info.verbs(),
        });
        if !info.short_names.is_empty() {
            r["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            r["categories"] = json!(info.categories);
        }
        resources.push(r);
        if info.status_subresource {
            resources.push(json!({"name": format!("{}/status", info.resource), "singularName": "", "namespaced": info.namespaced, "kind": info.kind, "verbs": ["get", "patch", "update"]}));
        }
        for sub in &info.other_subresources {
            let (group, kind, verbs) = match *sub {
                "scale" => ("autoscaling", "Scale", json!(["get", "patch", "update"])),
                _ => ("authentication.k8s.io", "TokenRequest", json!(["create"])),
            };
            resources.push(json!({"name": format!("{}/{sub}", info.resource), "singularName": "", "namespaced": info.namespaced, "group": group, "version": "v1", "kind": kind, "verbs": verbs}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// `/openapi/v3`: one entry per group-version.
fn openapi_root(api: &Api) -> Value {
    let mut paths = serde_json::Map::new();
    for (group, versions) in api.registry().groups() {
        for v in versions {
            let gv = if group.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{group}/{v}")
            };
            let url = format!("/openapi/v3/{gv}?hash={}", api.store().head());
            paths.insert(gv, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<gv>`: the resource paths and their operations, each with its
/// `x-kubernetes-group-version-kind` and the query parameters the server honours (kubectl reads
/// this to learn that `fieldValidation` is supported). Schemas are not published: kubectl then
/// computes client-side apply patches from its compiled-in types (built-ins) or as JSON merge
/// patches (custom resources), as it does against clusters without OpenAPI.
fn openapi_group_version(api: &Api, gv: &str) -> ApiResult<Value> {
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return Err(ApiError::no_route()),
    };
    let infos = api.registry().in_group_version(&group, &version);
    if infos.is_empty() {
        return Err(ApiError::no_route());
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    for info in infos {
        let gvk = json!({"group": info.group, "version": version, "kind": info.kind});
        let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let op = |action: &str| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk.clone(),
                "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                "responses": {"200": {"description": "OK"}},
            })
        };
        let item = if info.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", info.resource)
        } else {
            format!("{prefix}/{}/{{name}}", info.resource)
        };
        let collection = item.trim_end_matches("/{name}").to_string();
        paths.insert(
            item,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        paths.insert(collection, json!({"get": op("list"), "post": op("post")}));
    }
    Ok(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.34.0-mcsd-sandbox"}, "paths": paths, "components": {"schemas": {}}}),
    )
}

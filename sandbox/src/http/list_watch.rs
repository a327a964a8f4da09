//! Lists (with pages, selectors and tables) and watch streams (with bookmarks, resumption and
//! `410 Gone` past the history).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::error::{ApiError, ApiResult};
use crate::kinds::ResourceInfo;
use crate::meta;
use crate::select::{FieldSelector, LabelSelector};
use crate::store::{EventType, Resume};
use crate::table;

use super::{Body, Query, ServerSettings, full, json_response};

/// The opaque `continue` token of a page: the [`Resume`] point as base64 JSON.
fn continue_token(resume: &Resume) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(resume).unwrap_or_default())
}

/// Decodes a `continue` token for a list in `namespace` (or all): 400 when it is not one of ours.
fn resume_from(token: &str, namespace: Option<&str>) -> ApiResult<Resume> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice::<Resume>(&b).ok())
        .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
        .ok_or_else(|| ApiError::bad_request("continue key is not valid: invalid continue token"))
}

pub(super) fn list(
    api: &Api,
    info: &ResourceInfo,
    version: &str,
    ns: &str,
    query: &Query,
    as_table: bool,
) -> ApiResult<Response<Body>> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &info.kind)?;
    let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let ns_filter = (info.namespaced && !ns.is_empty()).then_some(ns);
    let resume = query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(|token| resume_from(token, ns_filter))
        .transpose()?;
    let page = api
        .store()
        .page(&info.gr(), ns_filter, resume.as_ref(), limit, |o| {
            labels.matches(o) && fields.matches(o)
        })
        .map_err(|e| {
            ApiError::expired(format!(
                "The provided continue parameter is too old to display a consistent list result \
                 (the event log starts after resourceVersion {}); start a new list without it",
                e.oldest
            ))
        })?;
    let out: Vec<Arc<Value>> = page
        .items
        .iter()
        .map(|o| Api::at_version(info, version, o))
        .collect();
    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if page.remaining > 0
        && let Some(last) = out.last()
    {
        metadata["continue"] = json!(continue_token(&Resume {
            rv: page.rv,
            namespace: meta::meta_str(last, "namespace").to_string(),
            name: meta::meta_str(last, "name").to_string(),
        }));
        // Like a real API server, which counts only what it need not filter.
        if labels.is_empty() && fields.is_empty() {
            metadata["remainingItemCount"] = json!(page.remaining);
        }
    }
    if as_table {
        return Ok(json_response(
            StatusCode::OK,
            &table::table(info, version, &out, metadata),
        ));
    }
    // Written by hand so that a list of thousands is one pass over the items.
    let mut buf = Vec::with_capacity(out.len() * 512 + 256);
    buf.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut buf, &format!("{}List", info.kind))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    buf.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut buf, &info.api_version(version))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    buf.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut buf, &metadata).map_err(|e| ApiError::internal(e.to_string()))?;
    buf.extend_from_slice(b",\"items\":[");
    for (i, item) in out.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        // As a real API server lists built-in kinds: the items name no type (the list does);
        // a CRD's items keep theirs.
        let written = if info.builtin {
            serde_json::to_writer(&mut buf, &Untyped(item))
        } else {
            serde_json::to_writer(&mut buf, &**item)
        };
        written.map_err(|e| ApiError::internal(e.to_string()))?;
    }
    buf.extend_from_slice(b"]}");
    Ok(full(StatusCode::OK, "application/json", buf))
}

/// An object without its `apiVersion` and `kind`, as an item of a built-in kind's list.
struct Untyped<'a>(&'a Value);

impl serde::Serialize for Untyped<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let Value::Object(fields) = self.0 else {
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields {
            if key != "apiVersion" && key != "kind" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

struct WatchFilter {
    info: Arc<ResourceInfo>,
    version: String,
    ns: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        (self.ns.is_empty() || meta::meta_str(obj, "namespace") == self.ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    fn line(&self, kind: &str, obj: &Arc<Value>) -> Bytes {
        let served = Api::at_version(&self.info, &self.version, obj);
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(b"{\"type\":\"");
        buf.extend_from_slice(kind.as_bytes());
        buf.extend_from_slice(b"\",\"object\":");
        let _ = serde_json::to_writer(&mut buf, &*served);
        buf.extend_from_slice(b"}\n");
        Bytes::from(buf)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let ev = json!({"type": "BOOKMARK", "object": {"kind": self.info.kind, "apiVersion": self.info.api_version(&self.version), "metadata": md}});
        let mut v = serde_json::to_vec(&ev).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

fn expired_line(rv: u64, oldest: u64) -> Bytes {
    let status = ApiError::expired(format!("too old resource version: {rv} ({oldest})")).to_status();
    let mut v = serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

pub(super) fn watch(
    api: &Arc<Api>,
    info: &Arc<ResourceInfo>,
    version: &str,
    ns: &str,
    query: &Query,
    settings: &ServerSettings,
    shutdown: &CancellationToken,
) -> ApiResult<Response<Body>> {
    let filter = WatchFilter {
        info: info.clone(),
        version: version.to_string(),
        ns: if info.namespaced {
            ns.to_string()
        } else {
            String::new()
        },
        labels: LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &info.kind)?,
    };
    let rv_param = query.get("resourceVersion").unwrap_or("");
    let send_initial = query.flag("sendInitialEvents");
    let start: Option<u64> = match rv_param {
        "" | "0" => None,
        s => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let api = api.clone();
    let interval = settings.bookmark_interval;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut head = api.store().subscribe();
        let gr = filter.info.gr();
        let mut last = match start {
            Some(rv) if !send_initial => rv,
            _ => {
                head.borrow_and_update();
                let (items, rv) = api
                    .store()
                    .list(&gr, (!filter.ns.is_empty()).then_some(filter.ns.as_str()));
                for item in items.iter().filter(|o| filter.matches(o)) {
                    if tx.send(filter.line("ADDED", item)).await.is_err() {
                        return;
                    }
                }
                if send_initial && bookmarks && tx.send(filter.bookmark(rv, true)).await.is_err() {
                    return;
                }
                rv
            }
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            head.borrow_and_update();
            match api.store().events_since(last) {
                Err(expired) => {
                    let _ = tx.send(expired_line(last, expired.oldest)).await;
                    return;
                }
                Ok((events, now)) => {
                    for ev in events.iter().filter(|e| e.key.gr == gr) {
                        let now_matches = filter.matches(&ev.object);
                        let was = ev.old.as_ref().is_some_and(|o| filter.matches(o));
                        let kind = match (ev.kind, was, now_matches) {
                            (EventType::Deleted, true, _) => "DELETED",
                            (EventType::Deleted, false, _) => continue,
                            (EventType::Added, _, true) => "ADDED",
                            (EventType::Modified, true, true) => "MODIFIED",
                            (EventType::Modified, false, true) => "ADDED",
                            (EventType::Modified, true, false) => "DELETED",
                            _ => continue,
                        };
                        if tx.send(filter.line(kind, &ev.object)).await.is_err() {
                            return;
                        }
                    }
                    last = now;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                changed = head.changed() => if changed.is_err() { return },
                _ = ticker.tick() => {
                    if bookmarks && tx.send(filter.bookmark(last, false)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("a valid response"))
}

//! The API operations (create, update, patch, delete, get, list), independent of HTTP: the
//! server's handlers and the built-in controllers both go through them, so every write gets the
//! same defaulting, validation, admission, field ownership and events. Admission (defaulting,
//! validation, addresses) is in `admission.rs`; these are the verbs around it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Map, Value, json};

use crate::admission::Admission;
use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult, Cause};
use crate::fields::{self, Scope};
use crate::kinds::{self, Registry, ResourceInfo};
use crate::meta;
use crate::schema::{self, ListType};
use crate::store::{GroupResource, ObjectKey, Store, StoreError};

/// Who writes, and how.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The authenticated user.
    pub user: UserInfo,
    /// The field manager (`fieldManager`, or derived from the user agent).
    pub manager: String,
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
}

impl Ctx {
    /// The context of the sandbox's own controllers.
    pub fn system(manager: &str) -> Self {
        Self {
            user: UserInfo::admin(),
            manager: manager.to_string(),
            dry_run: false,
        }
    }
}

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply.
    Apply {
        /// Take over conflicting fields.
        force: bool,
    },
}

/// How a delete cascades to dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete now; the garbage collector deletes dependents afterwards.
    #[default]
    Background,
    /// Delete dependents first; the owner waits with the `foregroundDeletion` finalizer.
    Foreground,
    /// Keep dependents, removing their owner references.
    Orphan,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Cascade policy.
    pub propagation: Propagation,
    /// Only delete the object with this uid.
    pub uid: Option<String>,
    /// Only delete the object at this resourceVersion.
    pub resource_version: Option<u64>,
    /// Store nothing.
    pub dry_run: bool,
}
pub use crate::admission::Behaviour;

/// One cluster's API: the store, the resource table, tokens and address allocation.
#[derive(Debug)]
pub struct Api {
    pub(crate) store: Store,
    registry: RwLock<Registry>,
    tokens: crate::auth::Tokens,
    admission: Admission,
}

const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
const FINALIZER_ORPHAN: &str = "orphan";

fn map_store(e: StoreError, info: &ResourceInfo, name: &str) -> ApiError {
    match e {
        StoreError::AlreadyExists => ApiError::already_exists(&info.group, &info.resource, name),
        StoreError::NotFound => ApiError::not_found(&info.group, &info.resource, name),
        StoreError::Conflict => ApiError::stale(&info.group, &info.resource, name),
    }
}

fn strip_for_generation(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn without_volatile(v: &Value) -> Value {
    let mut v = v.clone();
    let md = meta::metadata_mut(&mut v);
    md.remove("resourceVersion");
    md.remove("managedFields");
    v
}

impl Api {
    /// An API over an empty store.
    pub fn new(
        behaviour: Behaviour,
        service_ranges: Vec<ipnet::IpNet>,
        pod_ranges: Vec<ipnet::IpNet>,
        log_capacity: usize,
    ) -> Self {
        Self {
            store: Store::new(log_capacity),
            registry: RwLock::new(Registry::with_builtins()),
            tokens: RwLock::new(HashMap::new()),
            admission: Admission::new(behaviour, service_ranges, pod_ranges),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A snapshot of the resource table.
    pub fn registry(&self) -> Registry {
        self.registry.read().clone()
    }

    /// A resource by group, version and plural.
    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceInfo>> {
        self.registry.read().lookup(group, version, resource)
    }

    /// A built-in core (`v1`) resource.
    pub(crate) fn core(&self, resource: &str) -> Arc<ResourceInfo> {
        self.resource("", resource).expect("core resources are built in")
    }

    /// Who may do what here: the tokens issued, authentication and RBAC (`auth.rs`).
    pub(crate) fn auth(&self) -> crate::auth::Authority<'_> {
        crate::auth::Authority {
            store: &self.store,
            tokens: &self.tokens,
        }
    }

    /// A resource by group and plural, at any version.
    pub fn resource(&self, group: &str, resource: &str) -> Option<Arc<ResourceInfo>> {
        self.registry.read().get(&GroupResource::new(group, resource))
    }

    /// The list types of a resource's lists, for server-side apply.
    pub fn list_types(info: &ResourceInfo) -> impl Fn(&[&str]) -> ListType + '_ {
        move |path: &[&str]| {
            if info.builtin {
                schema::builtin_list_type(&info.kind, path)
            } else {
                info.schemas
                    .get(&info.storage_version)
                    .and_then(|s| schema::list_type_in_schema(s, path))
                    .unwrap_or(ListType::Atomic)
            }
        }
    }

    fn key(info: &ResourceInfo, ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            gr: info.gr(),
            namespace: if info.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    /// The object as served at `version`.
    pub fn at_version(info: &ResourceInfo, version: &str, obj: &Arc<Value>) -> Arc<Value> {
        if info.builtin || version == info.storage_version {
            return obj.clone();
        }
        let mut o = (**obj).clone();
        o["apiVersion"] = json!(info.api_version(version));
        Arc::new(o)
    }

    /// One object.
    pub fn get(&self, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        self.store
            .get(&Self::key(info, ns, name))
            .ok_or_else(|| ApiError::not_found(&info.group, &info.resource, name))
    }

    fn scope_for(info: &ResourceInfo, subresource: Option<&str>) -> Scope {
        match (subresource, info.status_subresource) {
            (Some("status"), _) => Scope::Status,
            (_, true) => Scope::Main,
            (_, false) => Scope::All,
        }
    }

    fn check_type(info: &ResourceInfo, version: &str, obj: &Value) -> ApiResult<()> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        let want = info.api_version(version);
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
            && !av.is_empty()
            && av != want
            && !(info.group == av.split('/').next().unwrap_or("")
                && info.serves(av.rsplit('/').next().unwrap_or("")))
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want})"
            )));
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str)
            && !k.is_empty()
            && k != info.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
        Ok(())
    }

    fn check_namespace_open(&self, info: &ResourceInfo, ns: &str) -> ApiResult<()> {
        if !info.namespaced {
            return Ok(());
        }
        let key = ObjectKey {
            gr: GroupResource::new("", "namespaces"),
            namespace: String::new(),
            name: ns.to_string(),
        };
        match self.store.get(&key) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if meta::is_deleting(&n) => Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                crate::error::qualified(&info.group, &info.resource),
                ""
            ))
            .with_details(&info.group, &info.resource, "")),
            Some(_) => Ok(()),
        }
    }

    /// Creates an object in `ns` (ignored for cluster-scoped kinds) from a client's body.
    pub fn create(
        &self,
        info: &ResourceInfo,
        version: &str,
        ns: &str,
        body: Value,
        ctx: &Ctx,
    ) -> ApiResult<Arc<Value>> {
        self.create_inner(info, version, ns, body, ctx, false)
    }

    fn create_inner(
        &self,
        info: &ResourceInfo,
        version: &str,
        ns: &str,
        mut obj: Value,
        ctx: &Ctx,
        fields_done: bool,
    ) -> ApiResult<Arc<Value>> {
        Self::check_type(info, version, &obj)?;
        obj["apiVersion"] = json!(info.api_version(&info.storage_version));
        obj["kind"] = json!(info.kind);
        let managed = obj.pointer("/metadata/managedFields").cloned();
        {
            let md = meta::metadata_mut(&mut obj);
            let body_ns = md
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if info.namespaced {
                if !body_ns.is_empty() && body_ns != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                md.insert("namespace".into(), json!(ns));
            } else {
                md.remove("namespace");
            }
            let name = md.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            if name.is_empty() {
                let prefix = md.get("generateName").and_then(Value::as_str).unwrap_or("");
                if prefix.is_empty() {
                    return Err(ApiError::invalid(
                        &info.group,
                        &info.kind,
                        "",
                        vec![Cause::required("metadata.name")],
                    )
                    .with_message_prefix("name or generateName is required"));
                }
                md.insert("name".into(), json!(format!("{prefix}{}", meta::name_suffix())));
            }
            md.insert("uid".into(), json!(meta::new_uid()));
            md.insert("creationTimestamp".into(), json!(meta::now()));
            md.insert("generation".into(), json!(1));
            for k in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
                "managedFields",
            ] {
                md.remove(k);
            }
        }
        let name = meta::meta_str(&obj, "name").to_string();
        self.validate_name(info, &name)?;
        self.check_namespace_open(info, ns)?;
        if info.status_subresource
            && !info.builtin
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        let mut allocated = Vec::new();
        let result = self.admission.admit(info, None, &mut obj, &mut allocated);
        if let Err(e) = result {
            self.admission.release(&allocated);
            return Err(e);
        }
        if fields_done {
            if let Some(m) = managed {
                meta::metadata_mut(&mut obj).insert("managedFields".into(), m);
            }
        } else {
            let lt = Self::list_types(info);
            let scope = Scope::All;
            fields::record_update(
                None,
                &mut obj,
                &ctx.manager,
                scope,
                &info.api_version(version),
                &lt,
            );
        }
        if ctx.dry_run {
            self.admission.release(&allocated);
            return Ok(Arc::new(obj));
        }
        let key = Self::key(info, ns, &name);
        match self.store.create(key, obj) {
            Ok(stored) => {
                self.after_write(info, &stored);
                Ok(stored)
            }
            Err(e) => {
                self.admission.release(&allocated);
                Err(map_store(e, info, &name))
            }
        }
    }

    fn validate_name(&self, info: &ResourceInfo, name: &str) -> ApiResult<()> {
        let ok = match info.kind.as_str() {
            "Namespace" => meta::is_dns_label(name),
            "Service" => meta::is_dns1035_label(name),
            "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => {
                !name.is_empty() && !name.contains('/') && !name.contains('%') && name != "." && name != ".."
            }
            _ => meta::is_dns_subdomain(name),
        };
        if ok {
            return Ok(());
        }
        let why = match info.kind.as_str() {
            "Namespace" => {
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
            }
            "Service" => {
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"
            }
            _ => {
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            }
        };
        Err(ApiError::invalid(
            &info.group,
            &info.kind,
            name,
            vec![Cause::invalid("metadata.name", &json!(name), why)],
        ))
    }

    /// Replaces an object (`subresource` `status`: only its status) with a client's body.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &self,
        info: &ResourceInfo,
        version: &str,
        ns: &str,
        name: &str,
        body: Value,
        subresource: Option<&str>,
        ctx: &Ctx,
    ) -> ApiResult<Arc<Value>> {
        Self::check_type(info, version, &body)?;
        let body_name = meta::meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let current = self.get(info, ns, name)?;
        let body_rv = meta::meta_str(&body, "resourceVersion");
        if !body_rv.is_empty() && body_rv != meta::meta_str(&current, "resourceVersion") {
            return Err(ApiError::stale(&info.group, &info.resource, name));
        }
        let scope = Self::scope_for(info, subresource);
        let new = Self::compose(info, &current, body, scope);
        self.finish_update(info, version, &current, new, scope, ctx, false)
    }

    /// The object a write of `body` at `scope` makes from `current`.
    fn compose(info: &ResourceInfo, current: &Value, body: Value, scope: Scope) -> Value {
        let mut new = match scope {
            Scope::Status => {
                let mut n = current.clone();
                match body.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                n
            }
            Scope::Main | Scope::All => {
                let mut n = body;
                if scope == Scope::Main {
                    match current.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            if let Some(m) = n.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                n
            }
        };
        new["apiVersion"] = json!(info.api_version(&info.storage_version));
        new["kind"] = json!(info.kind);
        let md = meta::metadata_mut(&mut new);
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "managedFields",
        ] {
            match current.pointer(&format!("/metadata/{k}")) {
                Some(v) => {
                    md.insert(k.into(), v.clone());
                }
                None => {
                    md.remove(k);
                }
            }
        }
        new
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_update(
        &self,
        info: &ResourceInfo,
        version: &str,
        current: &Arc<Value>,
        mut new: Value,
        scope: Scope,
        ctx: &Ctx,
        fields_done: bool,
    ) -> ApiResult<Arc<Value>> {
        let name = meta::meta_str(current, "name").to_string();
        let ns = meta::meta_str(current, "namespace").to_string();
        if meta::is_deleting(current) {
            let before = meta::finalizers(current);
            if meta::finalizers(&new).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &info.group,
                    &info.kind,
                    &name,
                    vec![Cause::new(
                        "metadata.finalizers",
                        "FieldValueForbidden",
                        "Forbidden: no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        let mut allocated = Vec::new();
        if let Err(e) = self
            .admission
            .admit(info, Some(current), &mut new, &mut allocated)
        {
            self.admission.release(&allocated);
            return Err(e);
        }
        if strip_for_generation(&new) != strip_for_generation(current) {
            let g = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta::metadata_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        if !fields_done {
            let lt = Self::list_types(info);
            fields::record_update(
                Some(current),
                &mut new,
                &ctx.manager,
                scope,
                &info.api_version(version),
                &lt,
            );
        }
        if without_volatile(&new) == without_volatile(current)
            && new.pointer("/metadata/managedFields").map(strip_times)
                == current.pointer("/metadata/managedFields").map(strip_times)
        {
            return Ok(current.clone());
        }
        if ctx.dry_run {
            self.admission.release(&allocated);
            return Ok(Arc::new(new));
        }
        let key = Self::key(info, &ns, &name);
        let expected = meta::resource_version(current);
        if meta::is_deleting(&new) && !Self::has_finalizers(&new) {
            let last = self
                .store
                .delete(&key, Some(expected))
                .map_err(|e| map_store(e, info, &name))?;
            self.after_delete(info, &last);
            return Ok(last);
        }
        match self.store.update(key, expected, new) {
            Ok(stored) => {
                self.admission.release_replaced(info, current, &stored);
                self.after_write(info, &stored);
                Ok(stored)
            }
            Err(e) => {
                self.admission.release(&allocated);
                Err(map_store(e, info, &name))
            }
        }
    }

    fn has_finalizers(obj: &Value) -> bool {
        !meta::finalizers(obj).is_empty()
            || (obj.get("kind").and_then(Value::as_str) == Some("Namespace")
                && obj
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()))
    }

    /// Patches an object. Server-side apply creates it when missing.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        info: &ResourceInfo,
        version: &str,
        ns: &str,
        name: &str,
        patch_type: PatchType,
        patch: &Value,
        subresource: Option<&str>,
        ctx: &Ctx,
    ) -> ApiResult<Arc<Value>> {
        let scope = Self::scope_for(info, subresource);
        let lt = Self::list_types(info);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = self.store.get(&Self::key(info, ns, name));
            let Some(current) = current else {
                if let PatchType::Apply { force } = patch_type {
                    if scope == Scope::Status {
                        return Err(ApiError::not_found(&info.group, &info.resource, name));
                    }
                    Self::check_type(info, version, patch)?;
                    let mut applied = patch.clone();
                    let md = meta::metadata_mut(&mut applied);
                    md.insert("name".into(), json!(name));
                    let merged = fields::apply(
                        None,
                        &applied,
                        &ctx.manager,
                        force,
                        Scope::All,
                        &info.api_version(version),
                        &lt,
                        (&info.group, &info.resource, name),
                    )?;
                    let mut obj = merged;
                    obj["apiVersion"] = json!(info.api_version(version));
                    obj["kind"] = json!(info.kind);
                    meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
                    return match self.create_inner(info, version, ns, obj, ctx, true) {
                        Err(e) if e.reason == "AlreadyExists" && attempts < 5 => continue,
                        other => other,
                    };
                }
                return Err(ApiError::not_found(&info.group, &info.resource, name));
            };
            let served = Self::at_version(info, version, &current);
            let (mut new, fields_done) = match patch_type {
                PatchType::Merge => {
                    let mut doc = (*served).clone();
                    json_patch::merge(&mut doc, patch);
                    (doc, false)
                }
                PatchType::Json => {
                    let mut doc = (*served).clone();
                    json_patch_onto(&mut doc, patch)?;
                    (doc, false)
                }
                PatchType::Strategic => {
                    if !info.builtin {
                        return Err(ApiError::new(
                            415,
                            "UnsupportedMediaType",
                            "strategic merge patch is not supported for custom resources: use a JSON merge patch",
                        ));
                    }
                    let mut doc = (*served).clone();
                    crate::patch::strategic_merge(&info.kind, &mut doc, patch);
                    (doc, false)
                }
                PatchType::Apply { force } => {
                    Self::check_type(info, version, patch)?;
                    let applied_name = meta::meta_str(patch, "name");
                    if !applied_name.is_empty() && applied_name != name {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({applied_name}) does not match the name on the URL ({name})"
                        )));
                    }
                    let merged = fields::apply(
                        Some(&served),
                        patch,
                        &ctx.manager,
                        force,
                        scope,
                        &info.api_version(version),
                        &lt,
                        (&info.group, &info.resource, name),
                    )?;
                    (merged, true)
                }
            };
            let patch_rv = meta::meta_str(&new, "resourceVersion");
            if !patch_rv.is_empty() && patch_rv != meta::meta_str(&current, "resourceVersion") {
                return Err(ApiError::stale(&info.group, &info.resource, name));
            }
            if fields_done {
                let mf = new.pointer("/metadata/managedFields").cloned();
                new = Self::compose(info, &current, new, scope);
                if let Some(mf) = mf {
                    meta::metadata_mut(&mut new).insert("managedFields".into(), mf);
                }
            } else {
                new = Self::compose(info, &current, new, scope);
            }
            match self.finish_update(info, version, &current, new, scope, ctx, fields_done) {
                Err(e)
                    if e.reason == "Conflict"
                        && e.code == 409
                        && attempts < 5
                        && !e.message.starts_with("Apply failed") =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }

    /// Deletes an object: at once, or by setting `deletionTimestamp` when finalizers (or the
    /// propagation policy) make it wait.
    pub fn delete(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Arc<Value>> {
        loop {
            let current = self.get(info, ns, name)?;
            if let Some(uid) = &opts.uid
                && uid != meta::meta_str(&current, "uid")
            {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.resource,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::meta_str(&current, "uid")
                    ),
                ));
            }
            if let Some(rv) = opts.resource_version
                && rv != meta::resource_version(&current)
            {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.resource,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta::resource_version(&current)
                    ),
                ));
            }
            let mut new = (*current).clone();
            let mut finalizers = meta::finalizers(&new);
            let extra = match opts.propagation {
                Propagation::Foreground => Some(FINALIZER_FOREGROUND),
                Propagation::Orphan => Some(FINALIZER_ORPHAN),
                Propagation::Background => None,
            };
            let has_dependents = !self
                .store
                .dependents_of(meta::meta_str(&current, "uid"))
                .is_empty();
            if let Some(f) = extra
                && (has_dependents || !finalizers.is_empty())
                && !finalizers.iter().any(|x| x == f)
            {
                finalizers.push(f.to_string());
            }
            if !Self::has_finalizers(&new) && finalizers.is_empty() {
                if opts.dry_run {
                    return Ok(current);
                }
                match self
                    .store
                    .delete(&Self::key(info, ns, name), Some(meta::resource_version(&current)))
                {
                    Ok(last) => {
                        self.after_delete(info, &last);
                        return Ok(last);
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(map_store(e, info, name)),
                }
            }
            let md = meta::metadata_mut(&mut new);
            md.insert("finalizers".into(), json!(finalizers));
            if !md.contains_key("deletionTimestamp") {
                md.insert("deletionTimestamp".into(), json!(meta::now()));
                md.insert("deletionGracePeriodSeconds".into(), json!(0));
                let g = md.get("generation").and_then(Value::as_i64).unwrap_or(1);
                md.insert("generation".into(), json!(g + 1));
                if info.kind == "Namespace" {
                    new["status"]["phase"] = json!("Terminating");
                }
            }
            if new == *current || opts.dry_run {
                return Ok(Arc::new(new));
            }
            match self
                .store
                .update(Self::key(info, ns, name), meta::resource_version(&current), new)
            {
                Ok(stored) => return Ok(stored),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(map_store(e, info, name)),
            }
        }
    }

    /// The objects of a resource in a namespace (or all), with the list's resourceVersion.
    pub fn list(&self, info: &ResourceInfo, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        self.store
            .list(&info.gr(), if info.namespaced { ns } else { None })
    }

    /// Kind-specific defaulting, validation and allocation. Addresses taken are pushed to
    /// `allocated` so a failed write can return them.
    fn after_write(&self, info: &ResourceInfo, obj: &Value) {
        if info.group == "apiextensions.k8s.io"
            && info.kind == "CustomResourceDefinition"
            && let Ok(crd) = kinds::from_crd(obj)
        {
            self.registry.write().insert(crd);
        }
    }

    fn after_delete(&self, info: &ResourceInfo, last: &Value) {
        self.admission.release_held(info, last);
        if info.group == "apiextensions.k8s.io"
            && info.kind == "CustomResourceDefinition"
            && let Ok(crd) = kinds::from_crd(last)
        {
            {
                let gr = crd.gr();
                self.registry.write().remove(&gr);
                let (items, _) = self.store.list(&gr, None);
                for item in items {
                    let key = ObjectKey {
                        gr: gr.clone(),
                        namespace: meta::meta_str(&item, "namespace").to_string(),
                        name: meta::meta_str(&item, "name").to_string(),
                    };
                    let _ = self.store.delete(&key, None);
                }
            }
        }
    }
}

fn strip_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(a) = v.as_array_mut() {
        for e in a {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    v
}

impl ApiError {
    /// Replaces the message of a single-cause 422 with the API server's wording.
    fn with_message_prefix(mut self, why: &str) -> Self {
        self.message = format!("{}: {why}", self.message.split(':').next().unwrap_or(""));
        if let Some(c) = self
            .details
            .as_mut()
            .and_then(|d| d.pointer_mut("/causes/0/message"))
        {
            *c = json!(format!("Required value: {why}"));
        }
        self
    }
}

/// A JSON object with these fields.
pub fn obj(pairs: &[(&str, Value)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Map<_, _>>(),
    )
}

/// Applies an RFC 6902 JSON patch to `doc`: 400 for a patch that does not parse, 422 for one
/// that does not apply.
pub(crate) fn json_patch_onto(doc: &mut Value, patch: &Value) -> ApiResult<()> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(doc, &ops).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the JSON patch could not be applied: {e}"),
        )
    })
}

/// A built-in controller's write, logged (at debug) when it fails for a reason other than the
/// object having gone or changed meanwhile: the next event brings the controller back.
pub(crate) fn log_err(what: &str, r: ApiResult<impl Sized>) {
    if let Err(error) = r
        && error.code != 404
        && error.code != 409
    {
        tracing::debug!(%error, what, "controller write failed");
    }
}

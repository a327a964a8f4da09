//! Paged lists (`limit` / `continue`) through kube-rs: every object once and in order, one
//! snapshot for all pages, selectors, every scope, bad and expired tokens, and the watcher that
//! lists in pages.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, DeleteParams, ListParams, ObjectList, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use mcsd_crds::mcs::v1beta1::ServiceExport;
use mcsd_sandbox::Cluster;
use serde_json::json;

/// Every page of a list, following the continue tokens.
async fn pages<K>(api: &Api<K>, mut lp: ListParams) -> Vec<ObjectList<K>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let mut pages = Vec::new();
    loop {
        let page = api.list(&lp).await.expect("a page");
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        pages.push(page);
        match next {
            Some(token) => lp = lp.continue_token(&token),
            None => return pages,
        }
    }
}

/// `namespace/name` of every item of every page, in order.
fn keys<K: Resource + Clone>(pages: &[ObjectList<K>]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| &p.items)
        .map(|o| {
            format!(
                "{}/{}",
                o.meta().namespace.as_deref().unwrap_or(""),
                o.meta().name.as_deref().unwrap_or("")
            )
        })
        .collect()
}

fn resource_versions<K: Clone>(pages: &[ObjectList<K>]) -> BTreeSet<String> {
    pages
        .iter()
        .map(|p| p.metadata.resource_version.clone().unwrap_or_default())
        .collect()
}

/// `cluster` with `n` ConfigMaps (see [`config_maps`]) in a new namespace `ns`: a kube-rs API
/// for them and their names.
async fn seeded(cluster: &Cluster, ns: &str, n: usize) -> (Api<ConfigMap>, Vec<String>) {
    let client = cluster.admin_client().await.unwrap();
    namespace(&client, ns).await;
    (Api::namespaced(client, ns), config_maps(cluster, ns, n))
}

/// Creates an empty ConfigMap through kube-rs.
async fn create(cms: &Api<ConfigMap>, name: &str) {
    let cm = from_json(json!({"metadata": {"name": name}}));
    cms.create(&PostParams::default(), &cm).await.unwrap();
}

#[tokio::test]
async fn a_paged_list_has_every_object_once_in_order_at_the_first_pages_resource_version() {
    let cluster = cluster().await;
    let (cms, names) = seeded(&cluster, "many", 1200).await;

    let paged = pages(&cms, ListParams::default().limit(100)).await;
    assert_eq!(paged.len(), 12);
    let listed: Vec<String> = paged
        .iter()
        .flat_map(|p| &p.items)
        .map(|c| c.name_any())
        .collect();
    assert_eq!(listed, names);
    assert_eq!(
        resource_versions(&paged).len(),
        1,
        "one resourceVersion on every page"
    );
    for (i, page) in paged.iter().enumerate() {
        assert_eq!(page.items.len(), 100);
        let remaining = 1200 - 100 * (i as i64 + 1);
        assert_eq!(
            page.metadata.remaining_item_count,
            (remaining > 0).then_some(remaining)
        );
    }

    for lp in [
        ListParams::default(),
        ListParams::default().limit(0),
        ListParams::default().limit(1200),
    ] {
        let all = cms.list(&lp).await.unwrap();
        assert_eq!(all.items.len(), 1200, "{lp:?}");
        assert_eq!(all.metadata.continue_, None, "{lp:?}");
    }
}

#[tokio::test]
async fn selectors_apply_before_paging() {
    let cluster = cluster().await;
    let (cms, names) = seeded(&cluster, "many", 1200).await;

    let even = pages(&cms, ListParams::default().labels("parity=even").limit(100)).await;
    assert_eq!(even.len(), 6);
    let listed: Vec<String> = even.iter().flat_map(|p| &p.items).map(|c| c.name_any()).collect();
    assert_eq!(listed, names.iter().step_by(2).cloned().collect::<Vec<_>>());
    assert!(
        even.iter().all(|p| p.metadata.remaining_item_count.is_none()),
        "like a real API server, no remainingItemCount for a selected list"
    );
    let but_one = pages(
        &cms,
        ListParams::default().fields("metadata.name!=cm-0000").limit(500),
    )
    .await;
    assert_eq!(keys(&but_one).len(), 1199);
    assert_eq!(resource_versions(&but_one).len(), 1);
}

#[tokio::test]
async fn cluster_wide_cluster_scoped_and_custom_resource_lists_page_too() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    for ns in ["a", "b", "c"] {
        namespace(&client, ns).await;
        config_maps(&cluster, ns, 150);
    }
    let all: Api<ConfigMap> = Api::all(client.clone());
    let whole = all.list(&ListParams::default()).await.unwrap();
    let paged = pages(&all, ListParams::default().limit(100)).await;
    assert_eq!(keys(&paged), keys(std::slice::from_ref(&whole)));
    assert_eq!(keys(&paged).len(), 450);
    assert!(keys(&paged).is_sorted(), "by namespace, then name");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let whole = namespaces.list(&ListParams::default()).await.unwrap();
    let paged = pages(&namespaces, ListParams::default().limit(2)).await;
    assert_eq!(keys(&paged), keys(std::slice::from_ref(&whole)));
    assert!(paged.len() > 3);

    let exports: Api<ServiceExport> = Api::namespaced(client.clone(), "a");
    for i in 0..25 {
        exports
            .create(
                &PostParams::default(),
                &from_json(json!({"metadata": {"name": format!("e{i:02}")}, "spec": {}})),
            )
            .await
            .unwrap();
    }
    let paged = pages(&exports, ListParams::default().limit(10)).await;
    assert_eq!(paged.len(), 3);
    assert_eq!(
        keys(&paged),
        (0..25).map(|i| format!("a/e{i:02}")).collect::<Vec<_>>()
    );
}

/// As kube-apiserver lists: the items of a built-in kind name no type (the list does), so a
/// client that writes a listed object back must name it; a custom resource's items keep theirs.
#[tokio::test]
async fn a_built_in_kinds_list_items_carry_no_type_and_a_custom_resources_do() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    namespace(&client, "typed").await;
    config_maps(&cluster, "typed", 2);
    let exports: Api<ServiceExport> = Api::namespaced(client.clone(), "typed");
    exports
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "e"}, "spec": {}})),
        )
        .await
        .unwrap();
    let listed = |gvk, plural| {
        let api = dynamic(&client, gvk, plural, Some("typed"));
        async move { api.list(&ListParams::default()).await.unwrap().items }
    };
    let maps = listed(("", "v1", "ConfigMap"), "configmaps").await;
    assert!(!maps.is_empty());
    assert!(maps.iter().all(|o| o.types.is_none()), "{maps:?}");
    let exports = listed(
        ("multicluster.x-k8s.io", "v1beta1", "ServiceExport"),
        "serviceexports",
    )
    .await;
    assert_eq!(exports.len(), 1);
    assert_eq!(
        exports[0].types.as_ref().map(|t| t.kind.as_str()),
        Some("ServiceExport")
    );
    // A single object, and a watch's, name their type.
    let one = dynamic(&client, ("", "v1", "ConfigMap"), "configmaps", Some("typed"))
        .get(maps[0].metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(one.types.map(|t| t.kind), Some("ConfigMap".to_string()));
}

#[tokio::test]
async fn later_pages_are_the_snapshot_of_the_first_and_a_watch_from_it_catches_up() {
    let cluster = cluster().await;
    let (cms, names) = seeded(&cluster, "snap", 300).await;

    let lp = ListParams::default().limit(100);
    let first = cms.list(&lp).await.unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    // Between the pages: a deletion behind the cursor and one ahead of it, a creation ahead of
    // it, and a change ahead of it.
    for name in ["cm-0050", "cm-0250"] {
        cms.delete(name, &DeleteParams::default()).await.unwrap();
    }
    create(&cms, "cm-0150-new").await;
    let changed = json!({"data": {"changed": "yes"}});
    cms.patch("cm-0200", &PatchParams::default(), &Patch::Merge(&changed))
        .await
        .unwrap();

    let token = first.metadata.continue_.clone().unwrap();
    let mut paged = vec![first];
    paged.extend(pages(&cms, lp.continue_token(&token)).await);
    assert_eq!(resource_versions(&paged), BTreeSet::from([rv.clone()]));
    let mut listed: BTreeMap<String, ConfigMap> = paged
        .into_iter()
        .flat_map(|p| p.items)
        .map(|c| (c.name_any(), c))
        .collect();
    assert!(listed.keys().eq(&names), "the objects as they were at {rv}");
    assert_eq!(listed["cm-0200"].data, None, "cm-0200 as it was at {rv}");

    // A watch from the list's resourceVersion brings the list up to date.
    let wp = WatchParams::default().timeout(1);
    let mut events = cms.watch(&wp, &rv).await.unwrap().boxed();
    while let Some(event) = events.try_next().await.unwrap() {
        match event {
            WatchEvent::Added(c) | WatchEvent::Modified(c) => {
                listed.insert(c.name_any(), c);
            }
            WatchEvent::Deleted(c) => {
                listed.remove(&c.name_any());
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        }
    }
    let data = |c: ConfigMap| (c.name_any(), c.data);
    let now: BTreeMap<_, _> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(data)
        .collect();
    assert_eq!(listed.into_values().map(data).collect::<BTreeMap<_, _>>(), now);
}

#[tokio::test]
async fn a_malformed_continue_token_is_400_and_one_older_than_the_event_log_is_410_expired() {
    let cluster = cluster_with(|c| c.event_log_capacity = 20).await;
    let (cms, _) = seeded(&cluster, "old", 10).await;
    let lp = ListParams::default().limit(3);
    // Not base64 JSON; base64 JSON that is not a token (`{"rv":1}`).
    for garbage in ["garbage", "eyJydiI6MX0"] {
        assert_eq!(code(cms.list(&lp.clone().continue_token(garbage)).await), 400);
    }
    let first = cms.list(&lp).await.unwrap();
    let token = first.metadata.continue_.unwrap();
    let elsewhere: Api<ConfigMap> = Api::namespaced(cms.clone().into_client(), "default");
    assert_eq!(
        code(elsewhere.list(&lp.clone().continue_token(&token)).await),
        400,
        "a token from another namespace's list"
    );
    assert_eq!(
        cms.list(&lp.clone().continue_token(&token))
            .await
            .unwrap()
            .items
            .len(),
        3
    );

    // The 21st write pushes the first one after the token's resourceVersion out of the log.
    config_maps(&cluster, "default", 21);
    let expired = status(cms.list(&lp.continue_token(&token)).await);
    assert_eq!(
        (expired.code, expired.reason.as_str()),
        (410, "Expired"),
        "{expired:?}"
    );
}

/// What a kube-rs watcher (pages of 100) says exists, kept like a reflector keeps it: the
/// InitApply objects replace everything at InitDone.
struct Mirror {
    events: futures::stream::BoxStream<'static, Result<watcher::Event<ConfigMap>, watcher::Error>>,
    listing: BTreeMap<String, ConfigMap>,
    objects: BTreeMap<String, ConfigMap>,
    listed: bool,
}

impl Mirror {
    fn new(cms: &Api<ConfigMap>) -> Self {
        Self {
            events: watcher(cms.clone(), watcher::Config::default().page_size(100)).boxed(),
            listing: BTreeMap::new(),
            objects: BTreeMap::new(),
            listed: false,
        }
    }

    /// Applies the watcher's events until `done`, failing after 10 s.
    async fn until(&mut self, done: impl Fn(&Self) -> bool) {
        let run = async {
            while !done(self) {
                match self
                    .events
                    .try_next()
                    .await
                    .unwrap()
                    .expect("the watcher goes on")
                {
                    watcher::Event::Init => self.listing.clear(),
                    watcher::Event::InitApply(c) => {
                        assert!(self.listing.insert(c.name_any(), c).is_none(), "each object once");
                    }
                    watcher::Event::InitDone => {
                        self.objects = std::mem::take(&mut self.listing);
                        self.listed = true;
                    }
                    watcher::Event::Apply(c) => {
                        self.objects.insert(c.name_any(), c);
                    }
                    watcher::Event::Delete(c) => {
                        self.objects.remove(&c.name_any());
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the watcher gets there in time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_lists_1200_objects_in_pages_then_sees_a_change() {
    let cluster = cluster().await;
    let (cms, names) = seeded(&cluster, "many", 1200).await;
    let mut mirror = Mirror::new(&cms);
    mirror.until(|m| m.listed).await;
    assert!(mirror.objects.keys().eq(&names));

    create(&cms, "later").await;
    mirror.until(|m| m.objects.contains_key("later")).await;
    assert_eq!(mirror.objects.len(), 1201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_whose_list_changes_between_pages_lists_the_snapshot_then_catches_up() {
    let cluster = cluster().await;
    let (cms, original) = seeded(&cluster, "churn", 1200).await;
    let mut mirror = Mirror::new(&cms);
    // The first object comes once the first page is in; the other 11 pages are read later.
    mirror.until(|m| !m.listing.is_empty()).await;
    let mut names = original.clone();
    for name in ["cm-0001", "cm-1100"] {
        cms.delete(name, &DeleteParams::default()).await.unwrap();
        names.retain(|n| n != name);
    }
    for name in ["cm-0000-new", "cm-0700-new"] {
        create(&cms, name).await;
        names.push(name.to_string());
    }
    names.sort();
    let changed = json!({"data": {"changed": "yes"}});
    cms.patch("cm-0900", &PatchParams::default(), &Patch::Merge(&changed))
        .await
        .unwrap();

    mirror.until(|m| m.listed).await;
    assert!(
        mirror.objects.keys().eq(&original),
        "the list is the first page's snapshot"
    );
    mirror
        .until(|m| m.objects.keys().eq(&names) && m.objects.get("cm-0900").is_some_and(|c| c.data.is_some()))
        .await;
}

//! Policy bundle versions on both systems of record: numbered per tenant, optimistic
//! concurrency, confined to their tenant, the newest of each tenant for start-up.

mod common;

use std::collections::BTreeMap;

use serde_json::json;
use warden_core::{Error, TenantId};
use warden_store::NewBundleVersion;

use common::{Backend, TestDb};

fn bundle(tenant: &str, text: &str, expected: Option<i64>) -> NewBundleVersion {
    let mut files = BTreeMap::new();
    files.insert(format!("{tenant}/base.cedar"), text.to_owned());
    NewBundleVersion {
        tenant: TenantId::parse(tenant).unwrap(),
        files,
        sha256: format!("{:064x}", text.len()),
        mode: "enforce".into(),
        source: "api".into(),
        author: "alice".into(),
        message: Some(format!("set {text}")),
        test_failures: None,
        expected_version: expected,
    }
}

async fn versions_are_numbered_per_tenant_and_read_back_as_written(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let acme = TenantId::parse("acme").unwrap();
    let v1 = store
        .append_bundle_version(bundle(
            "acme",
            "permit(principal, action, resource);",
            Some(0),
        ))
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    let mut second = bundle("acme", "forbid(principal, action, resource);", Some(1));
    second.test_failures = Some(json!([{"case": "reads are allowed", "got": "deny"}]));
    second.mode = "warn".into();
    let v2 = store.append_bundle_version(second).await.unwrap();
    assert_eq!(v2.version, 2);
    let other = store
        .append_bundle_version(bundle(
            "globex",
            "permit(principal, action, resource);",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(other.version, 1, "each tenant counts its own versions");

    assert_eq!(
        store.bundle_version(&acme, 1).await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(
        store.bundle_version(&acme, 2).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(store.bundle_version(&acme, 3).await.unwrap(), None);
    let listed = store.bundle_versions(&acme).await.unwrap();
    assert_eq!(listed, vec![v2.clone(), v1], "newest first");
    assert!(
        listed.iter().all(|v| v.tenant == acme),
        "no other tenant's rows"
    );
    let latest = store.latest_bundle_versions().await.unwrap();
    assert_eq!(latest, vec![v2, other]);
    let globex = TenantId::parse("globex").unwrap();
    assert_eq!(
        store.bundle_heads().await.unwrap(),
        vec![(acme, 2), (globex, 1)],
        "the newest version number of each tenant, in tenant order"
    );
}

async fn a_writer_based_on_a_stale_version_gets_a_conflict(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    store
        .append_bundle_version(bundle(
            "acme",
            "permit(principal, action, resource);",
            Some(0),
        ))
        .await
        .unwrap();
    // Two writers both based on version 1, at once: exactly one lands.
    let (a, b2) = tokio::join!(
        store.append_bundle_version(bundle("acme", "a", Some(1))),
        store.append_bundle_version(bundle("acme", "b", Some(1))),
    );
    let (ok, err): (Vec<_>, Vec<_>) = [a, b2].into_iter().partition(|r| r.is_ok());
    assert_eq!(ok.len(), 1);
    match err.into_iter().next().unwrap() {
        Err(Error::Conflict(m)) => assert!(m.contains("version 2, not 1"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let acme = TenantId::parse("acme").unwrap();
    assert_eq!(store.bundle_versions(&acme).await.unwrap().len(), 2);
}

on_both_backends!(
    versions_are_numbered_per_tenant_and_read_back_as_written,
    a_writer_based_on_a_stale_version_gets_a_conflict,
);

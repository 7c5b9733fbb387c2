//! Requests the schema cannot make sense of are refused before any policy is consulted.

mod common;

use common::*;
use serde_json::json;
use warden_core::Outcome;
use warden_policy::Engine;

#[test]
fn an_unknown_action_is_refused() {
    let e = Engine::empty();
    let mut req = call_tool("acme", "x__y");
    req.action = "launch_missiles".into();
    let err = e.check_request(&req).unwrap_err();
    assert!(err.contains("unknown action \"launch_missiles\""), "{err}");
    assert!(err.contains("call_tool"), "{err}");
    let d = e.decide(&req);
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.errors, [err]);
}

#[test]
fn a_principal_type_the_action_does_not_apply_to_is_refused() {
    let e = Engine::empty();
    let req = request("acme", ("Team", "platform"), "call_tool", ("Tool", "x__y"));
    let err = e.check_request(&req).unwrap_err();
    assert!(
        err.contains("principal type \"Team\" is not allowed for action \"call_tool\""),
        "{err}"
    );
    assert!(err.contains("Agent, ServiceAccount, User"), "{err}");
}

#[test]
fn a_resource_type_the_action_does_not_apply_to_is_refused() {
    let e = Engine::empty();
    let req = request("acme", ("Agent", "a"), "call_tool", ("Repository", "x"));
    let err = e.check_request(&req).unwrap_err();
    assert!(
        err.contains("resource type \"Repository\" is not allowed for action \"call_tool\""),
        "{err}"
    );
    assert!(
        e.check_request(&request(
            "acme",
            ("User", "bob"),
            "delete",
            ("Secret", "db")
        ))
        .is_ok()
    );
}

#[test]
fn context_keys_warden_fills_in_are_refused() {
    let e = Engine::empty();
    for key in ["namespace", "time", "on_behalf_of", "session"] {
        let mut req = call_tool("acme", "x__y");
        req.context.insert(key.into(), json!("forged"));
        let err = e.check_request(&req).unwrap_err();
        assert!(
            err.contains(&format!("context key \"{key}\" is filled in by Warden")),
            "{err}"
        );
    }
}

#[test]
fn a_namespace_outside_the_tenant_is_refused() {
    let e = Engine::empty();
    let mut req = call_tool("acme", "x__y");
    req.tenant = warden_core::TenantId::parse("globex").unwrap();
    assert!(
        e.check_request(&req)
            .unwrap_err()
            .contains("does not belong to tenant")
    );
}

#[test]
fn a_well_formed_request_passes() {
    assert_eq!(
        Engine::empty().check_request(&call_tool("acme/platform", "x__y")),
        Ok(())
    );
}

//! OCSF API Activity (class 6003, category 6 Application Activity).
//!
//! Mapping: the agent is the actor's application, the user it acts for is the actor's user,
//! the decision goes to `actor.authorizations` (one entry per determining policy), the action
//! to `api.operation`, the governed tool or resource to `resources`, the door (gateway, API,
//! CLI) to `src_endpoint`. What OCSF has no place for stays under `unmapped.warden`, with the
//! redacted payload, so nothing is lost on the way to the SIEM.

use serde::Serialize;
use warden_core::{AuditEvent, Outcome};

use super::ExportRecord;

/// The OCSF schema version the output follows.
pub const OCSF_VERSION: &str = "1.3.0";

const CLASS_UID: u32 = 6003;
const CATEGORY_UID: u32 = 6;

#[derive(Serialize)]
pub struct ApiActivity<'a> {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
    type_uid: u32,
    type_name: String,
    severity_id: u32,
    severity: &'static str,
    status_id: u32,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<&'static str>,
    /// Milliseconds since the epoch.
    time: i64,
    message: String,
    metadata: Metadata<'a>,
    actor: Actor<'a>,
    api: Api<'a>,
    src_endpoint: Endpoint<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_request: Option<HttpRequest<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<Resource<'a>>,
    unmapped: Unmapped<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    version: &'static str,
    uid: String,
    product: Product,
    tenant_uid: &'a str,
    log_name: &'static str,
    event_code: &'a str,
    sequence: u64,
    original_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_uid: Option<&'a str>,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Actor<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<Session<'a>>,
    /// The agent acting (for agent sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    app_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorizations: Vec<Authorization<'a>>,
}

#[derive(Serialize)]
struct User<'a> {
    uid: &'a str,
    name: &'a str,
    /// 1 User, 3 System (a token acting for nobody in particular), per OCSF.
    type_id: u32,
    #[serde(rename = "type")]
    type_name: &'static str,
}

#[derive(Serialize)]
struct Session<'a> {
    uid: &'a str,
}

#[derive(Serialize)]
struct Authorization<'a> {
    decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<Policy<'a>>,
}

#[derive(Serialize)]
struct Policy<'a> {
    uid: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    desc: Option<&'a str>,
}

#[derive(Serialize)]
struct Api<'a> {
    operation: &'a str,
    service: Service<'a>,
    request: Request,
}

#[derive(Serialize)]
struct Service<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Request {
    uid: String,
}

#[derive(Serialize)]
struct Endpoint<'a> {
    /// The door that saw the action (`warden.gateway`, `warden.api`, …).
    svc_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
}

#[derive(Serialize)]
struct HttpRequest<'a> {
    user_agent: &'a str,
}

#[derive(Serialize)]
struct Resource<'a> {
    #[serde(rename = "type")]
    resource_type: &'a str,
    uid: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct Unmapped<'a> {
    warden: WardenFields<'a>,
}

#[derive(Serialize)]
struct WardenFields<'a> {
    namespace: &'a str,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'static str>,
    payload_sha256: &'a str,
    payload_purged: bool,
    payload: super::Payload<'a>,
}

/// OCSF's activity for a Warden action or event type.
fn activity(e: &AuditEvent) -> (u32, &'static str) {
    let action = e.header.action.as_deref().unwrap_or("");
    let ty = e.header.event_type.as_str();
    match action {
        "create" => (1, "Create"),
        "read" | "list_tools" | "read_resource" | "get_prompt" => (2, "Read"),
        "write" | "update" => (3, "Update"),
        "delete" | "revoke" => (4, "Delete"),
        _ if ty.ends_with(".created") || ty.ends_with(".requested") => (1, "Create"),
        _ if ty.ends_with(".updated") || ty.ends_with(".changed") => (3, "Update"),
        _ if ty.ends_with(".deleted") || ty.ends_with(".revoked") => (4, "Delete"),
        _ => (99, "Other"),
    }
}

fn decision_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allowed",
        Outcome::Deny => "denied",
        Outcome::ApprovalRequired => "approval required",
    }
}

impl<'a> From<&ExportRecord<'a>> for ApiActivity<'a> {
    fn from(r: &ExportRecord<'a>) -> Self {
        let e = r.event;
        let h = &e.header;
        let outcome = super::outcome(e);
        let (activity_id, activity_name) = activity(e);
        // A decision that denies is a failed attempt; one held for approval is neither yet.
        let (status_id, status) = match outcome {
            Some(Outcome::Deny) => (2, "Failure"),
            Some(Outcome::ApprovalRequired) => (99, "Other"),
            _ => (1, "Success"),
        };
        let (severity_id, severity) = match outcome {
            Some(Outcome::Deny) => (3, "Medium"),
            Some(Outcome::ApprovalRequired) => (2, "Low"),
            _ => (1, "Informational"),
        };
        let authorizations = match &h.decision {
            None => Vec::new(),
            Some(d) if d.policies.is_empty() => vec![Authorization {
                decision: decision_word(d.outcome),
                policy: None,
            }],
            Some(d) => d
                .policies
                .iter()
                .map(|p| Authorization {
                    decision: decision_word(d.outcome),
                    policy: Some(Policy {
                        uid: &p.id,
                        name: &p.id,
                        desc: p.reason.as_deref(),
                    }),
                })
                .collect(),
        };
        let user = super::user_of(e).map(|uid| {
            let is_person = h.actor.on_behalf_of.is_some()
                || h.actor
                    .principal
                    .as_ref()
                    .is_some_and(|p| p.entity_type == "User");
            User {
                uid,
                name: uid,
                type_id: if is_person { 1 } else { 3 },
                type_name: if is_person { "User" } else { "System" },
            }
        });
        let operation = h.action.as_deref().unwrap_or(&h.event_type);
        let mut message = format!("{} {}", h.event_type, operation);
        if let Some(res) = &h.resource {
            message.push_str(&format!(" {}::{:?}", res.resource_type, res.id));
        }
        if let Some(o) = outcome {
            message.push_str(": ");
            message.push_str(o.as_str());
        }
        ApiActivity {
            class_uid: CLASS_UID,
            class_name: "API Activity",
            category_uid: CATEGORY_UID,
            category_name: "Application Activity",
            activity_id,
            activity_name,
            type_uid: CLASS_UID * 100 + activity_id,
            type_name: format!("API Activity: {activity_name}"),
            severity_id,
            severity,
            status_id,
            status,
            status_detail: outcome.map(Outcome::as_str),
            time: h.time.timestamp_millis(),
            message,
            metadata: Metadata {
                version: OCSF_VERSION,
                uid: h.id.to_string(),
                product: Product {
                    name: "Warden",
                    vendor_name: "Warden",
                    version: env!("CARGO_PKG_VERSION"),
                },
                tenant_uid: &h.tenant,
                log_name: "warden.audit",
                event_code: &h.event_type,
                sequence: r.seq,
                original_time: h.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                correlation_uid: h.trace.as_ref().map(|t| t.trace_id.as_str()),
            },
            actor: Actor {
                user,
                session: h.actor.session.as_deref().map(|uid| Session { uid }),
                app_name: h.actor.agent.as_deref(),
                authorizations,
            },
            api: Api {
                operation,
                service: Service { name: &h.source },
                request: Request {
                    uid: h.id.to_string(),
                },
            },
            src_endpoint: Endpoint {
                svc_name: &h.source,
                ip: h.client.as_ref().and_then(|c| c.address.as_deref()),
            },
            http_request: h
                .client
                .as_ref()
                .and_then(|c| c.user_agent.as_deref())
                .map(|user_agent| HttpRequest { user_agent }),
            resources: h
                .resource
                .iter()
                .map(|res| Resource {
                    resource_type: &res.resource_type,
                    uid: &res.id,
                    name: &res.id,
                })
                .collect(),
            unmapped: Unmapped {
                warden: WardenFields {
                    namespace: &h.namespace,
                    source: &h.source,
                    token_id: h.actor.token_id.as_deref(),
                    role: h.actor.role.as_deref(),
                    decision: outcome.map(Outcome::as_str),
                    payload_sha256: &h.payload_sha256,
                    payload_purged: r.payload_purged,
                    payload: r.payload(),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use warden_core::Outcome;

    use super::super::{ExportFormat, ExportRecord, fixtures};

    /// The attributes OCSF 1.3 marks `required` for API Activity (its own, those of the base
    /// event it extends, and those of the objects used), as paths.
    const REQUIRED: &[&str] = &[
        "activity_id",
        "category_uid",
        "class_uid",
        "severity_id",
        "time",
        "type_uid",
        "metadata",
        "metadata.version",
        "metadata.product",
        "metadata.product.vendor_name",
        "actor",
        "api",
        "api.operation",
        "src_endpoint",
    ];
    const INTEGERS: &[&str] = &[
        "activity_id",
        "category_uid",
        "class_uid",
        "severity_id",
        "status_id",
        "time",
        "type_uid",
    ];

    fn ocsf(event: &warden_core::AuditEvent) -> Value {
        let mut out = Vec::new();
        ExportFormat::Ocsf.write(
            &mut out,
            &ExportRecord {
                event,
                seq: 9,
                payload_purged: false,
                payload_json: None,
            },
        );
        serde_json::from_slice(&out).unwrap()
    }

    fn at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
        path.split('.').try_fold(v, |v, k| v.get(k))
    }

    fn assert_valid_api_activity(v: &Value) {
        for path in REQUIRED {
            let found = at(v, path);
            assert!(
                found.is_some_and(|x| !x.is_null()),
                "required `{path}` missing in {v:#}"
            );
        }
        for path in INTEGERS {
            assert!(at(v, path).unwrap().is_u64(), "`{path}` is not an integer");
        }
        assert_eq!(v["class_uid"], 6003);
        assert_eq!(v["category_uid"], 6);
        let activity = v["activity_id"].as_u64().unwrap();
        assert!(
            [0, 1, 2, 3, 4, 99].contains(&activity),
            "activity {activity}"
        );
        assert_eq!(v["type_uid"].as_u64().unwrap(), 6003 * 100 + activity);
        assert!([0, 1, 2, 3, 4, 5, 6, 99].contains(&v["severity_id"].as_u64().unwrap()));
        assert!([0, 1, 2, 99].contains(&v["status_id"].as_u64().unwrap()));
    }

    #[test]
    fn decisions_carry_the_outcome_in_actor_authorizations() {
        let e = fixtures::decision(Outcome::Deny);
        let v = ocsf(&e);
        assert_valid_api_activity(&v);
        let auth = &v["actor"]["authorizations"][0];
        assert_eq!(auth["decision"], "denied");
        assert_eq!(auth["policy"]["uid"], "no-prod=writes");
        assert_eq!(auth["policy"]["desc"], "writes | need\nreview");
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status_detail"], "deny");
        assert_eq!(v["actor"]["app_name"], "claude-code");
        assert_eq!(v["actor"]["user"]["uid"], "alice|ops=1\\x");
        assert_eq!(v["actor"]["user"]["type_id"], 1);
        assert_eq!(v["actor"]["session"]["uid"], "s-1");
        assert_eq!(v["api"]["operation"], "call_tool");
        assert_eq!(v["resources"][0]["uid"], "github__create_issue");
        assert_eq!(v["src_endpoint"]["ip"], "10.0.0.7");
        assert_eq!(v["metadata"]["uid"], e.header.id.to_string());
        assert_eq!(v["metadata"]["sequence"], 9);
        assert_eq!(v["metadata"]["tenant_uid"], "acme");
        assert_eq!(
            v["metadata"]["correlation_uid"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(v["time"], e.header.time.timestamp_millis());
        assert_eq!(v["unmapped"]["warden"]["payload"], e.payload);

        let allowed = ocsf(&fixtures::decision(Outcome::Allow));
        assert_valid_api_activity(&allowed);
        assert_eq!(allowed["actor"]["authorizations"][0]["decision"], "allowed");
        assert_eq!(allowed["status_id"], 1);
        let held = ocsf(&fixtures::decision(Outcome::ApprovalRequired));
        assert_valid_api_activity(&held);
        assert_eq!(
            held["actor"]["authorizations"][0]["decision"],
            "approval required"
        );
    }

    #[test]
    fn administrative_events_are_valid_too() {
        let v = ocsf(&fixtures::admin());
        assert_valid_api_activity(&v);
        assert_eq!(v["activity_id"], 1, "token.created is a create");
        assert_eq!(v["api"]["operation"], "token.created");
        assert_eq!(v["actor"]["user"]["uid"], "tok_admin");
        assert_eq!(v["actor"]["user"]["type_id"], 3);
        assert!(v["actor"].get("authorizations").is_none());
        assert!(v.get("resources").is_none());
    }
}

//! Secrets never reach storage in clear: values named by redaction rules, values under
//! secret-sounding keys and secret-shaped values are replaced by `HMAC-SHA256(tenant key,
//! value)` before an event is recorded.
//!
//! A keyed hash rather than a mask keeps one question answerable: an auditor holding a
//! suspected leaked value can hash it with the tenant key and search for it ("was this token
//! ever used?"), while someone reading the stored events learns nothing. Keys are per tenant,
//! so the same secret used by two tenants does not link them.

use std::sync::LazyLock;

use hmac::{Hmac, KeyInit as _, Mac as _};
use regex::RegexSet;
use serde_json::{Map, Value};
use sha2::Sha256;
use warden_core::canonical;

/// Every keyed hash starts with this, so a reader (and the detectors) know it is one.
pub const HASH_PREFIX: &str = "hmac-sha256:";
const TENANT_KEY_CONTEXT: &[u8] = b"warden-redaction-v1\0";

/// Derives a tenant's redaction key from the deployment's master key.
pub fn tenant_key(master: &[u8; 32], tenant: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(master).expect("HMAC accepts any key length");
    mac.update(TENANT_KEY_CONTEXT);
    mac.update(tenant.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Derives another per-tenant key from the master key, for a purpose named by `context`
/// (distinct from the redaction key, so one never stands in for the other).
pub fn purpose_key(master: &[u8; 32], context: &str, tenant: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(master).expect("HMAC accepts any key length");
    mac.update(context.as_bytes());
    mac.update(b"\0");
    mac.update(tenant.as_bytes());
    mac.finalize().into_bytes().into()
}

/// `HMAC-SHA256(key, bytes)`, hex.
pub fn mac_hex(key: &[u8; 32], bytes: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(bytes);
    hex::encode(mac.finalize().into_bytes())
}

/// A documented secret detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detector {
    pub name: &'static str,
    pub description: &'static str,
}

/// An object key whose values are treated as secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretKeyName {
    pub key: &'static str,
    pub description: &'static str,
}

/// Name reported when a value was redacted because of the key it sits under.
pub const KEY_NAME_DETECTOR: &str = "secret_key_name";

/// Every detector the redactor runs, independently of any configured path.
pub const DETECTORS: &[Detector] = &[
    Detector {
        name: KEY_NAME_DETECTOR,
        description: "Any string or number under an object key listed in SECRET_KEY_NAMES \
                      (case-insensitive, '_' and '-' ignored, also as a suffix: db_password, X-Api-Key).",
    },
    Detector {
        name: "pem_private_key",
        description: "A PEM private key block (RSA, EC, OpenSSH, PKCS#8, PGP).",
    },
    Detector {
        name: "aws_access_key_id",
        description: "An AWS access key id (AKIA… long-term, ASIA… temporary).",
    },
    Detector {
        name: "github_token",
        description: "A GitHub token: gho_/ghp_/ghu_/ghs_/ghr_ or a fine-grained github_pat_.",
    },
    Detector {
        name: "slack_token",
        description: "A Slack token (xoxa-, xoxb-, xoxp-, xoxr-, xoxs-).",
    },
    Detector {
        name: "jwt",
        description: "A JSON Web Token: three base64url parts, header and claims starting 'eyJ'.",
    },
    Detector {
        name: "bearer_token",
        description: "A 'Bearer <opaque token>' credential, as in an Authorization header.",
    },
    Detector {
        name: "warden_token",
        description: "A Warden API or agent-session token (wdn_…).",
    },
    Detector {
        name: "google_api_key",
        description: "A Google API key (AIza…).",
    },
    Detector {
        name: "stripe_secret_key",
        description: "A live Stripe secret or restricted key (sk_live_…, rk_live_…).",
    },
    Detector {
        name: "connection_string_password",
        description: "A URL or connection string with an inline password (scheme://user:password@host).",
    },
];

/// Keys whose values are secrets whatever they look like.
pub const SECRET_KEY_NAMES: &[SecretKeyName] = &[
    SecretKeyName {
        key: "password",
        description: "A password.",
    },
    SecretKeyName {
        key: "passwd",
        description: "A password, Unix spelling.",
    },
    SecretKeyName {
        key: "secret",
        description: "Any secret; also matches client_secret, webhook_secret, …",
    },
    SecretKeyName {
        key: "client_secret",
        description: "An OAuth client secret.",
    },
    SecretKeyName {
        key: "token",
        description: "Any token; also matches github_token, id_token, …",
    },
    SecretKeyName {
        key: "access_token",
        description: "An OAuth access token.",
    },
    SecretKeyName {
        key: "refresh_token",
        description: "An OAuth refresh token.",
    },
    SecretKeyName {
        key: "api_key",
        description: "An API key; also matches x-api-key.",
    },
    SecretKeyName {
        key: "apikey",
        description: "An API key, written as one word.",
    },
    SecretKeyName {
        key: "authorization",
        description: "An HTTP Authorization or Proxy-Authorization header value.",
    },
    SecretKeyName {
        key: "private_key",
        description: "A private key in any encoding.",
    },
    SecretKeyName {
        key: "credentials",
        description: "A credentials blob; every value inside it is hashed.",
    },
    SecretKeyName {
        key: "cookie",
        description: "An HTTP Cookie header: session identifiers.",
    },
    SecretKeyName {
        key: "set_cookie",
        description: "An HTTP Set-Cookie header.",
    },
    SecretKeyName {
        key: "session_token",
        description: "A session token (e.g. temporary cloud credentials).",
    },
];

/// Value shapes, by detector name. A match anywhere in a string redacts the whole string:
/// a partial mask would leave the surrounding text to help guess the secret.
const SHAPES: &[(&str, &str)] = &[
    (
        "pem_private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    ),
    ("aws_access_key_id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    (
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    ),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    ),
    ("bearer_token", r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"),
    ("warden_token", r"\bwdn_[A-Za-z0-9]{20,}"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("stripe_secret_key", r"\b[rs]k_live_[0-9A-Za-z]{16,}"),
    (
        "connection_string_password",
        r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:[^\s/?#@]+@[^\s/?#@]",
    ),
];

static SHAPE_SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(SHAPES.iter().map(|(_, pattern)| pattern)).expect("detector patterns compile")
});

static NORMALIZED_SECRET_KEYS: LazyLock<Vec<String>> = LazyLock::new(|| {
    SECRET_KEY_NAMES
        .iter()
        .map(|k| normalize_key(k.key))
        .collect()
});

fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// True for keys like `password`, `DB_PASSWORD`, `X-Api-Key`, `github_token`.
pub fn is_secret_key(key: &str) -> bool {
    // Every key of every payload passes here: normalise the usual (short, ASCII) ones on the
    // stack; `normalize_key` lowercases the same way for them.
    if key.is_ascii() && key.len() <= 128 {
        let mut buf = [0u8; 128];
        let mut n = 0;
        for b in key.bytes().filter(|b| *b != b'_' && *b != b'-') {
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
        let key = &buf[..n];
        return NORMALIZED_SECRET_KEYS
            .iter()
            .any(|secret| key.ends_with(secret.as_bytes()));
    }
    let key = normalize_key(key);
    NORMALIZED_SECRET_KEYS
        .iter()
        .any(|secret| key.ends_with(secret.as_str()))
}

/// The shortest text any of [`SHAPES`] can match: `a://:x@y`, a connection string with a
/// one-character password. Every key and string of every payload is checked, and most are
/// shorter than this; they skip the regex set.
const SHORTEST_SHAPE: usize = 8;

/// The name of the first value-shape detector that recognises `text` as a secret.
pub fn detect_secret_shape(text: &str) -> Option<&'static str> {
    if text.len() < SHORTEST_SHAPE {
        return None;
    }
    SHAPE_SET.matches(text).iter().next().map(|i| SHAPES[i].0)
}

/// True for a value this module produced. Checked strictly, so that a secret merely
/// prefixed with `hmac-sha256:` is still redacted.
pub fn is_redacted(text: &str) -> bool {
    text.strip_prefix(HASH_PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The dot path of the value being looked at, kept in one buffer for the whole walk.
type Trail = String;

/// Appends a segment to the path; returns the length to truncate back to.
fn push(trail: &mut Trail, segment: &str) -> usize {
    let mark = trail.len();
    if !trail.is_empty() {
        trail.push('.');
    }
    trail.push_str(segment);
    mark
}

/// What [`Redactor::redact`] replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedactionReport {
    /// Dot paths of the replaced values, relative to the redacted value (`args.token`).
    pub paths: Vec<String>,
    /// Detectors that fired, each once, in the order they first fired.
    pub detectors: Vec<&'static str>,
}

impl RedactionReport {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    fn detector(&mut self, name: &'static str) {
        if !self.detectors.contains(&name) {
            self.detectors.push(name);
        }
    }
}

/// Replaces secrets by their keyed hash under one tenant's key.
#[derive(Clone)]
pub struct Redactor {
    key: [u8; 32],
    /// Redaction happens elsewhere (see [`Redactor::deferred`]).
    deferred: bool,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor { .. }")
    }
}

impl Redactor {
    pub fn new(key: [u8; 32]) -> Redactor {
        Redactor {
            key,
            deferred: false,
        }
    }

    /// A redactor that leaves values as they are, for a door that hands its events to a
    /// server which redacts them before storage (`warden gateway stdio --remote`): the
    /// tenant's key stays on the server, and hashing under any other key would make the
    /// stored hashes unsearchable. Its [`redact`](Self::redact) changes nothing; its hashes
    /// are under an all-zero key and must not be stored.
    pub fn deferred() -> Redactor {
        Redactor {
            key: [0; 32],
            deferred: true,
        }
    }

    /// Whether this redactor leaves redaction to the server (see [`Redactor::deferred`]).
    pub fn is_deferred(&self) -> bool {
        self.deferred
    }

    fn mac(&self, bytes: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(bytes);
        format!("{HASH_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// `hmac-sha256:<hex>` over the raw UTF-8, so an auditor can hash a plain value and search.
    pub fn hash_str(&self, value: &str) -> String {
        self.mac(value.as_bytes())
    }

    /// Strings hash as their raw text (as [`Redactor::hash_str`]); any other value over its
    /// canonical JSON, so a number hashes like its decimal text.
    pub fn hash_value(&self, value: &Value) -> String {
        match value {
            Value::String(s) => self.hash_str(s),
            other => self.mac(&canonical::to_vec(other)),
        }
    }

    /// Redacts `value` in place: first the values at `paths` (dot paths, `*` for any key or
    /// index, numbers index arrays; a matched object or array becomes one hash of its
    /// canonical form), then every remaining value the detectors recognise.
    pub fn redact(&self, value: &mut Value, paths: &[&str]) -> RedactionReport {
        let mut report = RedactionReport::default();
        if self.deferred {
            return report;
        }
        let mut trail = String::new();
        for path in paths {
            let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
            if !segments.is_empty() {
                self.redact_path(value, &segments, &mut trail, &mut report);
            }
        }
        self.scan(value, false, &mut trail, &mut report);
        report
    }

    fn redact_path(
        &self,
        value: &mut Value,
        segments: &[&str],
        trail: &mut Trail,
        report: &mut RedactionReport,
    ) {
        let Some((segment, rest)) = segments.split_first() else {
            // Null says "the field was empty", which is not secret and is worth keeping.
            let skip = value.is_null() || value.as_str().is_some_and(is_redacted);
            if !skip {
                *value = Value::String(self.hash_value(value));
                report.paths.push(trail.clone());
            }
            return;
        };
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    if *segment == "*" || segment == key {
                        let mark = push(trail, key);
                        self.redact_path(child, rest, trail, report);
                        trail.truncate(mark);
                    }
                }
            }
            Value::Array(items) => {
                let wanted = segment.parse::<usize>().ok();
                for (i, child) in items.iter_mut().enumerate() {
                    if *segment == "*" || wanted == Some(i) {
                        let mark = push(trail, &i.to_string());
                        self.redact_path(child, rest, trail, report);
                        trail.truncate(mark);
                    }
                }
            }
            _ => {}
        }
    }

    /// Runs the detectors. Under a secret key (`in_secret`), every string and number below is
    /// hashed on its own, so the shape stays readable and each value stays searchable.
    fn scan(
        &self,
        value: &mut Value,
        in_secret: bool,
        trail: &mut Trail,
        report: &mut RedactionReport,
    ) {
        match value {
            Value::Object(map) => {
                if map.keys().any(|k| detect_secret_shape(k).is_some()) {
                    self.rename_secret_keys(map, trail, report);
                }
                for (key, child) in map.iter_mut() {
                    let secret = in_secret || is_secret_key(key);
                    let mark = push(trail, key);
                    self.scan(child, secret, trail, report);
                    trail.truncate(mark);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    let mark = push(trail, &i.to_string());
                    self.scan(child, in_secret, trail, report);
                    trail.truncate(mark);
                }
            }
            Value::String(s) if is_redacted(s) => {}
            Value::String(s) => {
                let detector = if in_secret {
                    Some(KEY_NAME_DETECTOR)
                } else {
                    detect_secret_shape(s)
                };
                if let Some(name) = detector {
                    *s = self.hash_str(s);
                    report.paths.push(trail.clone());
                    report.detector(name);
                }
            }
            Value::Number(_) if in_secret => {
                *value = Value::String(self.hash_value(value));
                report.paths.push(trail.clone());
                report.detector(KEY_NAME_DETECTOR);
            }
            _ => {}
        }
    }

    /// A secret used as an object key (a map keyed by token, say) is as exposed as a value.
    fn rename_secret_keys(
        &self,
        map: &mut Map<String, Value>,
        trail: &mut Trail,
        report: &mut RedactionReport,
    ) {
        let old = std::mem::take(map);
        for (key, child) in old {
            match detect_secret_shape(&key) {
                Some(name) => {
                    let hashed = self.hash_str(&key);
                    let mark = push(trail, &hashed);
                    report.paths.push(trail.clone());
                    trail.truncate(mark);
                    report.detector(name);
                    map.insert(hashed, child);
                }
                None => {
                    map.insert(key, child);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn redactor(tenant: &str) -> Redactor {
        Redactor::new(tenant_key(&[42; 32], tenant))
    }

    fn assert_absent(value: &Value, canaries: &[&str]) {
        let text = serde_json::to_string(value).unwrap();
        for canary in canaries {
            assert!(!text.contains(canary), "{canary} survived in {text}");
        }
    }

    #[test]
    fn tenant_keys_follow_the_documented_derivation() {
        let master = [42u8; 32];
        let mut mac = Hmac::<Sha256>::new_from_slice(&master).unwrap();
        mac.update(b"warden-redaction-v1\0acme");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(tenant_key(&master, "acme"), expected);
        assert_ne!(tenant_key(&master, "acme"), tenant_key(&master, "globex"));
    }

    #[test]
    fn hashes_are_deterministic_per_tenant_and_differ_across_tenants() {
        let (a, b) = (redactor("acme"), redactor("globex"));
        let h = a.hash_str("hunter2");
        assert!(is_redacted(&h), "{h}");
        assert_eq!(h, redactor("acme").hash_str("hunter2"));
        assert_ne!(h, b.hash_str("hunter2"));
        assert_eq!(a.hash_value(&json!("hunter2")), h);
        assert_eq!(a.hash_value(&json!(1234)), a.hash_str("1234"));
        assert_eq!(
            a.hash_value(&json!({"b": 1, "a": 2})),
            a.hash_str(r#"{"a":2,"b":1}"#)
        );
    }

    #[test]
    fn paths_with_wildcards_and_indices() {
        let r = redactor("acme");
        let mut v = json!({
            "args": {
                "token": "canary-path-1",
                "headers": {"x-custom": "canary-path-2", "accept": "json"},
                "items": [{"pin": "canary-path-3"}, {"pin": "canary-path-4"}],
                "list": ["keep", "canary-path-5"],
                "nested": {"deep": {"a": 1, "b": "canary-path-6"}},
                "empty": null
            }
        });
        let report = r.redact(
            &mut v,
            &[
                "args.token",
                "args.headers.x-custom",
                "args.items.*.pin",
                "args.list.1",
                "args.nested",
                "args.empty",
                "args.missing.x",
            ],
        );
        assert_absent(&v, &["canary-path-"]);
        assert_eq!(v["args"]["token"], json!(r.hash_str("canary-path-1")));
        assert_eq!(v["args"]["headers"]["accept"], "json");
        assert_eq!(v["args"]["list"][0], "keep");
        assert_eq!(
            v["args"]["nested"],
            json!(r.hash_value(&json!({"deep": {"a": 1, "b": "canary-path-6"}})))
        );
        assert_eq!(v["args"]["empty"], Value::Null);
        assert_eq!(
            report.paths,
            [
                "args.token",
                "args.headers.x-custom",
                "args.items.0.pin",
                "args.items.1.pin",
                "args.list.1",
                "args.nested"
            ]
        );
        assert!(report.detectors.is_empty());

        let again = r.redact(&mut v, &["args.token"]);
        assert!(
            again.is_empty(),
            "already redacted values are left alone: {again:?}"
        );
    }

    #[test]
    fn secret_keys_are_caught_in_nested_objects_and_arrays() {
        let r = redactor("acme");
        let mut v = json!({
            "args": {
                "Password": "canary-k1",
                "config": {"DB_PASSWORD": "canary-k2", "X-Api-Key": "canary-k3", "pin": 4242},
                "headers": [{"Authorization": "canary-k4"}, {"Set-Cookie": ["canary-k5", "canary-k6"]}],
                "credentials": {"user": "canary-k7", "otp": 987654},
                "client_secret": "canary-k8",
                "refresh-token": "canary-k9",
                "session_token": "canary-k10",
                "apikey": "canary-k11",
                "private_key": "canary-k12",
                "passwd": 112233,
                "secret_flag_enabled": true
            }
        });
        let report = r.redact(&mut v, &[]);
        assert_absent(&v, &["canary-k", "987654", "112233"]);
        assert_eq!(v["args"]["config"]["pin"], 4242, "not a secret key");
        assert_eq!(v["args"]["secret_flag_enabled"], true);
        assert_eq!(
            v["args"]["credentials"]["user"],
            json!(r.hash_str("canary-k7")),
            "each value searchable"
        );
        assert_eq!(report.detectors, [KEY_NAME_DETECTOR]);
        assert!(
            report
                .paths
                .contains(&"args.headers.1.Set-Cookie.0".to_string()),
            "{:?}",
            report.paths
        );
    }

    #[test]
    fn secret_shapes_are_caught_anywhere() {
        let r = redactor("acme");
        let gh = format!("ghp_{}", "a1B2".repeat(9));
        let pat = format!("github_pat_11ABCDEFG0{}", "x".repeat(60));
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let google = format!("AIza{}", "Sy-abcdefghijklmnopqrstuvwxyz123456");
        let cases: Vec<(String, &str)> = vec![
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEcanaryPEM\n-----END RSA PRIVATE KEY-----"
                    .into(),
                "pem_private_key",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\ncanaryPEM2".into(),
                "pem_private_key",
            ),
            (
                "key is AKIAIOSFODNN7EXAMPLE here".into(),
                "aws_access_key_id",
            ),
            ("ASIAY34FZKBOKMUTVV7A".into(), "aws_access_key_id"),
            (gh.clone(), "github_token"),
            (pat.clone(), "github_token"),
            ("xoxb-123456789012-abcdefCANARY".into(), "slack_token"),
            (jwt.into(), "jwt"),
            ("Bearer abcdefCANARY0123456789".into(), "bearer_token"),
            ("wdn_CANARY0123456789abcdefXYZ".into(), "warden_token"),
            (google.clone(), "google_api_key"),
            (
                format!("sk_live_{}", "CANARY4eC39HqLyjWDarjtT1zdp7dc"),
                "stripe_secret_key",
            ),
            (
                "postgres://app:canaryPW@db.internal:5432/app".into(),
                "connection_string_password",
            ),
            (
                "redis://:canaryPW2@cache:6379".into(),
                "connection_string_password",
            ),
            // The shortest text any detector matches (`SHORTEST_SHAPE` bytes).
            ("a://:x@y".into(), "connection_string_password"),
        ];
        for (secret, detector) in &cases {
            assert_eq!(detect_secret_shape(secret), Some(*detector), "{secret}");
            let mut v = json!({"args": {"note": [{"text": secret}]}, "keep": "plain"});
            let report = r.redact(&mut v, &[]);
            assert_eq!(
                v["args"]["note"][0]["text"],
                json!(r.hash_str(secret)),
                "{detector}"
            );
            assert_eq!(report.paths, ["args.note.0.text"]);
            assert_eq!(report.detectors, [*detector]);
            assert_eq!(v["keep"], "plain");
        }
        let mut v = json!({"by_caller": {"AKIAIOSFODNN7EXAMPLE": {"count": 1}}});
        let report = r.redact(&mut v, &[]);
        assert_absent(&v, &["AKIAIOSFODNN7EXAMPLE"]);
        assert_eq!(report.detectors, ["aws_access_key_id"]);
    }

    #[test]
    fn non_secrets_are_untouched() {
        let r = redactor("acme");
        let original = json!({
            "tool": "github.create_issue",
            "args": {
                "title": "Bearer tokens expire",
                "body": "see https://example.com/path?q=1 and http://host:8080/x@y",
                "repo": "acme/api",
                "max_tokens": 1024,
                "token_count": 17,
                "tokenizer": "cl100k",
                "labels": ["bug", "AKIA-not-a-key"],
                "ssh": "ssh://git@github.com/acme/api.git",
                "hash": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "active": true,
                "nothing": null
            }
        });
        let mut v = original.clone();
        let report = r.redact(&mut v, &[]);
        assert_eq!(v, original);
        assert_eq!(report, RedactionReport::default());
    }

    #[test]
    fn fake_hash_prefix_does_not_hide_a_secret() {
        let r = redactor("acme");
        let mut v = json!({"x": "hmac-sha256:AKIAIOSFODNN7EXAMPLE"});
        r.redact(&mut v, &[]);
        assert_absent(&v, &["AKIAIOSFODNN7EXAMPLE"]);
        let mut already = json!({"password": r.hash_str("pw")});
        let before = already.clone();
        assert!(r.redact(&mut already, &[]).is_empty());
        assert_eq!(already, before);
    }

    #[test]
    fn a_deferred_redactor_leaves_values_for_the_server() {
        let r = Redactor::deferred();
        let mut v = json!({"password": "pw", "k": "AKIAIOSFODNN7EXAMPLE"});
        let before = v.clone();
        assert!(r.redact(&mut v, &["k"]).is_empty());
        assert_eq!(v, before);
        assert!(r.is_deferred() && !redactor("acme").is_deferred());
    }

    #[test]
    fn every_shape_and_key_is_documented() {
        for (name, _) in SHAPES {
            assert!(
                DETECTORS.iter().any(|d| d.name == *name),
                "{name} undocumented"
            );
        }
        assert_eq!(DETECTORS.len(), SHAPES.len() + 1);
        for key in SECRET_KEY_NAMES {
            assert!(
                is_secret_key(key.key) && is_secret_key(&key.key.to_uppercase().replace('_', "-"))
            );
        }
    }
}

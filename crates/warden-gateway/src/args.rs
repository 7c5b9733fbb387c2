//! Tool arguments checked against the tool's `inputSchema` before a call is forwarded, so a
//! malformed call is refused with a precise message instead of reaching the server.
//!
//! The keywords tool schemas use are checked: `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `const`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`, `minItems`, `maxItems`,
//! `allOf`, `anyOf`, `oneOf`. Others (`$ref`, `pattern`, `format`, …) are not checked here;
//! the server still validates what it receives.

use serde_json::{Map, Value};

/// The problems found, each as `path: message`; empty when the arguments conform.
pub fn check(schema: &Value, args: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, args, "arguments", &mut errors);
    errors.truncate(10);
    errors
}

fn walk(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let Value::Object(s) = schema else {
        if schema == &Value::Bool(false) {
            errors.push(format!("{path}: no value is allowed here"));
        }
        return;
    };
    if let Some(t) = s.get("type")
        && !type_matches(t, v)
    {
        errors.push(format!(
            "{path}: expected {}, got {}",
            type_text(t),
            kind(v)
        ));
        return;
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(v)
    {
        errors.push(format!(
            "{path}: must be one of {}",
            Value::Array(options.clone())
        ));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        errors.push(format!("{path}: must be {c}"));
    }
    match v {
        Value::Object(o) => object(s, o, path, errors),
        Value::Array(items) => {
            bound(s, "minItems", items.len(), path, "items", errors, |n, m| {
                n >= m
            });
            bound(s, "maxItems", items.len(), path, "items", errors, |n, m| {
                n <= m
            });
            if let Some(item) = s.get("items").filter(|i| i.is_object() || i.is_boolean()) {
                for (i, x) in items.iter().enumerate() {
                    walk(item, x, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::String(text) => {
            let n = text.chars().count();
            bound(s, "minLength", n, path, "characters", errors, |n, m| n >= m);
            bound(s, "maxLength", n, path, "characters", errors, |n, m| n <= m);
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let limit = |k: &str| s.get(k).and_then(Value::as_f64);
            if let Some(m) = limit("minimum").filter(|m| x < *m) {
                errors.push(format!("{path}: must be at least {m}"));
            }
            if let Some(m) = limit("maximum").filter(|m| x > *m) {
                errors.push(format!("{path}: must be at most {m}"));
            }
            if let Some(m) = limit("exclusiveMinimum").filter(|m| x <= *m) {
                errors.push(format!("{path}: must be more than {m}"));
            }
            if let Some(m) = limit("exclusiveMaximum").filter(|m| x >= *m) {
                errors.push(format!("{path}: must be less than {m}"));
            }
        }
        _ => {}
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            walk(sub, v, path, errors);
        }
    }
    let passing = |subs: &Vec<Value>| {
        subs.iter()
            .filter(|sub| {
                let mut e = Vec::new();
                walk(sub, v, path, &mut e);
                e.is_empty()
            })
            .count()
    };
    if let Some(Value::Array(any)) = s.get("anyOf")
        && !any.is_empty()
        && passing(any) == 0
    {
        errors.push(format!("{path}: matches none of the allowed forms (anyOf)"));
    }
    if let Some(Value::Array(one)) = s.get("oneOf")
        && !one.is_empty()
        && passing(one) != 1
    {
        errors.push(format!(
            "{path}: must match exactly one of the allowed forms (oneOf)"
        ));
    }
}

fn object(s: &Map<String, Value>, o: &Map<String, Value>, path: &str, errors: &mut Vec<String>) {
    if let Some(Value::Array(required)) = s.get("required") {
        for r in required.iter().filter_map(Value::as_str) {
            if !o.contains_key(r) {
                errors.push(format!("{path}: missing required field {r:?}"));
            }
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    for (k, v) in o {
        let sub = format!("{path}.{k}");
        match props.and_then(|p| p.get(k)) {
            Some(p) => walk(p, v, &sub, errors),
            None => match s.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    errors.push(format!("{path}: unknown field {k:?}"));
                }
                Some(extra @ Value::Object(_)) => walk(extra, v, &sub, errors),
                _ => {}
            },
        }
    }
}

fn bound(
    s: &Map<String, Value>,
    key: &str,
    n: usize,
    path: &str,
    unit: &str,
    errors: &mut Vec<String>,
    ok: impl Fn(u64, u64) -> bool,
) {
    if let Some(m) = s.get(key).and_then(Value::as_u64)
        && !ok(n as u64, m)
    {
        let word = if key.starts_with("min") {
            "at least"
        } else {
            "at most"
        };
        errors.push(format!("{path}: must have {word} {m} {unit}, has {n}"));
    }
}

fn type_matches(t: &Value, v: &Value) -> bool {
    match t {
        Value::String(t) => one_type(t, v),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| one_type(t, v)),
        _ => true,
    }
}

fn one_type(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

fn type_text(t: &Value) -> String {
    match t {
        Value::String(s) => s.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        other => other.to_string(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check;

    #[test]
    fn accepts_conforming_arguments() {
        let schema = json!({
            "type": "object",
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "count": {"type": "integer", "minimum": 0, "maximum": 10},
                "tags": {"type": "array", "items": {"type": "string"}},
                "mode": {"enum": ["fast", "slow"]}
            },
            "required": ["message"],
            "additionalProperties": false
        });
        let ok = json!({"message": "hi", "count": 3, "tags": ["a"], "mode": "fast"});
        assert!(check(&schema, &ok).is_empty(), "{:?}", check(&schema, &ok));
    }

    #[test]
    fn names_each_problem_with_its_path() {
        let schema = json!({
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "count": {"type": "integer", "maximum": 10},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["message"],
            "additionalProperties": false
        });
        let bad = json!({"count": 11, "tags": ["a", 2], "extra": true});
        let errors = check(&schema, &bad);
        let text = errors.join("\n");
        assert!(
            text.contains("missing required field \"message\""),
            "{text}"
        );
        assert!(
            text.contains("arguments.count: must be at most 10"),
            "{text}"
        );
        assert!(
            text.contains("arguments.tags[1]: expected string, got number"),
            "{text}"
        );
        assert!(text.contains("unknown field \"extra\""), "{text}");
        assert_eq!(errors.len(), 4);
        assert_eq!(
            check(&schema, &json!("nope")),
            vec!["arguments: expected object, got string".to_owned()]
        );
    }

    #[test]
    fn combinators() {
        let schema = json!({"oneOf": [{"type": "string"}, {"type": "integer"}]});
        assert!(check(&schema, &json!(3)).is_empty());
        assert_eq!(check(&schema, &json!(true)).len(), 1);
        let schema = json!({"anyOf": [{"type": "string"}, {"type": "number"}]});
        assert!(check(&schema, &json!(2.5)).is_empty());
        assert_eq!(check(&schema, &json!([])).len(), 1);
    }
}

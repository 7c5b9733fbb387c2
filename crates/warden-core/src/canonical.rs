//! Canonical JSON: object keys sorted by their UTF-16 code units (as RFC 8785), no insignificant
//! whitespace. Hashes over events and tool definitions are taken over this form so that two
//! equal values always hash the same, whatever order their keys arrived in.

use serde_json::Value;

/// Writes `value` canonically. Numbers use serde_json's shortest round-trip form.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out);
    out
}

pub fn to_string(value: &Value) -> String {
    String::from_utf8(to_vec(value)).expect("canonical JSON is UTF-8")
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(v, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_str(s, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes exactly what JSON requires and leaves the rest as UTF-8.
    out.extend_from_slice(
        serde_json::to_string(s)
            .expect("string serializes")
            .as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A stored payload is parsed back and hashed again by `warden audit verify`: every
    /// number must come back with the same digits, or an intact event would look tampered.
    #[test]
    fn numbers_survive_a_round_trip_through_text() {
        let mut x: f64 = 0.1;
        for i in 0..20_000u32 {
            x = x * 1.000_37 + f64::from(i) * 0.001_3 + 1e-9;
            let v = json!({"duration_ms": x, "tiny": x * 1e-300, "big": x * 1e300});
            let text = to_string(&v);
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(to_string(&back), text, "{x}");
        }
    }

    #[test]
    fn key_order_does_not_change_the_bytes() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"é"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(to_vec(&a), to_vec(&b));
        assert_eq!(to_string(&a), r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
        assert_eq!(to_string(&json!("a\"\n")), r#""a\"\n""#);
    }
}

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
            // UTF-8 byte order equals UTF-16 order unless a key holds a character from
            // U+E000 up (lead byte 0xEE or more): compare bytes then, which is much cheaper.
            if entries.iter().all(|(k, _)| k.bytes().all(|b| b < 0xEE)) {
                entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            } else {
                entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            }
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
        other => serde_json::to_writer(&mut *out, other).expect("a scalar serializes"),
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes exactly what JSON requires and leaves the rest as UTF-8.
    serde_json::to_writer(&mut *out, s).expect("string serializes");
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

    /// RFC 8785 orders keys by UTF-16 code units: a character beyond the BMP (a surrogate
    /// pair, 0xD800…) sorts before U+E000…U+FFFF, unlike in UTF-8 byte order.
    #[test]
    fn keys_sort_by_utf16_code_units() {
        let v = json!({"\u{FF5E}": 1, "\u{1F600}": 2, "z": 3, "a": 4});
        assert_eq!(
            to_string(&v),
            "{\"a\":4,\"z\":3,\"\u{1F600}\":2,\"\u{FF5E}\":1}"
        );
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

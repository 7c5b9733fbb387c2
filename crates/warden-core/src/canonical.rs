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

pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    // JSON requires escaping only quotes, backslashes and control characters, and
    // serde_json escapes exactly those, leaving the rest as UTF-8: a string without any is
    // copied as it is (most are), the others go through serde_json.
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        serde_json::to_writer(&mut *out, s).expect("string serializes");
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
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

    /// Strings are copied as they are unless JSON requires an escape; the bytes must be what
    /// serde_json writes either way, since digests of older payloads were taken over those.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut samples: Vec<String> = (0u8..=0x7f).map(|b| format!("a{}z", b as char)).collect();
        samples.extend(
            [
                "",
                "plain text",
                "quote \" and backslash \\",
                "tab\tnewline\n\u{0}\u{1f}",
                "\u{7f} del",
                "é ü \u{2028}\u{2029} \u{FF5E} \u{1F600}",
                "\\\\\"\"",
            ]
            .map(String::from),
        );
        for s in samples {
            let mut ours = Vec::new();
            write_str(&s, &mut ours);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    /// Objects of any size come out with their keys in order.
    #[test]
    fn small_and_large_objects_sort_alike() {
        for n in [0usize, 1, 2, 15, 16, 17, 40] {
            let mut map = serde_json::Map::new();
            for i in (0..n).rev() {
                map.insert(format!("k{i:02}"), json!(i));
            }
            let text = to_string(&Value::Object(map));
            let expected = (0..n)
                .map(|i| format!("\"k{i:02}\":{i}"))
                .collect::<Vec<_>>()
                .join(",");
            assert_eq!(text, format!("{{{expected}}}"), "{n} keys");
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

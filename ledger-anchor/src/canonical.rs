//! Canonical JSON: compact, keys sorted by their UTF-8 bytes, integers and strings only.
//!
//! Records are written once in this form and hashed as written; validation re-encodes a parsed
//! record and requires the bytes to be identical, so every record has exactly one encoding.

use serde::Serialize;
use serde_json::Value;

use crate::error::LedgerError;

/// Encodes `value` as canonical JSON. Fails (naming the field) on floats, booleans or nulls,
/// which records never contain; optional fields must be skipped when absent.
pub fn encode_canonical(value: &impl Serialize) -> Result<Vec<u8>, LedgerError> {
    let v = serde_json::to_value(value).map_err(|e| LedgerError::Schema {
        index: 0,
        field: "$".into(),
        reason: format!("cannot serialise: {e}"),
    })?;
    let mut out = Vec::with_capacity(1024);
    write(&v, "$", &mut out).map_err(|(field, reason)| LedgerError::Schema {
        index: 0,
        field,
        reason,
    })?;
    Ok(out)
}

/// Writes `v` canonically; on a forbidden value returns (JSON path, reason).
pub(crate) fn write(v: &Value, path: &str, out: &mut Vec<u8>) -> Result<(), (String, String)> {
    match v {
        Value::Null => Err((
            path.to_owned(),
            "null is not allowed (omit the field)".into(),
        )),
        Value::Bool(_) => Err((path.to_owned(), "booleans are not allowed".into())),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return Err((
                    path.to_owned(),
                    format!("floating-point number {n} is not allowed"),
                ));
            }
            Ok(())
        }
        Value::String(s) => {
            write_string(s, out);
            Ok(())
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, &format!("{path}[{i}]"), out)?;
            }
            out.push(b']');
            Ok(())
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                let child = if path == "$" {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if let Some(item) = map.get(k) {
                    write(item, &child, out)?;
                }
            }
            out.push(b'}');
            Ok(())
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping: only '"', '\\' and control characters are escaped.
    match serde_json::to_vec(s) {
        Ok(b) => out.extend_from_slice(&b),
        Err(_) => out.extend_from_slice(b"\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_compactly_and_rejects_floats() {
        let v: Value =
            serde_json::from_str(r#"{"b": [2, {"z": "é\n", "a": -1}], "a": "x"}"#).unwrap();
        assert_eq!(
            String::from_utf8(encode_canonical(&v).unwrap()).unwrap(),
            r#"{"a":"x","b":[2,{"a":-1,"z":"é\n"}]}"#
        );
        let f: Value = serde_json::from_str(r#"{"a": {"b": [1.5]}}"#).unwrap();
        let err = encode_canonical(&f).unwrap_err().to_string();
        assert!(err.contains("a.b[0]"), "{err}");
    }
}

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
    let at = if path == "$" {
        Path::Root
    } else {
        Path::Named(path)
    };
    write_at(v, &at, out)
}

/// Where a value sits, rendered only when it is named in an error: every entry a replica
/// catches up is re-encoded here, and formatting each field's path cost as much as the rest.
enum Path<'a> {
    Root,
    Named(&'a str),
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    /// `$` for the root, `a` for its field `a`, `a.b` below it, `a[3]` for an item.
    fn render(&self) -> String {
        match self {
            Path::Root => "$".into(),
            Path::Named(p) => (*p).to_owned(),
            Path::Key(Path::Root, k) => (*k).to_owned(),
            Path::Key(parent, k) => format!("{}.{k}", parent.render()),
            Path::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }
}

fn write_at(v: &Value, path: &Path<'_>, out: &mut Vec<u8>) -> Result<(), (String, String)> {
    match v {
        Value::Null => Err((path.render(), "null is not allowed (omit the field)".into())),
        Value::Bool(_) => Err((path.render(), "booleans are not allowed".into())),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                write_u64(u, out);
            } else if let Some(i) = n.as_i64() {
                // Negative here: as_u64 took every non-negative integer.
                out.push(b'-');
                write_u64(i.unsigned_abs(), out);
            } else {
                return Err((
                    path.render(),
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
                write_at(item, &Path::Index(path, i), out)?;
            }
            out.push(b']');
            Ok(())
        }
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_at(item, &Path::Key(path, k), out)?;
            }
            out.push(b'}');
            Ok(())
        }
    }
}

/// Decimal digits of `u`, as `u.to_string()` writes them, without an allocation.
fn write_u64(mut u: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping: only '"', '\\' and control characters are escaped, so a
    // string without them is written as it is.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
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
        let n: Value = serde_json::from_str(r#"[{"a": [0, {"b": null}]}]"#).unwrap();
        let err = encode_canonical(&n).unwrap_err().to_string();
        assert!(err.contains("$[0].a[1].b"), "{err}");
    }

    #[test]
    fn integers_and_strings_are_written_as_serde_json_writes_them() {
        for n in [0i128, 7, -1, 10, -10, 99, i64::MAX.into(), i64::MIN.into()]
            .into_iter()
            .chain([u64::MAX.into(), 1_000_000_000_000_000_000i128])
        {
            let v: Value = serde_json::from_str(&n.to_string()).unwrap();
            assert_eq!(encode_canonical(&v).unwrap(), n.to_string().into_bytes());
        }
        for s in [
            "",
            "plain",
            "é ✓",
            "quote\"",
            "back\\slash",
            "tab\t",
            "\u{1}",
            "\u{7f}",
        ] {
            let v = Value::String(s.into());
            assert_eq!(
                encode_canonical(&v).unwrap(),
                serde_json::to_vec(s).unwrap(),
                "{s:?}"
            );
        }
    }
}

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

/// The top-level fields an entry's validation reads before it knows the entry's schema, as
/// the raw JSON of their values (a string keeps its quotes).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Top<'a> {
    pub(crate) v: Option<&'a str>,
    pub(crate) federation: Option<&'a str>,
    pub(crate) ty: Option<&'a str>,
}

/// Deepest nesting [`scan`] follows; deeper input takes the reference path (serde_json's own
/// limit is 128).
const SCAN_DEPTH: usize = 64;

/// Whether `s` is an object exactly as [`encode_canonical`] writes it: the verdict of parsing
/// it, re-encoding it and comparing the bytes, in one pass that builds nothing. Returns the
/// fields of [`Top`] when it is, `None` when it is not (or nests deeper than [`SCAN_DEPTH`]):
/// the caller then takes that reference path, which names what is wrong. It must never accept
/// what the reference path refuses; a property test holds the two together.
pub(crate) fn scan(s: &str) -> Option<Top<'_>> {
    let mut sc = Scanner {
        b: s.as_bytes(),
        i: 0,
    };
    let mut top = Top::default();
    if sc.b.first() != Some(&b'{') {
        return None;
    }
    sc.object(0, Some(&mut top))?;
    (sc.i == sc.b.len()).then_some(top)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.object(depth + 1, None),
            b'[' => self.array(depth + 1),
            b'-' | b'0'..=b'9' => self.integer(),
            // Literals (null, booleans), whitespace and anything else.
            _ => None,
        }
    }

    /// An object at `self.i` (its `{`): keys strictly increasing by their UTF-8 bytes (so no
    /// duplicates), no whitespace.
    fn object(&mut self, depth: usize, mut top: Option<&mut Top<'a>>) -> Option<()> {
        if depth > SCAN_DEPTH {
            return None;
        }
        self.i += 1;
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Some(());
        }
        let mut prev: Option<std::borrow::Cow<'a, [u8]>> = None;
        loop {
            let key = self.string()?;
            if prev.as_deref().is_some_and(|p| p >= key.as_ref()) {
                return None;
            }
            if self.next()? != b':' {
                return None;
            }
            let start = self.i;
            self.value(depth)?;
            if let Some(t) = top.as_deref_mut() {
                let raw = std::str::from_utf8(&self.b[start..self.i]).ok()?;
                match key.as_ref() {
                    b"v" => t.v = Some(raw),
                    b"federation" => t.federation = Some(raw),
                    b"type" => t.ty = Some(raw),
                    _ => {}
                }
            }
            prev = Some(key);
            match self.next()? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > SCAN_DEPTH {
            return None;
        }
        self.i += 1;
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            match self.next()? {
                b',' => {}
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// An integer as serde_json writes an `i64` or a `u64`: no leading zeros, no `-0`, no
    /// fraction or exponent, within range (serde_json reads anything else as a float).
    fn integer(&mut self) -> Option<()> {
        let negative = self.b[self.i] == b'-';
        if negative {
            self.i += 1;
        }
        let start = self.i;
        let mut magnitude: u64 = 0;
        while let Some(&d) = self.b.get(self.i).filter(|d| d.is_ascii_digit()) {
            magnitude = magnitude
                .checked_mul(10)?
                .checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && self.b[start] == b'0') {
            return None;
        }
        if matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        if negative && (magnitude == 0 || magnitude > i64::MIN.unsigned_abs()) {
            return None;
        }
        Some(())
    }

    /// A string at `self.i` (its `"`) escaped exactly as serde_json escapes: `\"`, `\\`, the
    /// short forms `\b \t \n \f \r`, `\u00xx` (lowercase hex) for the other control
    /// characters, nothing else. Returns its content, unescaped only when it had escapes.
    /// (UTF-8 validity is the caller's: `scan` takes a `&str`.)
    fn string(&mut self) -> Option<std::borrow::Cow<'a, [u8]>> {
        if self.next()? != b'"' {
            return None;
        }
        let start = self.i;
        let mut unescaped: Option<Vec<u8>> = None;
        let mut run = start;
        loop {
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    let end = self.i;
                    self.i += 1;
                    return Some(match unescaped {
                        None => std::borrow::Cow::Borrowed(&self.b[start..end]),
                        Some(mut u) => {
                            u.extend_from_slice(&self.b[run..end]);
                            std::borrow::Cow::Owned(u)
                        }
                    });
                }
                b'\\' => {
                    let (byte, len) = match *self.b.get(self.i + 1)? {
                        b'"' => (b'"', 2),
                        b'\\' => (b'\\', 2),
                        b'b' => (0x08, 2),
                        b't' => (0x09, 2),
                        b'n' => (0x0a, 2),
                        b'f' => (0x0c, 2),
                        b'r' => (0x0d, 2),
                        b'u' => {
                            let h = self.b.get(self.i + 2..self.i + 6)?;
                            let low = match h[3] {
                                d @ b'0'..=b'9' => d - b'0',
                                d @ b'a'..=b'f' => d - b'a' + 10,
                                _ => return None,
                            };
                            let byte = match (h[0], h[1], h[2]) {
                                (b'0', b'0', b'0') => low,
                                (b'0', b'0', b'1') => 0x10 + low,
                                _ => return None,
                            };
                            // These have short forms.
                            if matches!(byte, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            (byte, 6)
                        }
                        _ => return None,
                    };
                    let u = unescaped.get_or_insert_with(Vec::new);
                    u.extend_from_slice(&self.b[run..self.i]);
                    u.push(byte);
                    self.i += len;
                    run = self.i;
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
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

    /// The reference verdict [`scan`] must reproduce: parse, re-encode, compare.
    fn reference(s: &str) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(s) else {
            return false;
        };
        let mut out = Vec::new();
        v.is_object() && write(&v, "$", &mut out).is_ok() && out == s.as_bytes()
    }

    #[test]
    fn scan_agrees_with_the_reference_on_chosen_cases() {
        let cases = [
            (r#"{}"#, true),
            (r#"{"a":1,"b":[-1,0,"x",{}],"c":{"d":[]}}"#, true),
            (r#"{"b":1,"a":2}"#, false),
            (r#"{"a":1,"a":1}"#, false),
            (r#"{"a": 1}"#, false),
            (r#"{"a":1} "#, false),
            (r#" {"a":1}"#, false),
            (r#"{"a":01}"#, false),
            (r#"{"a":-0}"#, false),
            (r#"{"a":1.0}"#, false),
            (r#"{"a":1e3}"#, false),
            (r#"{"a":18446744073709551615}"#, true),
            (r#"{"a":18446744073709551616}"#, false),
            (r#"{"a":-9223372036854775808}"#, true),
            (r#"{"a":-9223372036854775809}"#, false),
            (r#"{"a":null}"#, false),
            (r#"{"a":true}"#, false),
            (r#"{"a":"\n\t\"\\\u0001\u001f"}"#, true),
            (r#"{"a":"\u000a"}"#, false),
            (r#"{"a":"\u001F"}"#, false),
            (r#"{"a":"\/"}"#, false),
            (r#"{"a":"\u00e9"}"#, false),
            ("{\"a\":\"\u{7f}é✓\"}", true),
            ("{\"a\":\"\t\"}", false),
            // Keys compare by their unescaped bytes: "\n" (0x0a) sorts before "0".
            (r#"{"\n":1,"0":2}"#, true),
            (r#"{"0":2,"\n":1}"#, false),
            (r#"[1]"#, false),
            (r#"{"a":[1,]}"#, false),
            (r#"{"a":1,}"#, false),
            (r#"{"a"}"#, false),
            (r#"{"a":"#, false),
            (r#""#, false),
        ];
        for (s, want) in cases {
            assert_eq!(reference(s), want, "reference on {s}");
            assert_eq!(scan(s).is_some(), want, "scan on {s}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(reference(&deep));
        assert_eq!(
            scan(&deep),
            None,
            "beyond SCAN_DEPTH the reference path decides"
        );
        assert_eq!(
            scan(r#"{"federation":"f","type":"t","v":2,"x":[{"v":3}]}"#),
            Some(Top {
                v: Some("2"),
                federation: Some(r#""f""#),
                ty: Some(r#""t""#),
            })
        );
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            2 => any::<i64>().prop_map(Value::from),
            2 => any::<u64>().prop_map(Value::from),
            3 => (-2i64..12).prop_map(Value::from),
            4 => "[a-c\"\\\\\u{0}-\u{1f}\u{7f}é✓]{0,4}".prop_map(Value::from),
            1 => Just(Value::Null),
            1 => Just(Value::Bool(true)),
            1 => Just(Value::from(1.5)),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[ab\n\"]{0,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        /// Canonical texts and texts a few edits away from them (bytes deleted, inserted,
        /// swapped): wherever they land, the scan decides as the reference does.
        #[test]
        fn scan_agrees_with_the_reference(
            fields in proptest::collection::btree_map("[a-z\n]{0,3}", json(), 0..5),
            edits in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), 0u8..3, proptest::sample::select(
                    b"{}[],:\"\\ -0159.eantu".to_vec())),
                0..3,
            ),
        ) {
            let v = Value::Object(fields.into_iter().collect());
            let mut text = Vec::new();
            if write(&v, "$", &mut text).is_err() {
                text = serde_json::to_vec(&v).unwrap();
            }
            for (at, op, byte) in edits {
                let i = at.index(text.len() + 1);
                match op {
                    0 if i < text.len() => { text.remove(i); }
                    1 => text.insert(i, byte),
                    _ if i + 1 < text.len() => text.swap(i, i + 1),
                    _ => {}
                }
            }
            if let Ok(s) = std::str::from_utf8(&text) {
                proptest::prop_assert_eq!(scan(s).is_some(), reference(s), "{}", s);
            }
        }
    }
}

//! The tools' JSON Schemas as clients read them. schemars marks integers with Rust's own
//! `format`s (`uint64`, `int32`, `double` …), which are not JSON Schema formats: strict
//! validators (Claude Code's among them) warn about each one. They are taken out here, with
//! the bound a fixed-width unsigned type implies kept as `maximum`; rustdoc link syntax
//! left in a description (``[`X`](path)``) becomes plain `` `X` ``.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

/// Tidy `tool`'s input and output schemas in place.
pub fn tidy(tool: &mut Tool) {
    tool.input_schema = Arc::new(tidied(&tool.input_schema));
    if let Some(out) = &tool.output_schema {
        tool.output_schema = Some(Arc::new(tidied(out)));
    }
}

fn tidied(schema: &JsonObject) -> JsonObject {
    let mut v = Value::Object(schema.clone());
    walk(&mut v);
    match v {
        Value::Object(o) => o,
        _ => schema.clone(),
    }
}

/// The largest value of a Rust unsigned integer `format`, where JSON can carry it exactly.
fn unsigned_max(format: &str) -> Option<u64> {
    match format {
        "uint8" => Some(u8::MAX.into()),
        "uint16" => Some(u16::MAX.into()),
        "uint32" => Some(u32::MAX.into()),
        _ => None,
    }
}

/// schemars' numeric formats: Rust types, not JSON Schema formats.
fn is_rust_format(format: &str) -> bool {
    matches!(
        format,
        "int"
            | "int8"
            | "int16"
            | "int32"
            | "int64"
            | "uint"
            | "uint8"
            | "uint16"
            | "uint32"
            | "uint64"
            | "float"
            | "double"
    )
}

fn walk(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(f)) = o.get("format")
                && is_rust_format(f)
            {
                let max = unsigned_max(f);
                o.remove("format");
                if let Some(max) = max {
                    o.entry("maximum").or_insert(Value::from(max));
                }
            }
            if let Some(Value::String(d)) = o.get_mut("description") {
                *d = plain_links(d);
            }
            o.values_mut().for_each(walk);
        }
        Value::Array(a) => a.iter_mut().for_each(walk),
        _ => {}
    }
}

/// ``[`X`](path)`` and ``[`X`]`` → `` `X` ``.
fn plain_links(d: &str) -> String {
    let mut out = String::with_capacity(d.len());
    let mut rest = d;
    while let Some(i) = rest.find("[`") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(end) = after[1..].find("`]").map(|e| e + 3) else {
            out.push_str(&rest[i..]);
            return out;
        };
        out.push_str(&after[..end - 1]);
        rest = &after[end..];
        // A link target right after it goes too.
        if rest.starts_with('(')
            && let Some(close) = rest.find(')')
        {
            rest = &rest[close + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_formats_go_and_unsigned_bounds_stay() {
        let mut v = serde_json::json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "format": "uint32", "minimum": 0},
                "b": {"type": "integer", "format": "uint64", "minimum": 0},
                "c": {"type": ["number", "null"], "format": "double"},
                "d": {"type": "integer", "format": "uint16", "maximum": 600},
                "e": {"type": "string", "format": "date-time"},
                "f": {"type": "array", "items": {"type": "integer", "format": "int32"}}
            }
        });
        walk(&mut v);
        let p = &v["properties"];
        assert_eq!(
            p["a"],
            serde_json::json!({"type": "integer", "minimum": 0, "maximum": 4294967295u64})
        );
        assert_eq!(p["b"], serde_json::json!({"type": "integer", "minimum": 0}));
        assert!(p["c"].get("format").is_none());
        assert_eq!(p["d"]["maximum"], 600);
        assert_eq!(p["e"]["format"], "date-time");
        assert!(p["f"]["items"].get("format").is_none());
    }

    #[test]
    fn rustdoc_links_become_plain_code() {
        assert_eq!(
            plain_links("revision ([`HOST_PROTO`](crate::proto::HOST_PROTO) of it"),
            "revision (`HOST_PROTO` of it"
        );
        assert_eq!(
            plain_links("see [`Foo`] and [`Bar`]."),
            "see `Foo` and `Bar`."
        );
        assert_eq!(
            plain_links("an array [1, 2] stays"),
            "an array [1, 2] stays"
        );
        assert_eq!(plain_links("cut [`off"), "cut [`off");
    }
}

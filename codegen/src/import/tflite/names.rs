//! The schema's own spelling of operator and type names (`CONV_2D`, `INT16`), read from
//! the schema file itself so messages match what users see in Netron or TFLite docs.

use super::fb;

const SCHEMA: &str = include_str!("../../../schema/tflite_schema.fbs");

/// Finds `NAME = value` inside `enum <enum_name> ... { ... }` of the schema.
fn enum_name(enum_name: &str, value: i32) -> Option<&'static str> {
    let start = SCHEMA.find(&format!("enum {enum_name} "))?;
    let body = &SCHEMA[start..];
    let body = &body[body.find('{')? + 1..body.find('}')?];
    body.lines()
        .map(|l| {
            l.split("//")
                .next()
                .unwrap_or("")
                .trim()
                .trim_end_matches(',')
        })
        .filter_map(|l| l.split_once('='))
        .find(|(_, v)| {
            v.split_whitespace()
                .next()
                .and_then(|v| v.parse::<i32>().ok())
                == Some(value)
        })
        .map(|(n, _)| n.trim())
}

/// `CONV_2D` for 3; `BUILTIN_<n>` for codes newer than kiln's schema.
pub fn builtin_operator(code: i32) -> String {
    enum_name("BuiltinOperator", code).map_or_else(|| format!("BUILTIN_{code}"), str::to_string)
}

/// `INT16` for `TensorType::Int16`.
pub fn tensor_type(t: fb::TensorType) -> String {
    enum_name("TensorType", t as i32).map_or_else(|| format!("type {}", t as i32), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_schema() {
        assert_eq!(builtin_operator(3), "CONV_2D");
        assert_eq!(builtin_operator(4), "DEPTHWISE_CONV_2D");
        assert_eq!(builtin_operator(126), "BATCH_MATMUL");
        assert_eq!(builtin_operator(100_000), "BUILTIN_100000");
        assert_eq!(tensor_type(fb::TensorType::Int16), "INT16");
    }
}

//! PATCH requests (RFC 7644 §3.5.2): a `PatchOp` message with `add`,
//! `replace` and `remove` operations, read into a list the resources apply.

use serde_json::Value;

use super::PATCH_SCHEMA;
use super::error::ScimError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub op: Op,
    /// The raw path, if any.
    pub path: Option<String>,
    pub value: Option<Value>,
}

/// The operations of a PatchOp body, or a precise 400.
pub fn parse(body: &serde_json::Map<String, Value>) -> Result<Vec<Operation>, ScimError> {
    if let Some(schemas) = body.get("schemas") {
        let ok = schemas
            .as_array()
            .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(PATCH_SCHEMA)));
        if !ok {
            return Err(ScimError::bad(
                "invalidSyntax",
                format!("A PATCH body's schemas must be [\"{PATCH_SCHEMA}\"]."),
            ));
        }
    }
    let Some(ops) = body
        .get("Operations")
        .or_else(|| body.get("operations"))
        .and_then(Value::as_array)
    else {
        return Err(ScimError::bad(
            "invalidSyntax",
            "A PATCH body needs an Operations array.",
        ));
    };
    if ops.is_empty() {
        return Err(ScimError::bad(
            "invalidSyntax",
            "Operations is empty: give at least one add, replace or remove.",
        ));
    }
    ops.iter()
        .enumerate()
        .map(|(n, raw)| {
            let Some(obj) = raw.as_object() else {
                return Err(ScimError::bad(
                    "invalidSyntax",
                    format!("Operation {} is not an object.", n + 1),
                ));
            };
            let op = match obj
                .get("op")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
            {
                Some(o) if o == "add" => Op::Add,
                Some(o) if o == "replace" => Op::Replace,
                Some(o) if o == "remove" => Op::Remove,
                _ => {
                    return Err(ScimError::bad(
                        "invalidSyntax",
                        format!("Operation {}: op must be add, replace or remove.", n + 1),
                    ));
                }
            };
            let path = match obj.get("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if !p.trim().is_empty() => Some(p.trim().to_string()),
                Some(_) => {
                    return Err(ScimError::bad(
                        "invalidPath",
                        format!("Operation {}: path must be a non-empty string.", n + 1),
                    ));
                }
            };
            let value = obj.get("value").cloned();
            match (op, &path, &value) {
                (Op::Remove, None, _) => Err(ScimError::bad(
                    "noTarget",
                    format!("Operation {}: remove needs a path.", n + 1),
                )),
                (Op::Add | Op::Replace, _, None) => Err(ScimError::bad(
                    "invalidValue",
                    format!("Operation {}: {op:?} needs a value.", n + 1).to_lowercase(),
                )),
                (Op::Add | Op::Replace, None, Some(v)) if !v.is_object() => Err(ScimError::bad(
                    "invalidValue",
                    format!(
                        "Operation {}: without a path, the value must be an object of attributes.",
                        n + 1
                    ),
                )),
                _ => Ok(Operation { op, path, value }),
            }
        })
        .collect()
}

/// A path like `members[value eq "12"]` or `emails[type eq "work"].value`:
/// the attribute, the filter inside the brackets, and what follows.
pub fn split_value_path(path: &str) -> Option<(&str, &str, &str)> {
    let open = path.find('[')?;
    let close = path.rfind(']')?;
    if close < open {
        return None;
    }
    Some((
        &path[..open],
        &path[open + 1..close],
        path[close + 1..].trim_start_matches('.'),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(v: Value) -> Result<Vec<Operation>, ScimError> {
        parse(v.as_object().unwrap())
    }

    #[test]
    fn reads_operations_case_insensitively() {
        let o = ops(json!({"schemas": [PATCH_SCHEMA], "Operations": [
            {"op": "Replace", "value": {"active": false}},
            {"op": "remove", "path": "members[value eq \"3\"]"}
        ]}))
        .unwrap();
        assert_eq!(o[0].op, Op::Replace);
        assert_eq!(o[1].path.as_deref(), Some("members[value eq \"3\"]"));
        assert_eq!(
            split_value_path("emails[type eq \"work\"].value"),
            Some(("emails", "type eq \"work\"", "value"))
        );
    }

    #[test]
    fn refuses_malformed_operations_precisely() {
        for (body, kind) in [
            (json!({"Operations": []}), "invalidSyntax"),
            (
                json!({"schemas": ["x"], "Operations": [{"op": "add", "value": {}}]}),
                "invalidSyntax",
            ),
            (
                json!({"Operations": [{"op": "move", "path": "a"}]}),
                "invalidSyntax",
            ),
            (json!({"Operations": [{"op": "remove"}]}), "noTarget"),
            (
                json!({"Operations": [{"op": "add", "path": "displayName"}]}),
                "invalidValue",
            ),
            (
                json!({"Operations": [{"op": "add", "value": "x"}]}),
                "invalidValue",
            ),
            (
                json!({"Operations": [{"op": "add", "path": 3, "value": "x"}]}),
                "invalidPath",
            ),
        ] {
            assert_eq!(
                ops(body.clone()).unwrap_err().scim_type,
                Some(kind),
                "{body}"
            );
        }
    }
}

//! The part of the SCIM filter language (RFC 7644 §3.4.2.2) that Keysmith
//! answers: one comparison `ATTRIBUTE eq VALUE`, which is what identity
//! providers send to find a user or group before creating it. Anything else
//! is refused with `invalidFilter` and a message that says what works.

use super::error::ScimError;

/// `attribute eq value`, the attribute lower-cased and without its schema URN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equals {
    pub attribute: String,
    pub value: String,
}

const HELP: &str = "Keysmith filters on one comparison: ATTRIBUTE eq \"VALUE\" (e.g. userName eq \"ada@example.com\").";

/// Strips a core schema URN from an attribute path and lower-cases it.
pub fn attribute_name(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    for urn in [
        "urn:ietf:params:scim:schemas:core:2.0:user:",
        "urn:ietf:params:scim:schemas:core:2.0:group:",
    ] {
        if let Some(rest) = lower.strip_prefix(urn) {
            return rest.to_string();
        }
    }
    lower
}

pub fn parse(raw: &str) -> Result<Equals, ScimError> {
    let raw = raw.trim();
    let invalid = |why: &str| ScimError::bad("invalidFilter", format!("{why} {HELP}"));
    let Some((attribute, rest)) = raw.split_once(char::is_whitespace) else {
        return Err(invalid("The filter is not a comparison."));
    };
    let rest = rest.trim_start();
    let Some((op, value)) = rest.split_once(char::is_whitespace) else {
        return Err(invalid("The filter has no value."));
    };
    if !op.eq_ignore_ascii_case("eq") {
        return Err(invalid(&format!("The operator \"{op}\" is not supported.")));
    }
    let value = value.trim();
    let value = if let Some(inner) = value.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return Err(invalid("The value's closing quote is missing."));
        };
        unescape(inner).ok_or_else(|| invalid("The value is not one JSON string."))?
    } else if value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false") {
        value.to_ascii_lowercase()
    } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.to_string()
    } else {
        return Err(invalid(&format!(
            "The value {value} is neither a quoted string, a number nor true/false (and/or/not are not supported)."
        )));
    };
    let attribute = attribute_name(attribute);
    if attribute.is_empty()
        || !attribute
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '$' || c == '_')
    {
        return Err(invalid("The attribute name is not valid."));
    }
    Ok(Equals { attribute, value })
}

/// A JSON string body (without quotes) back to text; `None` if it holds an
/// unescaped quote or a bad escape.
fn unescape(inner: &str) -> Option<String> {
    let quoted = format!("\"{inner}\"");
    serde_json::from_str::<String>(&quoted).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_comparisons_providers_send() {
        assert_eq!(
            parse("userName eq \"Ada@Example.com\"").unwrap(),
            Equals {
                attribute: "username".into(),
                value: "Ada@Example.com".into()
            }
        );
        assert_eq!(
            parse("urn:ietf:params:scim:schemas:core:2.0:User:externalId EQ \"x \\\"y\\\"\"")
                .unwrap()
                .value,
            "x \"y\""
        );
        assert_eq!(parse("active eq True").unwrap().value, "true");
        assert_eq!(
            parse("displayName eq \"Token holders\"").unwrap().attribute,
            "displayname"
        );
    }

    #[test]
    fn refuses_what_it_cannot_answer_with_invalid_filter() {
        for bad in [
            "",
            "userName",
            "userName eq",
            "userName co \"a\"",
            "userName eq \"a\" and active eq true",
            "userName eq \"a",
            "userName eq a",
            "user(Name) eq \"a\"",
            "userName eq \"a\"b\"",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.scim_type, Some("invalidFilter"), "{bad}");
            assert!(e.detail.contains("eq"), "{bad}");
        }
    }
}

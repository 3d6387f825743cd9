//! Validated values that cross the program: each newtype's constructor is the
//! only place its rule is checked, so a value of the type is always valid.
//! Error messages are written for the person who typed the value.

use std::fmt;

/// Why a value was refused; shown next to the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// An email address, trimmed and lower-cased (addresses are compared that way).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<EmailAddress, Invalid> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(invalid("Enter an email address."));
        }
        if s.len() > 254 {
            return Err(invalid("An email address has at most 254 characters."));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(invalid(
                "An email address needs an @, like name@example.com.",
            ));
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(invalid("The part before the @ is not valid."));
        }
        let domain_ok = !domain.is_empty()
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !domain_ok {
            return Err(invalid("The part after the @ is not a valid domain."));
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"".contains(c))
        {
            return Err(invalid(
                "An email address cannot contain spaces or any of < > ( ) [ ] , ; : \\ \".",
            ));
        }
        Ok(EmailAddress(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Trims, then checks length in characters and refuses control characters.
fn parse_name(raw: &str, what: &str, max: usize) -> Result<String, Invalid> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(invalid(format!("Enter a {what}.")));
    }
    let n = s.chars().count();
    if n > max {
        return Err(invalid(format!(
            "A {what} has at most {max} characters (this one has {n})."
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(format!(
            "A {what} cannot contain line breaks or control characters."
        )));
    }
    Ok(s.to_string())
}

/// An organization's name: 1–100 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgName(String);

impl OrgName {
    pub fn parse(raw: &str) -> Result<OrgName, Invalid> {
        parse_name(raw, "organization name", 100).map(OrgName)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token's label: 1–100 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLabel(String);

impl TokenLabel {
    pub fn parse(raw: &str) -> Result<TokenLabel, Invalid> {
        parse_name(raw, "label", 100).map(TokenLabel)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn email_is_trimmed_and_lowercased() {
        assert_eq!(
            EmailAddress::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn email_rejects_malformed_addresses() {
        for bad in [
            "",
            "   ",
            "ada",
            "@example.com",
            "ada@",
            "ada@.com",
            "ada@ex..com",
            "a da@x.com",
            "ada@x_y.com",
            "<a@x.com>",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(EmailAddress::parse(&format!("{}@x.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn label_is_trimmed_and_bounded() {
        assert_eq!(
            TokenLabel::parse("  CI deploys ").unwrap().as_str(),
            "CI deploys"
        );
        assert_eq!(TokenLabel::parse("").unwrap_err().0, "Enter a label.");
        assert_eq!(TokenLabel::parse("   ").unwrap_err().0, "Enter a label.");
        assert!(TokenLabel::parse(&"x".repeat(100)).is_ok());
        let e = TokenLabel::parse(&"x".repeat(101)).unwrap_err();
        assert!(e.0.contains("at most 100") && e.0.contains("101"), "{e}");
        assert!(TokenLabel::parse("a\nb").is_err());
    }

    #[test]
    fn label_counts_characters_not_bytes() {
        assert!(TokenLabel::parse(&"é".repeat(100)).is_ok());
    }

    #[test]
    fn org_name_rules() {
        assert!(OrgName::parse("Acme").is_ok());
        assert!(OrgName::parse(" ").is_err());
        assert!(OrgName::parse(&"o".repeat(101)).is_err());
    }

    proptest! {
        #[test]
        fn any_label_that_parses_is_trimmed_and_short(s in "\\PC{0,120}") {
            if let Ok(l) = TokenLabel::parse(&s) {
                prop_assert_eq!(l.as_str(), s.trim());
                prop_assert!((1..=100).contains(&l.as_str().chars().count()));
            } else {
                let t = s.trim();
                prop_assert!(t.is_empty() || t.chars().count() > 100 || t.chars().any(char::is_control));
            }
        }

        #[test]
        fn parsed_email_is_stable(local in "[a-zA-Z0-9._+-]{1,20}", domain in "[a-z0-9-]{1,10}\\.[a-z]{2,6}") {
            let e = EmailAddress::parse(&format!("{local}@{domain}")).unwrap();
            prop_assert_eq!(EmailAddress::parse(e.as_str()).unwrap(), e.clone());
            prop_assert_eq!(e.as_str(), e.as_str().to_lowercase());
        }
    }
}

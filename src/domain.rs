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

/// Characters a name must not hold: controls (Cc), invisible format
/// characters such as right-to-left overrides and zero-width spaces (Cf),
/// and line and paragraph separators (Zl, Zp). Names reach pages, the audit
/// log, CSV exports and email subjects, where these would disguise or split
/// the text around them.
fn is_forbidden_in_names(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Normalises to NFC (so the same name typed on two systems is the same
/// name), trims, then checks length in characters and refuses the
/// characters of [`is_forbidden_in_names`]. Shared by every name a person
/// gives: labels, organization and project names.
pub fn parse_name(raw: &str, what: &str, max: usize) -> Result<String, Invalid> {
    use unicode_normalization::UnicodeNormalization;
    let normalized: String = raw.nfc().collect();
    let s = normalized.trim();
    // Separators and format characters count even where trimming would
    // drop them (`trim` takes U+2028/U+2029 as white space); a trailing
    // newline from a script is trimmed as before.
    if normalized
        .chars()
        .any(|c| is_forbidden_in_names(c) && !c.is_ascii_whitespace())
        || s.chars().any(is_forbidden_in_names)
    {
        return Err(invalid(format!(
            "{} {what} cannot contain line breaks, control characters or invisible \
             formatting characters (such as right-to-left overrides or zero-width spaces).",
            capitalized(article(what))
        )));
    }
    if s.is_empty() {
        return Err(invalid(format!("Enter {} {what}.", article(what))));
    }
    let n = s.chars().count();
    if n > max {
        return Err(invalid(format!(
            "{} {what} has at most {max} characters (this one has {n}).",
            capitalized(article(what))
        )));
    }
    Ok(s.to_string())
}

/// "a" or "an" before `word`, by its first letter: the names parsed here
/// ("label", "organization name", "project name") need nothing subtler.
fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u' | 'A' | 'E' | 'I' | 'O' | 'U') => "an",
        _ => "a",
    }
}

fn capitalized(article: &str) -> &'static str {
    if article == "an" { "An" } else { "A" }
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
    fn names_refuse_format_and_separator_characters() {
        for bad in [
            "deploy\u{202E}gpj.exe", // right-to-left override
            "\u{200B}",              // zero-width space only
            "\u{200B}\u{200C}\u{FEFF}",
            "line\u{2028}break", // line separator
            "para\u{2029}graph", // paragraph separator
            "tab\there",
            "soft\u{00AD}hyphen",
        ] {
            let e = TokenLabel::parse(bad).unwrap_err();
            assert!(e.0.contains("invisible formatting"), "{bad:?}: {e}");
            assert!(OrgName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            TokenLabel::parse(" CI déploiement ").unwrap().as_str(),
            "CI déploiement"
        );
        assert_eq!(
            TokenLabel::parse("مفتاح النشر").unwrap().as_str(),
            "مفتاح النشر"
        );
    }

    #[test]
    fn names_are_nfc_normalised() {
        // "é" typed as e + combining acute is the same label as the
        // precomposed character.
        let decomposed = TokenLabel::parse("cafe\u{0301}").unwrap();
        let composed = TokenLabel::parse("caf\u{00E9}").unwrap();
        assert_eq!(decomposed, composed);
        assert_eq!(decomposed.as_str(), "caf\u{00E9}");
        // Length counts the normalised characters: 100 decomposed é fit.
        assert!(TokenLabel::parse(&"e\u{0301}".repeat(100)).is_ok());
    }

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
        assert_eq!(
            OrgName::parse("").unwrap_err().0,
            "Enter an organization name."
        );
        assert!(
            OrgName::parse(&"x".repeat(101))
                .unwrap_err()
                .0
                .starts_with("An organization name has at most 100")
        );
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
            use unicode_normalization::UnicodeNormalization;
            let nfc: String = s.nfc().collect();
            let t = nfc.trim();
            if let Ok(l) = TokenLabel::parse(&s) {
                prop_assert_eq!(l.as_str(), t);
                prop_assert!((1..=100).contains(&l.as_str().chars().count()));
                prop_assert!(!l.as_str().chars().any(is_forbidden_in_names));
            } else {
                prop_assert!(
                    t.is_empty()
                        || t.chars().count() > 100
                        || nfc.chars().any(|c| is_forbidden_in_names(c) && !c.is_ascii_whitespace())
                        || t.chars().any(is_forbidden_in_names)
                );
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

//! The token's wire format and the values derived from it.
//!
//! A token reads `<prefix>_<random><checksum>`: the configured [`TokenPrefix`],
//! [`RANDOM_LEN`] base62 characters from the operating system's CSPRNG, and a
//! CRC32 of everything before it in [`CHECKSUM_LEN`] base62 characters. This
//! file owns generating and parsing that string ([`PlainToken`]), the SHA-256
//! [`TokenDigest`] that is stored instead of it, and the short
//! [`DisplayPrefix`] shown to people so they can recognise a token.

use std::fmt;

use rand::TryRng;
use rand::rngs::SysRng;
use sha2::{Digest, Sha256};

/// Base62 characters of randomness in a token: 30 × log2(62) ≈ 178 bits,
/// comfortably above the 160 bits we promise.
pub const RANDOM_LEN: usize = 30;

/// Base62 characters of checksum: 62^6 > 2^32, so any CRC32 fits.
pub const CHECKSUM_LEN: usize = 6;

/// Everything after `<prefix>_`.
const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;

/// Random characters kept in the display prefix: enough to tell a person's
/// tokens apart, far too few to help guess one (8 of 30).
const DISPLAY_RANDOM_LEN: usize = 8;

/// Ordered like ASCII, so zero-padded encodings sort like the numbers.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The largest multiple of 62 that fits in a byte: bytes below it map onto
/// the alphabet evenly (4 times each); bytes at or above it would favour
/// the first 8 characters, so they are drawn again.
const REJECT_FROM: u8 = 248;

const MAX_PREFIX_LEN: usize = 20;

fn is_base62(byte: u8) -> bool {
    // Exactly `0-9A-Za-z`, the alphabet above.
    byte.is_ascii_alphanumeric()
}

/// Writes `value` as 6 zero-padded base62 digits, most significant first.
fn encode_checksum(mut value: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [ALPHABET[0]; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// The part of a token that names the issuer, e.g. `ks` in `ks_…`.
///
/// It is what secret scanners match on, so it is restricted to characters
/// that cannot be confused with the random part or the separator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenPrefix(String);

/// A token prefix that does not follow the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "token prefix must be 1-20 characters: a lowercase letter, then lowercase letters, \
     digits or '_' (not ending in '_')"
)]
pub struct PrefixError;

impl TokenPrefix {
    pub fn parse(s: &str) -> Result<TokenPrefix, PrefixError> {
        let bytes = s.as_bytes();
        let valid = matches!(bytes.len(), 1..=MAX_PREFIX_LEN)
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            // A trailing '_' would make `ks__…` tokens, easy to mistype.
            && bytes.last() != Some(&b'_');
        if valid {
            Ok(TokenPrefix(s.to_owned()))
        } else {
            Err(PrefixError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TokenPrefix {
    fn default() -> Self {
        TokenPrefix(String::from("ks"))
    }
}

/// The prefix is public (it is printed in docs and matched by scanners).
impl fmt::Display for TokenPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a presented string is not a token of ours.
///
/// The messages may reach the caller (e.g. in an `error_description`), so
/// they describe the problem without echoing any part of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    #[error("the token does not start with the expected prefix")]
    WrongPrefix,
    #[error("the token has the wrong length")]
    WrongLength,
    #[error("the token contains a character that is not allowed")]
    BadCharacter,
    #[error("the token's checksum does not match (mistyped or truncated?)")]
    BadChecksum,
}

/// A token in plain text: a secret.
///
/// It exists only between generation and the "shown once" response, or
/// while a presented bearer token is being checked. It has no `Display`,
/// `Serialize` or `Clone`, and its `Debug` is redacted, so it cannot slip
/// into a log or a template by accident; [`PlainToken::expose_secret`] is the
/// one deliberate way to read it.
pub struct PlainToken(String);

impl PlainToken {
    /// Generates a fresh token from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// If the operating system cannot supply randomness. There is no safe
    /// fallback for a secret, and such a failure means the host is broken.
    pub fn generate(prefix: &TokenPrefix) -> PlainToken {
        Self::generate_with(prefix, |buf| SysRng.try_fill_bytes(buf))
            .expect("the operating system's random number generator failed")
    }

    /// Generation with the randomness source passed in, so tests can check
    /// the mapping from bytes to characters.
    fn generate_with<E>(
        prefix: &TokenPrefix,
        mut fill: impl FnMut(&mut [u8]) -> Result<(), E>,
    ) -> Result<PlainToken, E> {
        let mut token = String::with_capacity(prefix.0.len() + 1 + BODY_LEN);
        token.push_str(&prefix.0);
        token.push('_');

        // Rejection sampling: ~3% of bytes are discarded, so one buffer
        // almost always suffices.
        let mut buf = [0u8; 64];
        let mut wanted = RANDOM_LEN;
        while wanted > 0 {
            fill(&mut buf)?;
            for &byte in buf.iter().filter(|&&b| b < REJECT_FROM).take(wanted) {
                token.push(char::from(ALPHABET[usize::from(byte % 62)]));
                wanted -= 1;
            }
        }

        let checksum = encode_checksum(crc32fast::hash(token.as_bytes()));
        token.extend(checksum.iter().map(|&b| char::from(b)));
        Ok(PlainToken(token))
    }

    /// Checks that `s` is shaped like a token with this prefix.
    pub fn parse(prefix: &TokenPrefix, s: &str) -> Result<PlainToken, TokenFormatError> {
        check_shape(prefix, s)?;
        Ok(PlainToken(s.to_owned()))
    }

    /// The digest of a presented token (from a request header or form),
    /// after the same checks as [`PlainToken::parse`]. The bearer hot path
    /// needs only the digest, so the secret is never copied.
    pub fn digest_of_presented(
        prefix: &TokenPrefix,
        s: &str,
    ) -> Result<TokenDigest, TokenFormatError> {
        check_shape(prefix, s)?;
        Ok(digest_of(s))
    }

    /// The token itself. Call sites of this method are where the secret
    /// leaves the type; keep them few and obvious.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the whole token, which is what gets stored. A fast
    /// hash is enough: the token has ~178 random bits, so nothing can be
    /// gained by guessing inputs.
    pub fn digest(&self) -> TokenDigest {
        digest_of(&self.0)
    }

    /// `<prefix>_` and the first few random characters, e.g. `ks_a1B2c3D4`.
    pub fn display_prefix(&self) -> DisplayPrefix {
        // Every `PlainToken` is `<prefix>_<BODY_LEN ASCII characters>`.
        let end = self.0.len() - BODY_LEN + DISPLAY_RANDOM_LEN;
        DisplayPrefix(self.0[..end].to_owned())
    }
}

fn digest_of(token: &str) -> TokenDigest {
    TokenDigest(Sha256::digest(token.as_bytes()).into())
}

/// Whether `s` is `<prefix>_<random><checksum>` with a checksum that
/// matches. This runs on every bearer request before any cache or database
/// lookup, so it only inspects bytes; the checksum lets typos and random
/// garbage be refused here.
fn check_shape(prefix: &TokenPrefix, s: &str) -> Result<(), TokenFormatError> {
    let body = s
        .strip_prefix(prefix.as_str())
        .and_then(|rest| rest.strip_prefix('_'))
        .ok_or(TokenFormatError::WrongPrefix)?;

    // Counted in characters, so that one non-ASCII character is reported
    // as a bad character rather than as a length problem. The byte bound
    // first keeps huge inputs from being walked.
    if body.len() > BODY_LEN * 4 || body.chars().count() != BODY_LEN {
        return Err(TokenFormatError::WrongLength);
    }
    if !body.bytes().all(is_base62) {
        return Err(TokenFormatError::BadCharacter);
    }

    // Everything is ASCII now, so byte offsets are character offsets.
    let (covered, checksum) = s.as_bytes().split_at(s.len() - CHECKSUM_LEN);
    if encode_checksum(crc32fast::hash(covered)) != checksum {
        return Err(TokenFormatError::BadChecksum);
    }
    Ok(())
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainToken(<redacted>)")
    }
}

/// The SHA-256 of a token: what the database stores and looks tokens up by.
///
/// It is not the secret, but a full digest in a log would let whoever reads
/// the log find the row, so `Debug` shows only the start and there is no
/// `Display`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn from_bytes(bytes: [u8; 32]) -> TokenDigest {
        TokenDigest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters: the stored form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads the stored form back; `None` unless it is exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Option<TokenDigest> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).ok()?;
        Some(TokenDigest(bytes))
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({}…)", hex::encode(&self.0[..4]))
    }
}

/// The recognisable start of a token, e.g. `ks_a1B2c3D4`, shown in lists
/// and emails. Not secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayPrefix(String);

impl DisplayPrefix {
    /// Wraps a value read back from storage; it was produced by
    /// [`PlainToken::display_prefix`] when the token was created.
    pub fn from_stored(s: String) -> DisplayPrefix {
        DisplayPrefix(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for DisplayPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use proptest::prelude::*;

    use super::*;

    /// Independent reader for the checksum encoding, to check it against.
    fn decode_checksum(digits: &[u8]) -> Option<u32> {
        let mut value: u64 = 0;
        for &d in digits {
            let digit = ALPHABET.iter().position(|&a| a == d)?;
            value = value * 62 + digit as u64;
        }
        u32::try_from(value).ok()
    }

    fn prefix(s: &str) -> TokenPrefix {
        TokenPrefix::parse(s).expect("test prefix is valid")
    }

    /// A deterministic byte source that replays `bytes` forever.
    fn replay(bytes: Vec<u8>) -> impl FnMut(&mut [u8]) -> Result<(), Infallible> {
        let mut next = bytes.into_iter().cycle();
        move |buf| {
            for slot in buf {
                *slot = next.next().unwrap_or(0);
            }
            Ok(())
        }
    }

    fn generate_from(prefix: &TokenPrefix, bytes: Vec<u8>) -> PlainToken {
        match PlainToken::generate_with(prefix, replay(bytes)) {
            Ok(token) => token,
            Err(never) => match never {},
        }
    }

    fn valid_prefix() -> impl Strategy<Value = String> {
        "[a-z]([a-z0-9_]{0,18}[a-z0-9])?"
    }

    #[test]
    fn alphabet_is_digits_then_upper_then_lower() {
        assert_eq!(
            ALPHABET,
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        );
        assert!(ALPHABET.iter().all(|&b| is_base62(b)));
        assert_eq!((0u8..=255).filter(|&b| is_base62(b)).count(), 62);
    }

    #[test]
    fn random_part_has_at_least_160_bits() {
        assert!(RANDOM_LEN as f64 * 62f64.log2() >= 160.0);
    }

    #[test]
    fn prefix_accepts_the_documented_shape() {
        for ok in ["ks", "k", "ghp", "acme_pat", "a1", "abcdefghijklmnopqrst"] {
            assert!(TokenPrefix::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn prefix_rejects_anything_else() {
        for bad in [
            "",
            "abcdefghijklmnopqrstu",
            "1ks",
            "_ks",
            "ks_",
            "Ks",
            "kS",
            "k-s",
            "k s",
            "ké",
        ] {
            assert_eq!(TokenPrefix::parse(bad), Err(PrefixError), "{bad:?}");
        }
    }

    #[test]
    fn prefix_error_says_what_is_allowed() {
        let msg = PrefixError.to_string();
        assert!(msg.contains("1-20 characters"), "{msg}");
        assert!(msg.contains("not ending in '_'"), "{msg}");
    }

    #[test]
    fn default_prefix_is_ks() {
        assert_eq!(TokenPrefix::default().as_str(), "ks");
        assert_eq!(TokenPrefix::default().to_string(), "ks");
        assert_eq!(TokenPrefix::parse("ks"), Ok(TokenPrefix::default()));
    }

    #[test]
    fn generated_token_matches_known_answer() {
        // Bytes 0..30 map to the first 30 alphabet characters; the checksum
        // is CRC32("ks_0123…T") = 555686521, in base62, most significant
        // digit first (computed independently).
        let token = generate_from(&prefix("ks"), (0..30).collect());
        assert_eq!(
            token.expose_secret(),
            "ks_0123456789ABCDEFGHIJKLMNOPQRST0bbbRp"
        );
    }

    /// The random characters of a token generated with prefix `ks`.
    fn random_part(token: &PlainToken) -> String {
        token.expose_secret()[3..3 + RANDOM_LEN].to_owned()
    }

    #[test]
    fn generate_redraws_bytes_at_or_above_248() {
        // 248..=255 would map to '0'..'7' a fifth time; they must be skipped.
        for byte in 248..=255u8 {
            let token = generate_from(&prefix("ks"), vec![byte, 1]);
            assert_eq!(random_part(&token), "1".repeat(RANDOM_LEN), "byte {byte}");
        }
    }

    #[test]
    fn generate_maps_each_byte_to_byte_mod_62() {
        for byte in 0..248u8 {
            let token = generate_from(&prefix("ks"), vec![byte]);
            let expected = char::from(ALPHABET[usize::from(byte % 62)]);
            assert_eq!(
                random_part(&token),
                expected.to_string().repeat(RANDOM_LEN),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn generate_propagates_rng_failure() {
        let result = PlainToken::generate_with(&prefix("ks"), |_| Err("no entropy"));
        assert!(matches!(result, Err("no entropy")));
    }

    #[test]
    fn two_generated_tokens_differ() {
        let p = TokenPrefix::default();
        assert_ne!(
            PlainToken::generate(&p).expose_secret(),
            PlainToken::generate(&p).expose_secret()
        );
    }

    #[test]
    fn parse_accepts_the_known_answer_token() {
        let token = PlainToken::parse(&prefix("ks"), "ks_0123456789ABCDEFGHIJKLMNOPQRST0bbbRp");
        assert!(token.is_ok());
    }

    #[test]
    fn parse_rejects_wrong_prefix() {
        let s = "ks_0123456789ABCDEFGHIJKLMNOPQRST0bbbRp";
        for p in ["kt", "k", "ksx"] {
            assert_eq!(
                PlainToken::parse(&prefix(p), s).err(),
                Some(TokenFormatError::WrongPrefix),
                "{p}"
            );
        }
        assert_eq!(
            PlainToken::parse(&prefix("ks"), "ks-0123456789ABCDEFGHIJKLMNOPQRST0bbbRp").err(),
            Some(TokenFormatError::WrongPrefix)
        );
    }

    #[test]
    fn parse_rejects_wrong_length() {
        let p = prefix("ks");
        for s in [
            "ks_",
            "ks_0123456789ABCDEFGHIJKLMNOPQRST0bbbR",
            "ks_0123456789ABCDEFGHIJKLMNOPQRST0bbbRpx",
        ] {
            assert_eq!(
                PlainToken::parse(&p, s).err(),
                Some(TokenFormatError::WrongLength),
                "{s}"
            );
        }
    }

    #[test]
    fn parse_rejects_bad_character() {
        let p = prefix("ks");
        for s in [
            "ks_0123456789ABCDEFGHIJKLMNOPQRS-0bbbRp",
            "ks_0123456789ABCDEFGHIJKLMNOPQRS_0bbbRp",
            "ks_0123456789ABCDEFGHIJKLMNOPQRSé0bbbRp",
            "ks_0123456789ABCDEFGHIJKLMNOPQRST0bbbR ",
        ] {
            assert_eq!(
                PlainToken::parse(&p, s).err(),
                Some(TokenFormatError::BadCharacter),
                "{s}"
            );
        }
    }

    #[test]
    fn parse_rejects_wrong_checksum() {
        let p = prefix("ks");
        for s in [
            "ks_0123456789ABCDEFGHIJKLMNOPQRST0bbbRq",
            "ks_1123456789ABCDEFGHIJKLMNOPQRST0bbbRp",
        ] {
            assert_eq!(
                PlainToken::parse(&p, s).err(),
                Some(TokenFormatError::BadChecksum),
                "{s}"
            );
        }
    }

    #[test]
    fn checksum_covers_the_prefix() {
        // Same random part and checksum under another prefix of equal length.
        let s = "kt_0123456789ABCDEFGHIJKLMNOPQRST0bbbRp";
        assert_eq!(
            PlainToken::parse(&prefix("kt"), s).err(),
            Some(TokenFormatError::BadChecksum)
        );
    }

    #[test]
    fn format_errors_do_not_echo_the_token() {
        let s = "ks_0123456789ABCDEFGHIJKLMNOPQRST0bbbRq";
        let err = PlainToken::parse(&prefix("ks"), s).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(!msg.is_empty());
        assert!(!msg.contains("0123456789"), "{msg}");
    }

    #[test]
    fn checksum_encoding_known_values() {
        assert_eq!(&encode_checksum(0), b"000000");
        assert_eq!(&encode_checksum(61), b"00000z");
        assert_eq!(&encode_checksum(62), b"000010");
        assert_eq!(&encode_checksum(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn display_prefix_is_prefix_and_eight_random_characters() {
        let token = generate_from(&prefix("acme_pat"), (0..30).collect());
        let shown = token.display_prefix();
        assert_eq!(shown.as_str(), "acme_pat_01234567");
        assert_eq!(shown.to_string(), "acme_pat_01234567");
        assert_eq!(
            DisplayPrefix::from_stored(String::from("acme_pat_01234567")),
            shown
        );
        assert_eq!(shown.into_string(), "acme_pat_01234567");
    }

    #[test]
    fn digest_matches_known_sha256() {
        let token = generate_from(&prefix("ks"), (0..30).collect());
        assert_eq!(
            token.digest().to_hex(),
            "3aa03d55b1002e64f7d53d022a6176295b6f9b6d605bf2851cd6febad17f3f32"
        );
    }

    #[test]
    fn digest_debug_shows_only_the_start() {
        let digest = TokenDigest::from_bytes([0xab; 32]);
        assert_eq!(format!("{digest:?}"), "TokenDigest(abababab…)");
    }

    #[test]
    fn digest_from_hex_rejects_malformed_input() {
        let good = "ab".repeat(32);
        assert!(TokenDigest::from_hex(&good).is_some());
        assert!(TokenDigest::from_hex(&good[..62]).is_none());
        assert!(TokenDigest::from_hex(&format!("{good}00")).is_none());
        assert!(TokenDigest::from_hex(&"zz".repeat(32)).is_none());
        assert!(TokenDigest::from_hex("").is_none());
    }

    #[test]
    fn plain_token_debug_is_redacted() {
        let token = PlainToken::generate(&TokenPrefix::default());
        assert_eq!(format!("{token:?}"), "PlainToken(<redacted>)");
        assert_eq!(format!("{token:#?}"), "PlainToken(<redacted>)");
    }

    proptest! {
        #[test]
        fn prefix_parse_accepts_exactly_the_documented_shape(s in "\\PC{0,24}") {
            let expected = (1..=20).contains(&s.len())
                && s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !s.ends_with('_');
            prop_assert_eq!(TokenPrefix::parse(&s).is_ok(), expected);
        }

        #[test]
        fn generated_prefixes_parse(s in valid_prefix()) {
            prop_assert_eq!(TokenPrefix::parse(&s).map(|p| p.as_str().to_owned()), Ok(s));
        }

        #[test]
        fn generate_then_parse_round_trips(p in valid_prefix()) {
            let p = prefix(&p);
            let token = PlainToken::generate(&p);
            let parsed = PlainToken::parse(&p, token.expose_secret());
            prop_assert_eq!(
                parsed.as_ref().map(PlainToken::expose_secret),
                Ok(token.expose_secret())
            );
        }

        #[test]
        fn generated_tokens_have_right_length_and_alphabet(p in valid_prefix()) {
            let p = prefix(&p);
            let token = PlainToken::generate(&p);
            let s = token.expose_secret();
            prop_assert_eq!(s.len(), p.as_str().len() + 1 + RANDOM_LEN + CHECKSUM_LEN);
            let body = &s[p.as_str().len() + 1..];
            let expected_start = format!("{p}_");
            prop_assert!(s.starts_with(&expected_start));
            prop_assert!(body.bytes().all(|b| ALPHABET.contains(&b)), "{}", body);
        }

        #[test]
        fn any_single_substitution_in_body_is_rejected(
            p in valid_prefix(),
            index in 0..BODY_LEN,
            replacement in any::<char>(),
        ) {
            let p = prefix(&p);
            let token = PlainToken::generate(&p);
            let s = token.expose_secret();
            let at = p.as_str().len() + 1 + index;
            prop_assume!(!s[at..].starts_with(replacement));
            let mut tampered = String::from(&s[..at]);
            tampered.push(replacement);
            tampered.push_str(&s[at + 1..]);
            let expected = if replacement.is_ascii_alphanumeric() {
                TokenFormatError::BadChecksum
            } else {
                TokenFormatError::BadCharacter
            };
            prop_assert_eq!(PlainToken::parse(&p, &tampered).err(), Some(expected));
        }

        #[test]
        fn any_other_prefix_is_rejected(p in valid_prefix(), other in valid_prefix()) {
            prop_assume!(p != other);
            let token = PlainToken::generate(&prefix(&p));
            let s = token.expose_secret();
            let result = PlainToken::parse(&prefix(&other), s);
            prop_assert!(result.is_err());
            if !s.starts_with(&format!("{other}_")) {
                prop_assert_eq!(result.err(), Some(TokenFormatError::WrongPrefix));
            }
        }

        #[test]
        fn truncated_tokens_are_rejected(p in valid_prefix(), cut in 1..=BODY_LEN) {
            let p = prefix(&p);
            let token = PlainToken::generate(&p);
            let s = token.expose_secret();
            prop_assert_eq!(
                PlainToken::parse(&p, &s[..s.len() - cut]).err(),
                Some(TokenFormatError::WrongLength)
            );
        }

        #[test]
        fn tokens_cut_into_the_prefix_are_rejected(p in valid_prefix(), keep in 0..=20usize) {
            let p = prefix(&p);
            let token = PlainToken::generate(&p);
            let s = token.expose_secret();
            let keep = keep.min(p.as_str().len());
            prop_assert_eq!(
                PlainToken::parse(&p, &s[..keep]).err(),
                Some(TokenFormatError::WrongPrefix)
            );
        }

        #[test]
        fn extended_tokens_are_rejected(p in valid_prefix(), extra in "[0-9A-Za-z]{1,40}") {
            let p = prefix(&p);
            let token = PlainToken::generate(&p);
            let extended = format!("{}{extra}", token.expose_secret());
            prop_assert_eq!(
                PlainToken::parse(&p, &extended).err(),
                Some(TokenFormatError::WrongLength)
            );
        }

        #[test]
        fn the_presented_digest_agrees_with_parse_then_digest(s in "\\PC{0,60}", real in any::<bool>()) {
            let p = TokenPrefix::default();
            let s = if real { PlainToken::generate(&p).expose_secret().to_owned() } else { s };
            prop_assert_eq!(
                PlainToken::digest_of_presented(&p, &s),
                PlainToken::parse(&p, &s).map(|t| t.digest())
            );
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = PlainToken::parse(&TokenPrefix::default(), &s);
            let _ = PlainToken::parse(&TokenPrefix::default(), &format!("ks_{s}"));
        }

        #[test]
        fn checksum_encoding_round_trips(n in any::<u32>()) {
            let digits = encode_checksum(n);
            prop_assert!(digits.iter().all(|&b| is_base62(b)));
            prop_assert_eq!(decode_checksum(&digits), Some(n));
        }

        #[test]
        fn checksum_encoding_sorts_like_the_numbers(a in any::<u32>(), b in any::<u32>()) {
            // Holds only if the most significant digit comes first.
            prop_assert_eq!(encode_checksum(a).cmp(&encode_checksum(b)), a.cmp(&b));
        }

        #[test]
        fn digest_is_stable_and_64_lowercase_hex(p in valid_prefix()) {
            let token = PlainToken::generate(&prefix(&p));
            let hex = token.digest().to_hex();
            prop_assert_eq!(hex.len(), 64);
            prop_assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            prop_assert_eq!(token.digest(), token.digest());
            let reparsed = PlainToken::parse(&prefix(&p), token.expose_secret());
            prop_assert_eq!(reparsed.map(|t| t.digest()), Ok(token.digest()));
            prop_assert_eq!(TokenDigest::from_hex(&hex), Some(token.digest()));
        }

        #[test]
        fn digest_bytes_round_trip(bytes in any::<[u8; 32]>()) {
            let digest = TokenDigest::from_bytes(bytes);
            prop_assert_eq!(digest.as_bytes(), &bytes);
            prop_assert_eq!(TokenDigest::from_hex(&digest.to_hex()), Some(digest));
            prop_assert_eq!(TokenDigest::from_hex(&digest.to_hex().to_uppercase()), Some(digest));
        }

        #[test]
        fn plain_token_debug_never_contains_the_secret(p in valid_prefix()) {
            let token = PlainToken::generate(&prefix(&p));
            let body = &token.expose_secret()[p.len() + 1..];
            let debug = format!("{token:?}");
            prop_assert!(!debug.contains(body));
            prop_assert!(!debug.contains(&body[..8]));
        }
    }
}

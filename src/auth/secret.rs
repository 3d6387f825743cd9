//! Random secrets: one-time link secrets and session ids. Only the SHA-256 of
//! a secret is stored; the secret itself lives in a link (an email, the CLI's
//! output) or a cookie, and in the request that presents it.

use std::fmt;

use rand::TryRng;
use sha2::{Digest, Sha256};

/// 24 bytes from the OS CSPRNG: 192 bits, comfortably above the 128 required.
const SECRET_BYTES: usize = 24;

/// A secret: a link secret or a session id. Never `Display`ed or `Debug`-printed.
pub struct Secret(String);

impl Secret {
    pub fn generate() -> Secret {
        let mut bytes = [0u8; SECRET_BYTES];
        // Without the OS RNG there is no safe way to mint a secret at all.
        rand::rngs::SysRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random number generator failed");
        Secret(hex::encode(bytes))
    }

    /// Accepts a secret presented in a URL: exactly the shape `generate` makes,
    /// so garbage never reaches the database.
    pub fn parse(raw: &str) -> Option<Secret> {
        let ok = raw.len() == SECRET_BYTES * 2
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Secret(raw.to_string()))
    }

    /// What the database stores and looks up: lowercase hex SHA-256.
    pub fn digest_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// The only way to read the secret: to put it into the link being sent.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A short random tag for file names and ids that are not secrets.
pub fn short_random() -> String {
    let mut bytes = [0u8; 6];
    let _ = rand::rngs::SysRng.try_fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_back_and_differ() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(
            Secret::parse(a.expose_secret()).unwrap().digest_hex(),
            a.digest_hex()
        );
        assert_eq!(a.digest_hex().len(), 64);
    }

    #[test]
    fn parse_rejects_anything_else() {
        let good = Secret::generate();
        let s = good.expose_secret();
        assert!(Secret::parse(&s[1..]).is_none());
        assert!(Secret::parse(&s.to_uppercase()).is_none());
        assert!(Secret::parse(&format!("{}g", &s[1..])).is_none());
        assert!(Secret::parse("").is_none());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::generate();
        assert!(!format!("{s:?}").contains(s.expose_secret()));
    }
}

//! Leaked-token reports in GitHub's secret scanning partner format: the
//! public keys that sign them (fetched, cached, refreshed on an unknown key
//! identifier), checking a report's signature, and acting on the tokens it
//! names (a live Keysmith token is revoked as "leaked" and its owner told
//! where it was found).
//!
//! The reported plaintext never leaves this module: it is hashed for the
//! answer and the lookup, and neither logged nor stored.

use std::collections::HashMap;
use std::time::Duration;

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::clock::Clock;
use crate::config::KeySource;
use crate::mail::{self, Mail};
use crate::request::RequestMeta;
use crate::store::invalidation::Invalidation;
use crate::store::tokens::{self, Actor, RevokeReason, TokenRecord};
use crate::store::{StoreError, orgs, rotation};
use crate::token::PlainToken;
use crate::verify::commit_and_invalidate;

/// After a fetch, an unknown key identifier does not cause another one for
/// this long: anyone can send a made-up identifier, and must not be able to
/// make Keysmith fetch the key document on every request.
pub const REFRESH_INTERVAL_SECONDS: i64 = 60;

/// The most a key document fetch may take, and the largest document read.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_KEY_DOCUMENT_BYTES: usize = 256 * 1024;

/// Who reports leaks in this format, as the owner's email names it.
pub const REPORTER: &str = "GitHub secret scanning";

/// GitHub's key document.
#[derive(Debug, Deserialize)]
struct KeyDocument {
    public_keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
struct KeyEntry {
    key_identifier: String,
    key: String,
    // `is_current` is informational: a report signed with a retired key
    // that is still published is as authentic as one signed with the
    // current key.
}

/// Why a key document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyDocumentError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error(
        "not GitHub's key document ({0}); expected {{\"public_keys\": [{{\"key_identifier\", \"key\", \"is_current\"}}]}}"
    )]
    Shape(String),
    #[error("holds no usable P-256 public key")]
    NoKeys,
}

/// Parses a key document into identifier → key. Entries whose key is not a
/// PEM P-256 public key are skipped (and logged); a document with none is
/// an error.
fn parse_key_document(text: &[u8]) -> Result<HashMap<String, VerifyingKey>, KeyDocumentError> {
    let doc: KeyDocument =
        serde_json::from_slice(text).map_err(|e| KeyDocumentError::Shape(e.to_string()))?;
    let mut keys = HashMap::new();
    for entry in doc.public_keys {
        match VerifyingKey::from_public_key_pem(entry.key.trim()) {
            Ok(key) => {
                keys.insert(entry.key_identifier, key);
            }
            Err(e) => tracing::warn!(
                key_identifier = %entry.key_identifier,
                error = %e,
                "secret scanning key document: skipping a key that is not a PEM P-256 public key"
            ),
        }
    }
    if keys.is_empty() {
        return Err(KeyDocumentError::NoKeys);
    }
    Ok(keys)
}

/// Why a report's signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the Github-Public-Key-Identifier header is missing or not a key identifier")]
    MissingIdentifier,
    #[error("the Github-Public-Key-Signature header is missing or not base64")]
    MissingSignature,
    #[error("the signature is not an ASN.1 DER ECDSA signature")]
    Malformed,
    #[error("no published key has that identifier")]
    UnknownKey,
    #[error("the signature does not match the request body")]
    Mismatch,
    /// The key document could not be fetched or read: the report may well
    /// be genuine, so the sender should retry.
    #[error("the public keys cannot be loaded right now")]
    KeysUnavailable,
}

struct Ring {
    keys: HashMap<String, VerifyingKey>,
    /// When the document was last fetched (or a fetch last failed).
    fetched_at: Option<i64>,
}

/// The public keys reports are signed with, loaded from the configured
/// source when first needed and again when a report names a key not seen.
pub struct KeyRing {
    source: KeySource,
    clock: Clock,
    http: reqwest::Client,
    /// One lock around lookup and refresh, so concurrent reports with a
    /// new identifier cause one fetch, not one each.
    ring: tokio::sync::Mutex<Ring>,
}

impl KeyRing {
    pub fn new(source: KeySource, clock: Clock) -> KeyRing {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        KeyRing {
            source,
            clock,
            http,
            ring: tokio::sync::Mutex::new(Ring {
                keys: HashMap::new(),
                fetched_at: None,
            }),
        }
    }

    fn describe_source(&self) -> String {
        match &self.source {
            KeySource::Url(url) => url.to_string(),
            KeySource::File(path) => path.display().to_string(),
        }
    }

    async fn load(&self) -> Result<HashMap<String, VerifyingKey>, KeyDocumentError> {
        let read_err = |e: String| KeyDocumentError::Read(self.describe_source(), e);
        let bytes = match &self.source {
            KeySource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| read_err(e.to_string()))?,
            KeySource::Url(url) => {
                let response = self
                    .http
                    .get(url.clone())
                    .header("accept", "application/json")
                    .send()
                    .await
                    .map_err(|e| read_err(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(read_err(format!("HTTP {}", response.status())));
                }
                // Read in chunks, so an oversized answer is cut off rather
                // than held in memory whole.
                let mut response = response;
                let mut bytes = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| read_err(e.to_string()))?
                {
                    if bytes.len() + chunk.len() > MAX_KEY_DOCUMENT_BYTES {
                        return Err(read_err(format!(
                            "larger than {MAX_KEY_DOCUMENT_BYTES} bytes"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                bytes
            }
        };
        if bytes.len() > MAX_KEY_DOCUMENT_BYTES {
            return Err(read_err(format!(
                "larger than {MAX_KEY_DOCUMENT_BYTES} bytes"
            )));
        }
        parse_key_document(&bytes)
    }

    /// The key with this identifier: from the cache, or after one refresh
    /// if the last fetch is older than [`REFRESH_INTERVAL_SECONDS`].
    async fn key(&self, identifier: &str) -> Result<VerifyingKey, SignatureError> {
        let mut ring = self.ring.lock().await;
        if let Some(key) = ring.keys.get(identifier) {
            return Ok(*key);
        }
        let now = self.clock.unix();
        if ring
            .fetched_at
            .is_some_and(|at| now - at < REFRESH_INTERVAL_SECONDS)
        {
            return Err(SignatureError::UnknownKey);
        }
        ring.fetched_at = Some(now);
        match self.load().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "secret scanning public keys loaded");
                ring.keys = keys;
            }
            Err(e) => {
                // Keep the keys we had: a failed refresh must not turn
                // away reports signed with a key we already trust.
                tracing::warn!(error = %e, "secret scanning public keys could not be loaded");
                return Err(SignatureError::KeysUnavailable);
            }
        }
        ring.keys
            .get(identifier)
            .copied()
            .ok_or(SignatureError::UnknownKey)
    }

    /// Checks that `signature_b64` (base64 of an ASN.1 DER ECDSA P-256 /
    /// SHA-256 signature) signs `body` with the key named `identifier`.
    pub async fn verify(
        &self,
        identifier: Option<&str>,
        signature_b64: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let identifier = identifier
            .map(str::trim)
            .filter(|id| is_key_identifier(id))
            .ok_or(SignatureError::MissingIdentifier)?;
        let der = signature_b64
            .and_then(|s| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .ok()
            })
            .ok_or(SignatureError::MissingSignature)?;
        let signature = Signature::from_der(&der).map_err(|_| SignatureError::Malformed)?;
        let key = self.key(identifier).await?;
        key.verify(body, &signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// GitHub's identifiers are hex digests; anything printable and short is
/// accepted, so another reporter's naming works too.
fn is_key_identifier(id: &str) -> bool {
    matches!(id.len(), 1..=256) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The most reports one request may carry (the body limit bounds it too).
pub const MAX_REPORTS: usize = 1000;

/// One reported match, as GitHub sends it. Fields GitHub may add later
/// are ignored rather than refused.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = SecretScanningReport)]
pub struct Reported {
    /// The matched text.
    token: String,
    /// The pattern's name, echoed back.
    #[serde(rename = "type", default)]
    token_type: String,
    /// Where it was found, echoed back and named in the owner's email.
    #[serde(default)]
    url: String,
    #[serde(default)]
    source: String,
}

/// `Debug` that leaves the reported secret out.
impl std::fmt::Debug for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reported")
            .field("token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("url", &self.url)
            .field("source", &self.source)
            .finish()
    }
}

/// A report that is not a JSON array of `{"token", "type", "url", "source"}`.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Not JSON at all (answered 400).
    #[error(
        "the body is not valid JSON ({0}); send a JSON array of {{\"token\", \"type\", \"url\", \"source\"}} objects"
    )]
    Syntax(String),
    /// JSON, but not the report shape (answered 422).
    #[error(
        "the body must be a JSON array of {{\"token\", \"type\", \"url\", \"source\"}} objects ({0})"
    )]
    Shape(String),
    #[error("a report may name at most {MAX_REPORTS} tokens; send the rest in another request")]
    TooMany,
    #[error("report {0}: \"token\" must not be empty")]
    EmptyToken(usize),
}

/// Parses a (signature-checked) body. Serde's messages name the position
/// and the field, never the value, so no part of a token is echoed.
pub fn parse_reports(body: &[u8]) -> Result<Vec<Reported>, ReportError> {
    let reports: Vec<Reported> = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ReportError::Syntax(describe_json_error(&e))
        } else {
            ReportError::Shape(describe_json_error(&e))
        }
    })?;
    if reports.len() > MAX_REPORTS {
        return Err(ReportError::TooMany);
    }
    if let Some(i) = reports.iter().position(|r| r.token.is_empty()) {
        return Err(ReportError::EmptyToken(i));
    }
    Ok(reports)
}

/// serde_json's message for a type error quotes the offending string
/// (`invalid type: string "…"`), which could be a token: keep only the
/// category and the position.
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "not valid JSON",
        Category::Eof => "the JSON ends early",
        Category::Data => {
            let msg = e.to_string();
            if msg.starts_with("missing field") {
                return msg;
            }
            "a value has the wrong type"
        }
        Category::Io => "the body could not be read",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SecretScanningLabel)]
pub enum Label {
    /// A genuine Keysmith token, whatever its state now.
    TruePositive,
    FalsePositive,
}

/// The answer for one reported match.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SecretScanningVerdict)]
pub struct Verdict {
    pub token_hash: String,
    pub token_type: String,
    pub label: Label,
    pub url: String,
}

/// What became of one reported token, for the log and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Revoked,
    /// Ours, but already dead (revoked, or a replaced secret whose grace
    /// period ended): nothing to do.
    AlreadyDead,
    NotOurs,
}

/// Acts on every reported token and returns one verdict each, in order.
pub async fn handle_reports(
    state: &AppState,
    meta: &RequestMeta,
    reports: Vec<Reported>,
) -> Result<Vec<Verdict>, StoreError> {
    let mut verdicts = Vec::with_capacity(reports.len());
    let (mut revoked, mut dead, mut not_ours) = (0usize, 0usize, 0usize);
    for report in reports {
        let outcome = handle_one(state, meta, &report).await?;
        match outcome {
            Outcome::Revoked => revoked += 1,
            Outcome::AlreadyDead => dead += 1,
            Outcome::NotOurs => not_ours += 1,
        }
        verdicts.push(Verdict {
            token_hash: reported_hash(&report.token),
            token_type: report.token_type,
            label: if outcome == Outcome::NotOurs {
                Label::FalsePositive
            } else {
                Label::TruePositive
            },
            url: report.url,
        });
    }
    tracing::info!(
        revoked,
        already_dead = dead,
        false_positives = not_ours,
        "secret scanning report handled"
    );
    Ok(verdicts)
}

async fn handle_one(
    state: &AppState,
    meta: &RequestMeta,
    report: &Reported,
) -> Result<Outcome, StoreError> {
    // Not shaped like our tokens (prefix, length, checksum): not ours.
    let Ok(digest) = PlainToken::digest_of_presented(&state.config.token_prefix, &report.token)
    else {
        return Ok(Outcome::NotOurs);
    };
    if let Some(token) = tokens::find_by_digest(&state.db, &digest).await? {
        return revoke_leaked(state, meta, report, &token).await;
    }
    // A secret the token had before it was regenerated: while its grace
    // period lasts it still opens the token, so the token goes.
    if let Some(replaced) = rotation::find_replaced(&state.db, &digest).await? {
        let Some(token) = tokens::find_by_id(&state.db, replaced.token_id).await? else {
            return Ok(Outcome::NotOurs);
        };
        if replaced.grace_until > state.clock.unix() {
            return revoke_leaked(state, meta, report, &token).await;
        }
        return Ok(Outcome::AlreadyDead);
    }
    Ok(Outcome::NotOurs)
}

async fn revoke_leaked(
    state: &AppState,
    meta: &RequestMeta,
    report: &Reported,
    token: &TokenRecord,
) -> Result<Outcome, StoreError> {
    if token.revoked_at.is_some() {
        return Ok(Outcome::AlreadyDead);
    }
    let owner_email = orgs::user_email(&state.db, token.user_id).await?;
    let ip = meta.ip_string();
    let actor = Actor {
        user_id: None,
        token_id: None,
        ip: Some(&ip),
        user_agent: meta.user_agent.as_deref(),
    };
    let now = state.clock.unix();
    let mut tx = state.db.begin().await?;
    let done = tokens::revoke(
        &mut tx,
        token.organization_id,
        token.id,
        RevokeReason::Leaked,
        &actor,
        now,
    )
    .await?;
    if !done {
        // Revoked meanwhile by someone else.
        tx.rollback().await?;
        return Ok(Outcome::AlreadyDead);
    }
    if let Some(email) = owner_email {
        let mail = Mail::TokenLeaked {
            token_id: token.id,
            at: now,
            url: report.url.clone(),
            source: report.source.clone(),
            reporter: REPORTER.to_string(),
        };
        mail::enqueue(&mut tx, &email, &mail, now).await?;
    }
    commit_and_invalidate(tx, &state.verifier, &[Invalidation::Token(token.id)]).await?;
    state.mail.wake();
    tracing::warn!(token_id = token.id, "token reported as leaked: revoked");
    Ok(Outcome::Revoked)
}

/// The `token_hash` of the answer: hex SHA-256 of the token as reported.
pub fn reported_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_and_refuse_bad_shapes_without_echoing_values() {
        let ok = parse_reports(
            br#"[{"token":"ks_x","type":"keysmith_token","url":"https://github.com/a/b","source":"content"}]"#,
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert!(!format!("{ok:?}").contains("ks_x"));
        assert!(parse_reports(b"[]").unwrap().is_empty());

        let secret = "ks_SECRETSECRET";
        for bad in [
            format!(r#"{{"token":"{secret}"}}"#),
            format!(r#"[{{"token":["{secret}"]}}]"#),
            format!(r#"[{{"token":"{secret}","type":7}}]"#),
            format!(r#"[{{"token":"{secret}""#),
            r#"[{"type":"x"}]"#.to_string(),
            r#"[{"token":""}]"#.to_string(),
            "not json".to_string(),
        ] {
            let e = parse_reports(bad.as_bytes()).unwrap_err().to_string();
            assert!(!e.contains("SECRET"), "{bad}: {e}");
        }
        let e = parse_reports(br#"[{"type":"x"}]"#).unwrap_err().to_string();
        assert!(e.contains("missing field `token`"), "{e}");
    }

    #[test]
    fn key_documents_need_a_p256_key() {
        assert!(matches!(
            parse_key_document(br#"{"public_keys": []}"#),
            Err(KeyDocumentError::NoKeys)
        ));
        assert!(matches!(
            parse_key_document(
                br#"{"public_keys": [{"key_identifier": "a", "key": "nope", "is_current": true}]}"#
            ),
            Err(KeyDocumentError::NoKeys)
        ));
        assert!(matches!(
            parse_key_document(br#"[]"#),
            Err(KeyDocumentError::Shape(_))
        ));
    }

    #[test]
    fn key_identifiers_are_short_printable_ascii() {
        assert!(is_key_identifier(
            "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"
        ));
        assert!(!is_key_identifier(""));
        assert!(!is_key_identifier("a b"));
        assert!(!is_key_identifier(&"a".repeat(257)));
    }
}

//! `POST /oauth/introspect` (RFC 7662): a resource server asks whether a
//! token is active. Clients authenticate with HTTP Basic using the
//! `client_id:secret` pairs of `KEYSMITH_INTROSPECTION_CREDENTIALS`, read
//! both form-urlencoded (RFC 6749 §2.3.1) and raw, compared in constant
//! time. Anything not active — unknown, malformed,
//! expired, revoked, disabled — answers exactly `{"active":false}`.
//!
//! Introspection neither counts against a token's rate limit nor records a
//! last use: the resource server's own request is not a use of the token
//! that Keysmith can describe (no method or path).

use axum::Form;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::bearer;
use crate::app::AppState;
use crate::config::IntrospectionClient;
use crate::request::ClientIp;
use crate::token::PlainToken;
use crate::verify::{Unavailable, Use, Verdict};

/// The form a resource server posts.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = IntrospectionRequest)]
pub struct IntrospectForm {
    /// The token to check.
    #[schema(min_length = 1)]
    token: Option<String>,
    /// Accepted and ignored: there is one kind of token.
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// The client credentials of an `Authorization: Basic` header as they
/// arrived: the bytes before and after the first colon of the decoded
/// base64. No `Debug`: the secret must not reach a log.
struct BasicCredentials {
    id: Vec<u8>,
    secret: Vec<u8>,
}

impl BasicCredentials {
    /// One `Authorization: Basic` header, or nothing usable.
    fn from_headers(headers: &HeaderMap) -> Option<BasicCredentials> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return None;
        };
        let (scheme, encoded) = value.to_str().ok()?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        // The first colon: neither a configured id nor an encoded one
        // (`%3A`) contains one, while a raw secret may.
        let colon = decoded.iter().position(|&b| b == b':')?;
        Some(BasicCredentials {
            id: decoded[..colon].to_vec(),
            secret: decoded[colon + 1..].to_vec(),
        })
    }

    /// The (id, secret) pairs the client may have meant, each tried:
    /// - form-urlencoded, as RFC 6749 §2.3.1 requires and openid-client
    ///   and @badgateway/oauth2-client send (`introspect%2Dsecret`);
    /// - raw, as curl `-u`, most gateways and Authlib send;
    /// - raw in ISO-8859-1, which Authlib uses to turn the text into bytes
    ///   (RFC 7617 §2.1: Basic's charset was long unspecified), so an `é`
    ///   arrives as one byte 0xE9 where the configured secret holds UTF-8.
    fn readings(&self) -> [(Vec<u8>, Vec<u8>); 3] {
        [
            (form_urldecode(&self.id), form_urldecode(&self.secret)),
            (self.id.clone(), self.secret.clone()),
            (latin1_to_utf8(&self.id), latin1_to_utf8(&self.secret)),
        ]
    }
}

/// `application/x-www-form-urlencoded` decoding of one value (the WHATWG
/// URL standard's parser without the `&`/`=` splitting): `+` is a space,
/// `%XX` a byte, and a `%` not followed by two hex digits stays itself.
fn form_urldecode(input: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let byte = match input[i] {
            b'+' => b' ',
            b'%' => match (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => {
                    i += 2;
                    high << 4 | low
                }
                _ => b'%',
            },
            other => other,
        };
        out.push(byte);
        i += 1;
    }
    out
}

/// The UTF-8 of bytes read as ISO-8859-1 (each byte is the code point of
/// the same number).
fn latin1_to_utf8(input: &[u8]) -> Vec<u8> {
    input
        .iter()
        .map(|&b| char::from(b))
        .collect::<String>()
        .into_bytes()
}

/// Whether the request's Basic credentials name a configured client.
/// Every reading is compared with every client, in constant time, whatever
/// matches: the time taken says nothing about which client or reading.
fn client_is_known(headers: &HeaderMap, clients: &[IntrospectionClient]) -> bool {
    let Some(credentials) = BasicCredentials::from_headers(headers) else {
        return false;
    };
    // Hashing first makes the comparison independent of the lengths too.
    let readings = credentials
        .readings()
        .map(|(id, secret)| (Sha256::digest(id), Sha256::digest(secret)));
    let mut known = subtle::Choice::from(0);
    for client in clients {
        let id = Sha256::digest(client.client_id.as_bytes());
        let secret = Sha256::digest(client.secret().as_bytes());
        for (presented_id, presented_secret) in &readings {
            known |= id.ct_eq(presented_id) & secret.ct_eq(presented_secret);
        }
    }
    known.into()
}

/// RFC 7662's answer. An inactive token gets exactly `{"active": false}`:
/// every other member is left out.
#[derive(Debug, Default, Serialize, ToSchema)]
#[schema(as = Introspection)]
pub struct Introspection<'a> {
    pub active: bool,
    /// The token's effective scopes, space separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scope: Option<&'a str>,
    /// The owner's user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub sub: Option<String>,
    /// The owner's email address.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub username: Option<&'a str>,
    /// The owner's display name; left out when the users table holds none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub name: Option<&'a str>,
    /// When the token was created (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub iat: Option<i64>,
    /// When it expires (Unix seconds); left out when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub exp: Option<i64>,
    /// Always `Bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub token_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub token_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub organization_id: Option<i64>,
    /// The organization's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub organization: Option<&'a str>,
    /// The names of the projects the token is restricted to (empty: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub projects: Option<Vec<&'a str>>,
}

/// The JSON body of an introspection refusal (RFC 6749 §5.2 style).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = IntrospectionError)]
pub struct IntrospectionError<'a> {
    /// `invalid_client`, `invalid_request` or `temporarily_unavailable`.
    pub error: &'a str,
    pub error_description: &'a str,
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut r = (
        status,
        Json(IntrospectionError {
            error: code,
            error_description: description,
        }),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn answer(body: Introspection<'_>) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[utoipa::path(
    post,
    path = "/oauth/introspect",
    operation_id = "introspect",
    tag = "bearer",
    summary = "RFC 7662 token introspection, for resource servers",
    request_body(content = IntrospectForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Whether the token is active, and if so whose it is and what it may do.", body = Introspection),
        (status = 400, description = "`invalid_request`: no `token` field in a form body.", body = IntrospectionError),
        (status = 401, description = "`invalid_client`: no HTTP Basic credentials of a configured client.", body = IntrospectionError, headers(("www-authenticate" = String))),
        (status = 503, description = "The token store is not answering.", body = IntrospectionError),
    ),
    security(("introspection_client" = [])),
)]
#[tracing::instrument(name = "introspect", skip_all)]
pub async fn introspect(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<IntrospectForm>, FormRejection>,
) -> Response {
    if !client_is_known(&headers, &state.config.introspection_clients) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Introspection needs HTTP Basic credentials of a configured client.",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"keysmith\""),
        );
        return r;
    }
    let token = match form {
        Ok(Form(IntrospectForm {
            token: Some(token), ..
        })) if !token.trim().is_empty() => token,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Send the token as a form field: token=…",
            );
        }
    };
    let Ok(digest) = PlainToken::digest_of_presented(&state.config.token_prefix, token.trim())
    else {
        crate::metrics::verification(crate::metrics::Outcome::Unknown);
        return answer(Introspection::default());
    };
    let verdict = state.verifier.verify_digest(digest).await;
    crate::metrics::verification(crate::metrics::introspected(
        &verdict,
        &state.verifier,
        &digest,
    ));
    let info = match verdict {
        Ok(Verdict::Active(info)) => info,
        Ok(Verdict::Inactive) => return answer(Introspection::default()),
        Ok(Verdict::Replaced(token_id)) => {
            // A resource server was handed a replaced secret: the owner
            // hears of it (where from is the resource server's address).
            bearer::report_replaced(
                &state,
                token_id,
                &headers,
                Use {
                    method: "POST",
                    path: "/oauth/introspect",
                    ip,
                    user_agent: None,
                },
            );
            return answer(Introspection::default());
        }
        Err(Unavailable) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "The token store is not answering; try again shortly.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            return r;
        }
    };
    answer(Introspection {
        active: true,
        scope: Some(info.scopes_str()),
        sub: Some(info.user_id.to_string()),
        username: Some(info.email()),
        // Only where the users table holds one, like `exp`.
        name: info.display_name(),
        iat: Some(info.created_at),
        exp: info.expires_at,
        token_type: Some("Bearer"),
        token_id: Some(info.token_id),
        label: Some(info.label()),
        organization_id: Some(info.organization_id),
        organization: Some(info.organization_name()),
        projects: Some(info.projects.iter().map(|p| &*p.name).collect()),
    })
}

/// `GET` (or any method but POST) on the introspection endpoint.
pub async fn method_not_allowed() -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "Introspection takes a POST with a form body.",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> Vec<IntrospectionClient> {
        let mut vars = std::collections::HashMap::new();
        vars.insert("KEYSMITH_CONFIG".to_string(), "/dev/null".to_string());
        vars.insert(
            "KEYSMITH_INTROSPECTION_CREDENTIALS".to_string(),
            "gw:0123456789abcdef,api:fedcba9876543210".to_string(),
        );
        crate::config::Config::from_vars(&vars)
            .unwrap()
            .introspection_clients
    }

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        );
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    /// `application/x-www-form-urlencoded` as openid-client 6 writes it:
    /// everything but ASCII letters and digits escaped, a space as `+`.
    fn form_urlencode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b' ' => "+".to_string(),
                b if b.is_ascii_alphanumeric() => char::from(b).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect()
    }

    /// A Basic header over arbitrary bytes (Authlib's ISO-8859-1, say).
    fn basic_bytes(user_pass: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        );
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    const SPECIAL_ID: &str = "intro-client";
    /// Every character RFC 6749's encoding changes, a colon, a comma-free
    /// (the configuration splits entries on commas) and a valid `%ec`
    /// escape, so the raw and the decoded readings differ.
    const SPECIAL_SECRET: &str = "in-tro:sp%ect+se cret&=é/ü";

    fn special_clients() -> Vec<IntrospectionClient> {
        let mut vars = std::collections::HashMap::new();
        vars.insert("KEYSMITH_CONFIG".to_string(), "/dev/null".to_string());
        vars.insert(
            "KEYSMITH_INTROSPECTION_CREDENTIALS".to_string(),
            format!("gw:0123456789abcdef,{SPECIAL_ID}:{SPECIAL_SECRET}"),
        );
        crate::config::Config::from_vars(&vars)
            .unwrap()
            .introspection_clients
    }

    #[test]
    fn form_urlencoded_credentials_are_accepted() {
        let c = clients();
        // What openid-client sends for `introspect-secret`-style values.
        assert!(client_is_known(&basic("gw:0123456789abcdef"), &c));
        let every_byte_escaped: String = "0123456789abcdef"
            .bytes()
            .map(|b| format!("%{b:02x}"))
            .collect();
        assert!(client_is_known(
            &basic(&format!("%67%77:{every_byte_escaped}")),
            &c
        ));
        assert!(!client_is_known(
            &basic(&format!("%67%77:{every_byte_escaped}%30")),
            &c
        ));
    }

    #[test]
    fn a_secret_full_of_special_characters_is_accepted_encoded_and_raw() {
        let c = special_clients();
        let raw = format!("{SPECIAL_ID}:{SPECIAL_SECRET}");
        let encoded = format!(
            "{}:{}",
            form_urlencode(SPECIAL_ID),
            form_urlencode(SPECIAL_SECRET)
        );
        // The colon inside the secret is `%3A` once encoded.
        assert!(encoded.starts_with("intro%2Dclient:in%2Dtro%3Asp%25ect%2Bse+cret%26%3D%C3%A9"));
        assert!(client_is_known(&basic(&encoded), &c));
        assert!(client_is_known(&basic(&encoded.replace('+', "%20")), &c));
        assert!(client_is_known(&basic(&raw), &c));
        // Authlib: the raw text as ISO-8859-1 bytes (é = 0xE9).
        let latin1: Vec<u8> = raw.chars().map(|ch| u8::try_from(ch).unwrap()).collect();
        assert!(client_is_known(&basic_bytes(&latin1), &c));
        // The other client still works beside it.
        assert!(client_is_known(&basic("gw:0123456789abcdef"), &c));
    }

    #[test]
    fn wrong_special_credentials_are_refused() {
        let c = special_clients();
        let encoded_secret = form_urlencode(SPECIAL_SECRET);
        for attempt in [
            // `%ec` read as the character it would escape: it is text here.
            format!("{SPECIAL_ID}:{}", SPECIAL_SECRET.replace("%ec", "\u{ec}")),
            // Encoded twice.
            format!("{SPECIAL_ID}:{}", form_urlencode(&encoded_secret)),
            // One character short, raw and encoded.
            format!(
                "{SPECIAL_ID}:{}",
                &SPECIAL_SECRET[..SPECIAL_SECRET.len() - 2]
            ),
            format!(
                "{SPECIAL_ID}:{}",
                &encoded_secret[..encoded_secret.len() - 3]
            ),
            // `+` is a space only once encoded: a raw secret with a space
            // where the `+` was is wrong.
            format!("{SPECIAL_ID}:{}", SPECIAL_SECRET.replace('+', " ")),
            // The right secret under another client's id, and the reverse.
            format!("gw:{encoded_secret}"),
            format!("{SPECIAL_ID}:0123456789abcdef"),
            // Split at the secret's colon instead of the separator.
            format!("{SPECIAL_ID}%3Ain-tro:sp%25ect%2Bse+cret%26%3D%C3%A9%2F%C3%BC"),
        ] {
            assert!(!client_is_known(&basic(&attempt), &c), "{attempt}");
        }
    }

    #[test]
    fn form_urldecode_follows_the_form_urlencoded_rules() {
        let d = |s: &str| form_urldecode(s.as_bytes());
        assert_eq!(d("a+b%20c"), b"a b c");
        assert_eq!(d("%2B%3a%25"), b"+:%");
        assert_eq!(d("%C3%A9"), "é".as_bytes());
        // A `%` without two hex digits is kept as it is.
        assert_eq!(d("100%"), b"100%");
        assert_eq!(d("%4"), b"%4");
        assert_eq!(d("%zz%4g"), b"%zz%4g");
        // Bytes that are not UTF-8 survive: the comparison is of bytes.
        assert_eq!(d("%FF%00"), [0xFF, 0x00]);
        assert_eq!(d(""), b"");
    }

    #[test]
    fn latin1_bytes_become_their_code_points() {
        assert_eq!(latin1_to_utf8(b"abc"), b"abc");
        assert_eq!(latin1_to_utf8(&[0xE9, b'x', 0xFC]), "éxü".as_bytes());
    }

    #[test]
    fn only_a_configured_pair_is_accepted() {
        let c = clients();
        assert!(client_is_known(&basic("gw:0123456789abcdef"), &c));
        assert!(client_is_known(&basic("api:fedcba9876543210"), &c));
        assert!(!client_is_known(&basic("gw:fedcba9876543210"), &c));
        assert!(!client_is_known(&basic("gw:0123456789abcde"), &c));
        assert!(!client_is_known(&basic("gw"), &c));
        assert!(!client_is_known(&HeaderMap::new(), &c));
        assert!(!client_is_known(&basic("gw:0123456789abcdef"), &[]));
    }
}

//! Reading `Authorization: Bearer …`, checking the token with the verifier,
//! and the RFC 6750 error responses every bearer route shares.
//!
//! Every dead token — malformed, unknown, expired, revoked, disabled, its
//! owner disabled or without the permission — gets the same 401
//! `invalid_token` with the same description, so a caller without a valid
//! token learns nothing about which tokens exist. A token in the query
//! string (`?access_token=`) is never read: it counts as no credentials.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::service::rotation::Sighting;
use crate::token::{PlainToken, TokenDigest};
use crate::verify::rate_limit::{RateDecision, RequestClass};
use crate::verify::{TokenInfo, Unavailable, Use, Verdict};

/// The protection space named in every `WWW-Authenticate` challenge.
pub const REALM: &str = "keysmith";

const INVALID_TOKEN_DESCRIPTION: &str =
    "The access token is invalid, expired, revoked or not allowed to be used.";

/// The JSON body of every bearer refusal (RFC 6750's error codes, plus
/// `unauthorized`, `rate_limited` and `temporarily_unavailable`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = BearerError)]
pub struct BearerErrorBody {
    /// `unauthorized` (no token), `invalid_request`, `invalid_token`,
    /// `insufficient_scope`, `rate_limited` or `temporarily_unavailable`.
    pub error: std::borrow::Cow<'static, str>,
    /// What happened, for a person to read.
    pub error_description: String,
    /// For `insufficient_scope`: the scopes the request needs (empty for a
    /// project refusal).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scope: Option<String>,
}

impl BearerErrorBody {
    fn new(error: &'static str, description: impl Into<String>) -> BearerErrorBody {
        BearerErrorBody {
            error: error.into(),
            error_description: description.into(),
            scope: None,
        }
    }
}

/// Why a bearer request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerError {
    /// No bearer credentials at all: 401 with a bare challenge.
    Missing,
    /// The request itself is malformed: 400 `invalid_request`.
    InvalidRequest(&'static str),
    /// 401 `invalid_token`, whatever the reason.
    InvalidToken,
    /// 403 `insufficient_scope`: the token is good but may not do this.
    /// `scope` names what would be needed (empty for a project refusal).
    InsufficientScope {
        scope: String,
        description: &'static str,
    },
    /// 429, or the status the caller maps it to.
    RateLimited(RateDecision),
    /// 503: the token store cannot be asked.
    Unavailable,
}

/// Finds the bearer token among the headers. `Ok(None)` means the request
/// carries no bearer credentials (another scheme counts as none).
pub fn bearer_credentials(headers: &HeaderMap) -> Result<Option<&str>, BearerError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BearerError::InvalidRequest(
            "The request has more than one Authorization header.",
        ));
    }
    let Ok(value) = value.to_str() else {
        return Err(BearerError::InvalidToken);
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(BearerError::InvalidRequest(
            "The Authorization header says Bearer but carries no token.",
        ));
    }
    if token.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(BearerError::InvalidToken);
    }
    Ok(Some(token))
}

/// Checks the request's bearer token: the token's facts when it may be
/// used now, the refusal otherwise. `used` says where the request came
/// from and what it was for, told to the owner if the token is a replaced
/// secret past its grace period.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    used: Use<'_>,
) -> Result<Arc<TokenInfo>, BearerError> {
    authenticate_with_digest(state, headers, used)
        .await
        .map(|(info, _)| info)
}

/// [`authenticate`], also giving the digest of the presented secret.
pub async fn authenticate_with_digest(
    state: &AppState,
    headers: &HeaderMap,
    used: Use<'_>,
) -> Result<(Arc<TokenInfo>, TokenDigest), BearerError> {
    let raw = bearer_credentials(headers)?.ok_or(BearerError::Missing)?;
    // The shape and checksum are checked before any lookup.
    let digest = PlainToken::digest_of_presented(&state.config.token_prefix, raw)
        .map_err(|_| BearerError::InvalidToken)
        .inspect_err(|_| crate::metrics::verification(crate::metrics::Outcome::Unknown))?;
    match state.verifier.verify_digest(digest).await {
        Ok(Verdict::Active(info)) => Ok((info, digest)),
        Ok(Verdict::Inactive) => Err(BearerError::InvalidToken)
            .inspect_err(|_| crate::metrics::verification(state.verifier.refusal_reason(&digest))),
        Ok(Verdict::Replaced(token_id)) => {
            crate::metrics::verification(crate::metrics::Outcome::Replaced);
            report_replaced(state, token_id, headers, used);
            Err(BearerError::InvalidToken)
        }
        Err(Unavailable) => Err(BearerError::Unavailable)
            .inspect_err(|_| crate::metrics::verification(crate::metrics::Outcome::Unavailable)),
    }
}

/// The request's `User-Agent`, when it is readable text.
pub fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

/// Tells the owner (in the background, at most once an hour) that a
/// replaced secret of their token was presented; the caller refuses the
/// request the same way as for any dead token.
pub fn report_replaced(state: &AppState, token_id: i64, headers: &HeaderMap, used: Use<'_>) {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(512).collect());
    crate::service::rotation::spawn_reuse_report(
        state,
        token_id,
        Sighting {
            ip: used.ip.to_string(),
            method: used.method.chars().take(16).collect(),
            path: used.path.chars().take(512).collect(),
            user_agent,
        },
    );
}

/// Counts the request against the token's budget for its method (for
/// forward auth, the original request's) and, when it is allowed, records
/// it as the token's latest use.
pub async fn admit(
    state: &AppState,
    info: &TokenInfo,
    used: Use<'_>,
) -> Result<RateDecision, BearerError> {
    let decision = state.verifier.admit(info, used).await;
    crate::metrics::admitted(&decision);
    if decision.allowed {
        Ok(decision)
    } else {
        Err(BearerError::RateLimited(decision))
    }
}

/// `Keysmith-Token-Expires`: when the presented secret stops working
/// (RFC 3339, UTC), on every verified answer for a token that expires, so a
/// script can warn before it does. For a replaced secret in its grace
/// period that is the end of the grace period, if sooner.
pub const TOKEN_EXPIRES: HeaderName = HeaderName::from_static("keysmith-token-expires");

/// The `Keysmith-Token-Expires` header for `info`; `None` for a token that
/// does not expire.
pub fn expires_header(info: &TokenInfo) -> Option<(HeaderName, HeaderValue)> {
    let text = crate::store::from_unix(info.expires_at?)
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    Some((TOKEN_EXPIRES, HeaderValue::try_from(text).ok()?))
}

/// Requires every space-separated scope in `required`.
pub fn require_scopes(info: &TokenInfo, required: &str) -> Result<(), BearerError> {
    let missing: Vec<&str> = required
        .split_ascii_whitespace()
        .filter(|s| !info.scopes().contains(s))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        crate::metrics::verification(crate::metrics::Outcome::InsufficientScope);
        Err(BearerError::InsufficientScope {
            scope: required
                .split_ascii_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            description: "The access token does not have the scope this request needs.",
        })
    }
}

/// The `RateLimit-Policy` and `RateLimit` fields (IETF httpapi
/// ratelimit-headers draft) describing `d`.
pub fn rate_limit_headers(d: &RateDecision) -> [(HeaderName, HeaderValue); 2] {
    [
        (RATELIMIT_POLICY, policy_value(d.class, d.limit)),
        (RATELIMIT, current_value(d)),
    ]
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn policy_value(class: RequestClass, limit: u32) -> HeaderValue {
    let window = crate::verify::rate_limit::WINDOW_SECS;
    structured_item(class.policy_name(), [("q", limit.into()), ("w", window)])
}

fn current_value(d: &RateDecision) -> HeaderValue {
    let remaining = d.remaining.into();
    structured_item(
        d.class.policy_name(),
        [("r", remaining), ("t", d.reset_secs)],
    )
}

/// `"name";k1=v1;k2=v2`: a structured-field item with two integer
/// parameters, written on the stack by hand (no `fmt` machinery; the one
/// allocation is the header value's): every bearer response carries two.
fn structured_item(name: &str, params: [(&str, i64); 2]) -> HeaderValue {
    let mut buf = [0u8; 64];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        // Fixed names and two integers of at most 20 digits fit; anything
        // longer would be cut, never overrun.
        let end = (len + bytes.len()).min(buf.len());
        buf[len..end].copy_from_slice(&bytes[..end - len]);
        len = end;
    };
    put(b"\"");
    put(name.as_bytes());
    put(b"\"");
    let mut digits = itoa::Buffer::new();
    for (key, value) in params {
        put(b";");
        put(key.as_bytes());
        put(b"=");
        put(digits.format(value).as_bytes());
    }
    HeaderValue::from_bytes(&buf[..len])
        .expect("a fixed name and integers are a valid header value")
}

/// A `Bearer` challenge with the given parameters (values must not contain
/// quotes or backslashes; ours are fixed strings and scope names).
fn challenge(params: &[(&str, &str)]) -> HeaderValue {
    let mut v = format!("Bearer realm=\"{REALM}\"");
    for (k, val) in params {
        v.push_str(&format!(", {k}=\"{val}\""));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

impl BearerError {
    /// The response, with `rate_limited_status` used for a rate-limited
    /// request (429, or 403 for nginx `auth_request`).
    pub fn into_response_with(self, rate_limited_status: StatusCode) -> Response {
        let (status, body, www) = match &self {
            BearerError::Missing => (
                StatusCode::UNAUTHORIZED,
                BearerErrorBody::new(
                    "unauthorized",
                    "This endpoint needs an Authorization: Bearer <token> header.",
                ),
                Some(challenge(&[])),
            ),
            BearerError::InvalidRequest(description) => (
                StatusCode::BAD_REQUEST,
                BearerErrorBody::new("invalid_request", *description),
                Some(challenge(&[
                    ("error", "invalid_request"),
                    ("error_description", description),
                ])),
            ),
            BearerError::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                BearerErrorBody::new("invalid_token", INVALID_TOKEN_DESCRIPTION),
                Some(challenge(&[
                    ("error", "invalid_token"),
                    ("error_description", INVALID_TOKEN_DESCRIPTION),
                ])),
            ),
            BearerError::InsufficientScope { scope, description } => {
                let mut params = vec![
                    ("error", "insufficient_scope"),
                    ("error_description", *description),
                ];
                if !scope.is_empty() {
                    params.push(("scope", scope.as_str()));
                }
                (
                    StatusCode::FORBIDDEN,
                    BearerErrorBody {
                        scope: Some(scope.clone()),
                        ..BearerErrorBody::new("insufficient_scope", *description)
                    },
                    Some(challenge(&params)),
                )
            }
            BearerError::RateLimited(d) => (
                rate_limited_status,
                BearerErrorBody::new(
                    "rate_limited",
                    format!(
                        "This token made too many {} this minute; try again in {} seconds.",
                        d.class.policy_name(),
                        d.reset_secs
                    ),
                ),
                None,
            ),
            BearerError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                BearerErrorBody::new(
                    "temporarily_unavailable",
                    "The token store is not answering; try again shortly.",
                ),
                None,
            ),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(www) = www {
            headers.insert(header::WWW_AUTHENTICATE, www);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            BearerError::RateLimited(d) => {
                headers.extend(rate_limit_headers(d));
                // Never earlier than the end of the window (`t`).
                headers.insert(header::RETRY_AFTER, HeaderValue::from(d.reset_secs));
            }
            BearerError::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            _ => {}
        }
        response
    }
}

impl IntoResponse for BearerError {
    fn into_response(self) -> Response {
        self.into_response_with(StatusCode::TOO_MANY_REQUESTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER   abc", "  Bearer abc  "] {
            assert_eq!(bearer_credentials(&headers(&[v])), Ok(Some("abc")), "{v}");
        }
    }

    #[test]
    fn no_header_or_another_scheme_is_no_credentials() {
        assert_eq!(bearer_credentials(&headers(&[])), Ok(None));
        assert_eq!(
            bearer_credentials(&headers(&["Basic Zm9vOmJhcg=="])),
            Ok(None)
        );
        assert_eq!(bearer_credentials(&headers(&["Bearerabc"])), Ok(None));
    }

    #[test]
    fn empty_bearer_and_two_headers_are_bad_requests() {
        for h in [
            headers(&["Bearer"]),
            headers(&["Bearer   "]),
            headers(&["Bearer a", "Bearer b"]),
        ] {
            assert!(matches!(
                bearer_credentials(&h),
                Err(BearerError::InvalidRequest(_))
            ));
        }
    }

    #[test]
    fn rate_limit_fields_follow_the_draft() {
        let d = RateDecision {
            class: RequestClass::Write,
            allowed: true,
            limit: 60,
            remaining: 0,
            reset_secs: 42,
        };
        let [(policy_name, policy), (current_name, current)] = rate_limit_headers(&d);
        assert_eq!(
            (policy_name.as_str(), policy.to_str().unwrap()),
            ("ratelimit-policy", "\"writes\";q=60;w=60")
        );
        assert_eq!(
            (current_name.as_str(), current.to_str().unwrap()),
            ("ratelimit", "\"writes\";r=0;t=42")
        );
        let d = RateDecision {
            class: RequestClass::Read,
            limit: 4_000_000_000,
            remaining: 3_999_999_999,
            reset_secs: 1,
            ..d
        };
        let [(_, policy), (_, current)] = rate_limit_headers(&d);
        assert_eq!(policy.to_str().unwrap(), "\"reads\";q=4000000000;w=60");
        assert_eq!(current.to_str().unwrap(), "\"reads\";r=3999999999;t=1");
    }

    #[test]
    fn a_token_with_spaces_inside_is_invalid() {
        assert_eq!(
            bearer_credentials(&headers(&["Bearer abc def"])),
            Err(BearerError::InvalidToken)
        );
    }
}

//! The bearer side: `GET /api/v2/whoami`, `/auth/verify`, `POST
//! /oauth/introspect`, and what they share — RFC 6750 errors, rate limits,
//! last use, instant revocation (on one instance and across two), and rate
//! limits shared by three instances.

mod cluster;
mod forged;
mod introspect;
mod last_used;
mod oauth_clients;
mod rate_limits;
mod revocation;
mod token_ips;
mod two_instances;
mod verify;
mod whoami;

use keysmith::domain::{EmailAddress, OrgName, TokenLabel};
use keysmith::store::invalidation::Invalidation;
use keysmith::store::{orgs, tokens};
use keysmith::token::PlainToken;
use keysmith::verify::commit_and_invalidate;

use std::time::{Duration, Instant};

use crate::harness::TestApp;

/// Runs each listed `async fn name()` on PostgreSQL only (as
/// `postgres_only::name`), ignored (with the
/// reason) where no PostgreSQL is configured.
#[macro_export]
macro_rules! postgres_only_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres_only {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(skip_postgres_tests, ignore = "PostgreSQL test skipped: set KEYSMITH_TEST_POSTGRES_URL (CI sets it)")]
                async fn $name() {
                    super::$name().await
                }
            )*
        }
    };
}

/// An organization with its superuser (the bootstrap user).
pub struct Org {
    pub id: i64,
    pub owner: i64,
}

pub async fn org(app: &TestApp) -> Org {
    let b = orgs::bootstrap(
        app.db(),
        &OrgName::parse("Acme").unwrap(),
        &EmailAddress::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap();
    Org {
        id: b.organization.id,
        owner: b.user.id,
    }
}

/// Adds a plain member who may manage tokens.
pub async fn member(app: &TestApp, org: &Org, email: &str) -> i64 {
    let mut tx = app.db().begin().await.unwrap();
    let user = orgs::add_member(
        &mut tx,
        org.id,
        &EmailAddress::parse(email).unwrap(),
        orgs::Role::Member,
        true,
        app.state.clock.unix(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    user.id
}

/// A stored token and its plaintext.
pub struct Minted {
    pub id: i64,
    pub token: String,
}

/// What a minted token gets; `Spec::default()` is a `write` token with no
/// expiry and no project restriction.
pub struct Spec<'a> {
    pub label: &'a str,
    pub scopes: &'a [&'a str],
    pub expires_at: Option<i64>,
    pub projects: &'a [i64],
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            label: "ci",
            scopes: &["write"],
            expires_at: None,
            projects: &[],
        }
    }
}

pub async fn mint(app: &TestApp, org_id: i64, user_id: i64, spec: Spec<'_>) -> Minted {
    let plain = PlainToken::generate(&app.state.config.token_prefix);
    let scopes = app
        .state
        .config
        .scopes
        .parse_set(spec.scopes.iter().copied())
        .unwrap();
    let mut tx = app.db().begin().await.unwrap();
    let id = tokens::create(
        &mut tx,
        &tokens::NewToken {
            user_id,
            organization_id: org_id,
            label: &TokenLabel::parse(spec.label).unwrap(),
            display_prefix: &plain.display_prefix(),
            digest: &plain.digest(),
            scopes: &scopes,
            expires_at: spec.expires_at,
            project_ids: spec.projects,
            created_ip: Some("192.0.2.7"),
            created_user_agent: Some("test-agent/1.0"),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    Minted {
        id,
        token: plain.expose_secret().to_string(),
    }
}

/// A token of the org's superuser with default settings.
pub async fn owner_token(app: &TestApp, org: &Org) -> Minted {
    mint(app, org.id, org.owner, Spec::default()).await
}

pub async fn project(app: &TestApp, org_id: i64, name: &str) -> i64 {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO projects (organization_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(org_id)
    .bind(name)
    .bind(app.state.clock.unix())
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    id
}

pub async fn whoami(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v2/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `/auth/verify` as a proxy calls it for an original request `method path`.
pub async fn verify(
    app: &TestApp,
    token: &str,
    query: &str,
    method: &str,
    path: &str,
) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/auth/verify{query}")))
        .bearer_auth(token)
        .header("X-Forwarded-Method", method)
        .header("X-Forwarded-Uri", path)
        .send()
        .await
        .unwrap()
}

/// Waits until the verifier trusts its cache: at once on SQLite, once the
/// invalidation listener is connected on PostgreSQL (connecting clears the cache).
pub async fn wait_until_listening(app: &TestApp) {
    let started = Instant::now();
    while !app.state.verifier.is_listening() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "listener never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts `r`'s `RateLimit` is `value` (like `"reads";r=599`) with the
/// `t` of a window the token just started: 60 on SQLite, where a window
/// starts with the token's first request; on PostgreSQL, where windows are
/// minute-aligned across instances, what is left of the minute.
pub fn assert_fresh_ratelimit(app: &TestApp, r: &reqwest::Response, value: &str) {
    let got = header(r, "ratelimit").expect("RateLimit header");
    let (head, t) = got.split_once(";t=").expect("RateLimit with t");
    assert_eq!(head, value, "{got}");
    let t: i64 = t.parse().expect("t in seconds");
    match app.db().backend() {
        keysmith::store::Backend::Sqlite => assert_eq!(t, 60, "{got}"),
        keysmith::store::Backend::Postgres => {
            let left = 60 - app.state.clock.unix_ms().rem_euclid(60_000) / 1000;
            assert!((left..=left + 1).contains(&t), "{got}, {left} s left");
        }
    }
}

pub fn www_authenticate(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// The actor of changes made by tests: the org's superuser.
fn actor(org: &Org) -> tokens::Actor<'static> {
    tokens::Actor {
        user_id: Some(org.owner),
        ..tokens::Actor::default()
    }
}

/// Revokes as the dashboard will: store call, then commit and invalidate.
pub async fn revoke(app: &TestApp, org: &Org, token_id: i64) {
    let mut tx = app.db().begin().await.unwrap();
    let done = tokens::revoke(
        &mut tx,
        org.id,
        token_id,
        tokens::RevokeReason::Owner,
        &actor(org),
        app.state.clock.unix(),
    )
    .await
    .unwrap();
    assert!(done);
    commit_and_invalidate(tx, &app.state.verifier, &[Invalidation::Token(token_id)])
        .await
        .unwrap();
}

pub async fn set_token_disabled(app: &TestApp, org: &Org, token_id: i64, disabled: bool) {
    let mut tx = app.db().begin().await.unwrap();
    assert!(
        tokens::set_disabled(
            &mut tx,
            org.id,
            token_id,
            disabled,
            tokens::Authority::Superuser,
            &actor(org),
            app.state.clock.unix()
        )
        .await
        .unwrap()
    );
    commit_and_invalidate(tx, &app.state.verifier, &[Invalidation::Token(token_id)])
        .await
        .unwrap();
}

pub async fn set_member_disabled(app: &TestApp, org: &Org, user_id: i64, disabled: bool) {
    let mut tx = app.db().begin().await.unwrap();
    assert!(
        orgs::set_member_disabled(&mut tx, org.id, user_id, disabled, app.state.clock.unix())
            .await
            .unwrap()
    );
    let what = Invalidation::Member {
        organization_id: org.id,
        user_id,
    };
    commit_and_invalidate(tx, &app.state.verifier, &[what])
        .await
        .unwrap();
}

pub async fn set_can_manage_tokens(app: &TestApp, org: &Org, user_id: i64, allowed: bool) {
    let mut tx = app.db().begin().await.unwrap();
    assert!(
        orgs::set_can_manage_tokens(&mut tx, org.id, user_id, allowed)
            .await
            .unwrap()
    );
    let what = Invalidation::Member {
        organization_id: org.id,
        user_id,
    };
    commit_and_invalidate(tx, &app.state.verifier, &[what])
        .await
        .unwrap();
}

/// Writes a scope catalogue to a temporary file for `KEYSMITH_CONFIG`:
/// read; comments ⊃ read; tickets:write ⊃ read, comments; tickets:assign ⊃ read.
pub fn ticket_scopes() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keysmith.toml");
    std::fs::write(
        &path,
        "[[scopes]]\nname = \"read\"\n\n\
         [[scopes]]\nname = \"comments\"\nincludes = [\"read\"]\n\n\
         [[scopes]]\nname = \"tickets:write\"\nincludes = [\"read\", \"comments\"]\n\n\
         [[scopes]]\nname = \"tickets:assign\"\nincludes = [\"read\"]\n",
    )
    .unwrap();
    let path = path.display().to_string();
    (dir, path)
}

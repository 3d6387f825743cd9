//! `/scim/v2/Users`: the organization's members. `userName` is unique in the
//! organization (the email when the provider never set one), `emails` holds
//! the address Keysmith signs the member in with, `active: false` disables
//! the member everywhere at once, DELETE removes the membership and revokes
//! its tokens, whose rows stay as tombstones.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};
use sqlx::AnyConnection;

use super::auth::ScimCaller;
use super::error::ScimError;
use super::patch::{self, Op};
use super::{
    QueryParams, USER_SCHEMA, as_bool, created, filter, json_body, list_response, respond,
};
use crate::app::AppState;
use crate::domain::EmailAddress;
use crate::request::RequestMeta;
use crate::store::invalidation::Invalidation;
use crate::store::orgs::{self, Role};
use crate::store::scim::{self as store, ScimUser, UserFields, UserMatch};
use crate::store::{AuditEvent, record_audit, team};
use crate::verify::commit_and_invalidate;

const MAX_USER_NAME: usize = 256;
const MAX_DISPLAY_NAME: usize = 200;
const MAX_EXTERNAL_ID: usize = 256;

/// What SCIM may set on a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserState {
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub email: String,
    pub active: bool,
}

impl From<&ScimUser> for UserState {
    fn from(u: &ScimUser) -> Self {
        UserState {
            user_name: u.user_name.clone(),
            external_id: u.external_id.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            active: u.active,
        }
    }
}

pub fn resource(state: &AppState, u: &ScimUser) -> Value {
    let mut r = json!({
        "schemas": [USER_SCHEMA],
        "id": u.user_id.to_string(),
        "userName": u.user_name,
        "active": u.active,
        "emails": [{"value": u.email}],
        "meta": {
            "resourceType": "User",
            "created": super::timestamp(u.created_at),
            "lastModified": super::timestamp(u.modified_at),
            "location": super::location(state, &format!("/Users/{}", u.user_id)),
        }
    });
    if let Some(x) = &u.external_id {
        r["externalId"] = json!(x);
    }
    if let Some(d) = &u.display_name {
        r["displayName"] = json!(d);
    }
    r
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad("invalidValue", detail)
}

fn string_of(name: &str, v: &Value, max: usize) -> Result<String, ScimError> {
    let Some(s) = v.as_str() else {
        return Err(invalid(format!("{name} must be a string.")));
    };
    let s = s.trim();
    if s.is_empty() {
        return Err(invalid(format!("{name} must not be empty.")));
    }
    if s.chars().count() > max {
        return Err(invalid(format!("{name} is longer than {max} characters.")));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{name} must not contain control characters."
        )));
    }
    Ok(s.to_string())
}

/// `null` clears an optional attribute.
fn optional_string(name: &str, v: &Value, max: usize) -> Result<Option<String>, ScimError> {
    if v.is_null() {
        Ok(None)
    } else {
        string_of(name, v, max).map(Some)
    }
}

fn email_of(raw: &str) -> Result<String, ScimError> {
    EmailAddress::parse(raw)
        .map(|e| e.as_str().to_string())
        .map_err(|e| invalid(format!("\"{raw}\" is not a usable email address: {}", e.0)))
}

/// The address out of an `emails` value: the primary one, else the first.
fn email_from_emails(v: &Value) -> Result<String, ScimError> {
    let list: Vec<&Value> = match v {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![v],
        _ => {
            return Err(invalid(
                "emails must be a list of {\"value\": \"address\"}.",
            ));
        }
    };
    let chosen = list
        .iter()
        .find(|e| e.get("primary").and_then(as_bool) == Some(true))
        .or_else(|| list.first())
        .ok_or_else(|| {
            invalid("emails is empty: Keysmith needs an address to sign the member in with.")
        })?;
    let Some(value) = chosen.get("value").and_then(Value::as_str) else {
        return Err(invalid("emails[].value must be a string."));
    };
    email_of(value.trim())
}

fn active_of(v: &Value) -> Result<bool, ScimError> {
    as_bool(v).ok_or_else(|| invalid("active must be true or false."))
}

/// Reads a full User body (POST, PUT). Unknown attributes are ignored;
/// `current` supplies the email when a PUT leaves it out.
fn read_user(
    body: &Map<String, Value>,
    current: Option<&UserState>,
) -> Result<UserState, ScimError> {
    let get = |name: &str| {
        body.iter()
            .find(|(k, _)| filter::attribute_name(k) == name)
            .map(|(_, v)| v)
    };
    let user_name = match get("username") {
        Some(v) => string_of("userName", v, MAX_USER_NAME)?,
        None => return Err(invalid("userName is required.")),
    };
    let external_id = match get("externalid") {
        Some(v) => optional_string("externalId", v, MAX_EXTERNAL_ID)?,
        None => None,
    };
    let display_name = match get("displayname") {
        Some(v) => optional_string("displayName", v, MAX_DISPLAY_NAME)?,
        None => None,
    };
    let active = match get("active") {
        Some(v) => active_of(v)?,
        None => true,
    };
    let email = match get("emails") {
        Some(v) if !v.is_null() => email_from_emails(v)?,
        _ => match (current, EmailAddress::parse(&user_name)) {
            (Some(c), _) => c.email.clone(),
            (None, Ok(e)) => e.as_str().to_string(),
            (None, Err(_)) => {
                return Err(invalid(
                    "emails is required when userName is not an email address: Keysmith signs members in by email.",
                ));
            }
        },
    };
    Ok(UserState {
        user_name,
        external_id,
        display_name,
        email,
        active,
    })
}

/// Applies one attribute (by lower-case name) of a PATCH to `s`.
fn patch_attribute(
    s: &mut UserState,
    op: Op,
    path: &str,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let name = filter::attribute_name(path);
    // `emails[type eq "work"].value`, `emails.value`: the member's one address.
    let name = match patch::split_value_path(&name) {
        Some(("emails", _, "value" | "")) => "emails.value".to_string(),
        Some(_) => {
            return Err(ScimError::bad(
                "invalidPath",
                format!(
                    "The path \"{path}\" is not supported: Keysmith takes filters only in emails[…].value."
                ),
            ));
        }
        None => name,
    };
    let fixed = |what: &str| {
        ScimError::bad(
            "mutability",
            format!("{what} cannot be removed; replace it instead."),
        )
    };
    match (name.as_str(), op, value) {
        ("username", Op::Remove, _) => return Err(fixed("userName")),
        ("username", _, Some(v)) => s.user_name = string_of("userName", v, MAX_USER_NAME)?,
        ("displayname", Op::Remove, _) => s.display_name = None,
        ("displayname", _, Some(v)) => {
            s.display_name = optional_string("displayName", v, MAX_DISPLAY_NAME)?
        }
        ("externalid", Op::Remove, _) => s.external_id = None,
        ("externalid", _, Some(v)) => {
            s.external_id = optional_string("externalId", v, MAX_EXTERNAL_ID)?
        }
        ("active", Op::Remove, _) => return Err(fixed("active")),
        ("active", _, Some(v)) => s.active = active_of(v)?,
        ("emails" | "emails.value", Op::Remove, _) => {
            return Err(fixed("emails (Keysmith signs members in by email)"));
        }
        ("emails", _, Some(v)) => s.email = email_from_emails(v)?,
        ("emails.value", _, Some(v)) => {
            let Some(raw) = v.as_str() else {
                return Err(invalid("emails value must be a string."));
            };
            s.email = email_of(raw.trim())?;
        }
        ("schemas" | "id" | "meta", _, _) => {}
        _ => {
            return Err(ScimError::bad(
                "invalidPath",
                format!(
                    "Keysmith does not store \"{path}\". Users have userName, displayName, externalId, active and emails."
                ),
            ));
        }
    }
    Ok(())
}

fn apply_patch(current: &UserState, ops: &[patch::Operation]) -> Result<UserState, ScimError> {
    let mut s = current.clone();
    for o in ops {
        match (&o.path, &o.value) {
            (Some(path), value) => patch_attribute(&mut s, o.op, path, value.as_ref())?,
            (None, Some(Value::Object(map))) => {
                for (k, v) in map {
                    patch_attribute(&mut s, o.op, k, Some(v))?;
                }
            }
            (None, _) => {
                return Err(invalid(
                    "An operation without a path needs an object value.",
                ));
            }
        }
    }
    Ok(s)
}

fn parse_id(raw: &str) -> Result<i64, ScimError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ScimError::not_found(format!("No user with id \"{raw}\" in this organization."))
    })
}

fn no_user(id: i64) -> ScimError {
    ScimError::not_found(format!("No user with id \"{id}\" in this organization."))
}

/// The organization's member `id`, or the SCIM 404 that names it.
async fn member(state: &AppState, org: i64, id: i64) -> Result<store::ScimUser, ScimError> {
    store::user(&state.db, org, id)
        .await?
        .ok_or_else(|| no_user(id))
}

/// The audit event of a SCIM change to a member.
fn event<'a>(
    caller: &'a ScimCaller,
    detail: &'a str,
    meta: &'a RequestMeta,
    ip: &'a str,
    subject: i64,
    action: &'a str,
) -> AuditEvent<'a> {
    AuditEvent {
        organization_id: Some(caller.organization_id),
        subject_user_id: Some(subject),
        action,
        detail: Some(detail),
        ip: Some(ip),
        user_agent: meta.user_agent.as_deref(),
        ..AuditEvent::default()
    }
}

/// The last joined, enabled superuser cannot be disabled or removed by
/// SCIM either: the organization would have nobody to run it.
async fn guard_last_superuser(
    tx: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
) -> Result<(), ScimError> {
    if team::is_working_superuser(tx, organization_id, user_id).await?
        && team::count_working_superusers(tx, organization_id).await? <= 1
    {
        return Err(ScimError::conflict(
            "This is the organization's last superuser; promote another member on the Team page first. Nothing was changed.",
        ));
    }
    Ok(())
}

/// Writes the difference between `old` and `new` in one transaction with
/// its audit events, and makes verification see it on the next request.
async fn save(
    state: &AppState,
    caller: &ScimCaller,
    meta: &RequestMeta,
    user_id: i64,
    new: &UserState,
) -> Result<ScimUser, ScimError> {
    let org = caller.organization_id;
    let now = state.clock.unix();
    let detail = caller.audit_detail();
    let ip = meta.ip_string();
    let mut tx = state.db.begin().await?;
    orgs::lock_organization(&mut tx, org).await?;
    let Some(old) = store::user_in(&mut tx, org, user_id).await? else {
        return Err(no_user(user_id));
    };
    let old_state = UserState::from(&old);
    if old_state == *new {
        return Ok(old);
    }
    if !new.user_name.eq_ignore_ascii_case(&old.user_name)
        && store::user_name_taken(&mut tx, org, &new.user_name, user_id).await?
    {
        return Err(ScimError::uniqueness(format!(
            "userName \"{}\" is taken by another member of this organization. Nothing was changed.",
            new.user_name
        )));
    }
    if new.email != old.email {
        if store::other_memberships(&mut tx, org, user_id).await? > 0 {
            return Err(ScimError::conflict(
                "This person also belongs to another organization, so their email cannot be changed through this organization's SCIM. Nothing was changed.",
            ));
        }
        if store::user_id_by_email(&mut tx, &new.email)
            .await?
            .is_some()
        {
            return Err(ScimError::uniqueness(format!(
                "Another user has the email {}. Nothing was changed.",
                new.email
            )));
        }
        store::set_email(&mut tx, user_id, &new.email).await?;
    }
    store::set_user_fields(
        &mut tx,
        org,
        user_id,
        &UserFields {
            user_name: &new.user_name,
            external_id: new.external_id.as_deref(),
            display_name: new.display_name.as_deref(),
        },
        now,
    )
    .await?;
    let mut invalidations = Vec::new();
    if new.active != old.active {
        if !new.active {
            guard_last_superuser(&mut tx, org, user_id).await?;
        }
        orgs::set_member_disabled(&mut tx, org, user_id, !new.active, now).await?;
        if !new.active {
            team::end_sessions_in_org(&mut tx, org, user_id).await?;
        }
        let action = if new.active {
            "member.enabled"
        } else {
            "member.disabled"
        };
        record_audit(&mut tx, &event(caller, &detail, meta, &ip, user_id, action)).await?;
        invalidations.push(Invalidation::Member {
            organization_id: org,
            user_id,
        });
    }
    let mut fields_changed = old_state.clone();
    fields_changed.active = new.active;
    if fields_changed != *new {
        record_audit(
            &mut tx,
            &event(caller, &detail, meta, &ip, user_id, "member.updated"),
        )
        .await?;
    }
    commit_and_invalidate(tx, &state.verifier, &invalidations).await?;
    tracing::info!(user_id, active = new.active, "SCIM updated a member");
    member(state, org, user_id).await
}

/// The users a filter asks for; `None` when Users have no such attribute.
pub fn user_match(f: &filter::Equals) -> Option<UserMatch> {
    Some(match f.attribute.as_str() {
        "username" => UserMatch::UserName(f.value.clone()),
        "externalid" => UserMatch::ExternalId(f.value.clone()),
        "id" => UserMatch::Id(f.value.parse().unwrap_or(-1)),
        "emails" | "emails.value" => UserMatch::Email(f.value.clone()),
        _ => return None,
    })
}

fn match_of(q: &QueryParams) -> Result<UserMatch, ScimError> {
    let Some(raw) = &q.filter else {
        return Ok(UserMatch::All);
    };
    let f = filter::parse(raw)?;
    user_match(&f).ok_or_else(|| {
        ScimError::bad(
            "invalidFilter",
            format!(
                "Users cannot be filtered on \"{}\"; use userName, externalId, id or emails.value with eq.",
                f.attribute
            ),
        )
    })
}

/// One page of users matching `m` (total, resources already projected).
pub async fn page_of(
    state: &AppState,
    org: i64,
    m: &UserMatch,
    page: super::Page,
    projection: &super::Projection,
) -> Result<(i64, Vec<Value>), ScimError> {
    let total = store::count_users(&state.db, org, m).await?;
    let users = store::list_users(&state.db, org, m, page.count, page.offset).await?;
    let resources = users
        .iter()
        .map(|u| projection.apply(resource(state, u)))
        .collect();
    Ok((total, resources))
}

async fn find(
    state: &AppState,
    caller: &ScimCaller,
    q: &QueryParams,
) -> Result<Response, ScimError> {
    let page = q.page()?;
    let projection = q.projection()?;
    let m = match_of(q)?;
    let (total, resources) = page_of(state, caller.organization_id, &m, page, &projection).await?;
    Ok(list_response(total, page, resources))
}

pub async fn list(
    State(state): State<AppState>,
    caller: ScimCaller,
    Query(q): Query<QueryParams>,
) -> Result<Response, ScimError> {
    find(&state, &caller, &q).await
}

/// `POST /Users/.search`: the list, with its parameters in a SearchRequest.
pub async fn search(
    State(state): State<AppState>,
    caller: ScimCaller,
    body: Bytes,
) -> Result<Response, ScimError> {
    let q = super::search_params(&json_body(&body)?)?;
    find(&state, &caller, &q).await
}

pub async fn get(
    State(state): State<AppState>,
    caller: ScimCaller,
    Path(id): Path<String>,
    Query(q): Query<QueryParams>,
) -> Result<Response, ScimError> {
    let projection = q.projection()?;
    let id = parse_id(&id)?;
    let u = member(&state, caller.organization_id, id).await?;
    Ok(respond(
        StatusCode::OK,
        &projection.apply(resource(&state, &u)),
    ))
}

pub async fn create(
    State(state): State<AppState>,
    caller: ScimCaller,
    meta: RequestMeta,
    body: Bytes,
) -> Result<Response, ScimError> {
    let body = json_body(&body)?;
    let new = read_user(&body, None)?;
    let org = caller.organization_id;
    let now = state.clock.unix();
    let detail = caller.audit_detail();
    let ip = meta.ip_string();
    let email = EmailAddress::parse(&new.email).map_err(|e| invalid(e.0))?;
    let mut tx = state.db.begin().await?;
    orgs::lock_organization(&mut tx, org).await?;
    if store::user_name_taken(&mut tx, org, &new.user_name, 0).await? {
        return Err(ScimError::uniqueness(format!(
            "userName \"{}\" is taken by a member of this organization. Nothing was created.",
            new.user_name
        )));
    }
    if let Some(existing) = store::user_id_by_email(&mut tx, &new.email).await?
        && store::user_in(&mut tx, org, existing).await?.is_some()
    {
        return Err(ScimError::uniqueness(format!(
            "{} is a member of this organization already (id {existing}). Nothing was created.",
            new.email
        )));
    }
    let user = orgs::add_member(&mut tx, org, &email, Role::Member, false, now).await?;
    store::set_user_fields(
        &mut tx,
        org,
        user.id,
        &UserFields {
            user_name: &new.user_name,
            external_id: new.external_id.as_deref(),
            display_name: new.display_name.as_deref(),
        },
        now,
    )
    .await?;
    if !new.active {
        orgs::set_member_disabled(&mut tx, org, user.id, true, now).await?;
    }
    record_audit(
        &mut tx,
        &event(&caller, &detail, &meta, &ip, user.id, "member.added"),
    )
    .await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    tracing::info!(user_id = user.id, "SCIM added a member");
    let u = member(&state, org, user.id).await?;
    Ok(created(&resource(&state, &u)))
}

pub async fn replace(
    State(state): State<AppState>,
    caller: ScimCaller,
    meta: RequestMeta,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let id = parse_id(&id)?;
    let body = json_body(&body)?;
    let current = member(&state, caller.organization_id, id).await?;
    let new = read_user(&body, Some(&UserState::from(&current)))?;
    let u = save(&state, &caller, &meta, id, &new).await?;
    Ok(respond(StatusCode::OK, &resource(&state, &u)))
}

pub async fn patch(
    State(state): State<AppState>,
    caller: ScimCaller,
    meta: RequestMeta,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let id = parse_id(&id)?;
    let body = json_body(&body)?;
    let ops = patch::parse(&body)?;
    let current = member(&state, caller.organization_id, id).await?;
    let new = apply_patch(&UserState::from(&current), &ops)?;
    let u = save(&state, &caller, &meta, id, &new).await?;
    Ok(respond(StatusCode::OK, &resource(&state, &u)))
}

/// Removes the membership: sessions in the organization end, tokens are
/// revoked (their rows stay as tombstones), the user row stays.
pub async fn delete(
    State(state): State<AppState>,
    caller: ScimCaller,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let id = parse_id(&id)?;
    let org = caller.organization_id;
    let now = state.clock.unix();
    let detail = caller.audit_detail();
    let ip = meta.ip_string();
    let mut tx = state.db.begin().await?;
    orgs::lock_organization(&mut tx, org).await?;
    if store::user_in(&mut tx, org, id).await?.is_none() {
        return Err(no_user(id));
    }
    guard_last_superuser(&mut tx, org, id).await?;
    let revoked = store::revoke_member_tokens(&mut tx, org, id, now).await?;
    for token in &revoked {
        record_audit(
            &mut tx,
            &AuditEvent {
                token_id: Some(*token),
                ..event(&caller, &detail, &meta, &ip, id, "token.revoked")
            },
        )
        .await?;
    }
    team::end_sessions_in_org(&mut tx, org, id).await?;
    store::delete_membership(&mut tx, org, id).await?;
    record_audit(
        &mut tx,
        &event(&caller, &detail, &meta, &ip, id, "member.removed"),
    )
    .await?;
    let mut invalidations: Vec<Invalidation> =
        revoked.iter().map(|t| Invalidation::Token(*t)).collect();
    invalidations.push(Invalidation::Member {
        organization_id: org,
        user_id: id,
    });
    commit_and_invalidate(tx, &state.verifier, &invalidations).await?;
    tracing::info!(
        user_id = id,
        tokens_revoked = revoked.len(),
        "SCIM removed a member"
    );
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> UserState {
        UserState {
            user_name: "ada".into(),
            external_id: None,
            display_name: Some("Ada".into()),
            email: "ada@example.com".into(),
            active: true,
        }
    }

    fn ops(v: Value) -> Vec<patch::Operation> {
        patch::parse(v.as_object().unwrap()).unwrap()
    }

    #[test]
    fn patches_the_attributes_providers_send() {
        let s = apply_patch(
            &state(),
            &ops(json!({"Operations": [
                {"op": "Replace", "value": {"active": "False", "displayName": "Ada L."}},
                {"op": "add", "path": "externalId", "value": "e-1"},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "Ada@Example.org"},
                {"op": "remove", "path": "displayName"}
            ]})),
        )
        .unwrap();
        assert!(!s.active);
        assert_eq!(s.external_id.as_deref(), Some("e-1"));
        assert_eq!(s.email, "ada@example.org");
        assert_eq!(s.display_name, None);
    }

    #[test]
    fn refuses_what_it_cannot_store() {
        for (body, kind) in [
            (
                json!({"Operations": [{"op": "remove", "path": "userName"}]}),
                "mutability",
            ),
            (
                json!({"Operations": [{"op": "remove", "path": "active"}]}),
                "mutability",
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "active", "value": "maybe"}]}),
                "invalidValue",
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "name.givenName", "value": "A"}]}),
                "invalidPath",
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "emails", "value": [{"value": "nope"}]}]}),
                "invalidValue",
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "userName", "value": ""}]}),
                "invalidValue",
            ),
        ] {
            let e = apply_patch(&state(), &ops(body.clone())).unwrap_err();
            assert_eq!(e.scim_type, Some(kind), "{body}");
        }
    }

    #[test]
    fn a_user_needs_an_address() {
        let body = json!({"userName": "no-at-sign"});
        let e = read_user(body.as_object().unwrap(), None).unwrap_err();
        assert!(e.detail.contains("emails is required"));
        let body = json!({"userName": "Ada@Example.com"});
        assert_eq!(
            read_user(body.as_object().unwrap(), None).unwrap().email,
            "ada@example.com"
        );
    }
}

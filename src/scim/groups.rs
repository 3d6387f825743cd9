//! `/scim/v2/Groups`: each organization has exactly one group, "Token
//! holders" (id `token-holders`): its members are the members who may create
//! and manage personal API tokens. Adding a member grants that permission,
//! removing one withdraws it (their tokens stop on the next request, rows
//! untouched). Superusers always hold it and are always listed. The group
//! cannot be created, renamed or deleted.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::auth::ScimCaller;
use super::error::ScimError;
use super::patch::{self, Op};
use super::{GROUP_SCHEMA, QueryParams, filter, json_body, list_response, respond};
use crate::app::AppState;
use crate::mail::{self, Mail};
use crate::request::RequestMeta;
use crate::store::invalidation::Invalidation;
use crate::store::scim::{self as store, ScimUser, UserMatch};
use crate::store::{AuditEvent, orgs, record_audit};
use crate::verify::commit_and_invalidate;

pub const GROUP_ID: &str = "token-holders";
pub const GROUP_NAME: &str = "Token holders";

fn fixed_group(detail: &str) -> ScimError {
    ScimError::not_implemented(format!(
        "{detail} Keysmith has one group per organization, \"{GROUP_NAME}\" (id {GROUP_ID}); it cannot be created, renamed or deleted, only its members change."
    ))
}

/// Members listed in the group: token-permission holders and superusers.
async fn holders(state: &AppState, org: i64) -> Result<Vec<ScimUser>, ScimError> {
    let mut all = store::list_users(&state.db, org, &UserMatch::All, i64::MAX, 0).await?;
    all.retain(|u| u.can_manage_tokens || u.superuser);
    Ok(all)
}

async fn resource(state: &AppState, org: i64, with_members: bool) -> Result<Value, ScimError> {
    let modified = store::token_holders_modified(&state.db, org).await?;
    let mut r = json!({
        "schemas": [GROUP_SCHEMA],
        "id": GROUP_ID,
        "displayName": GROUP_NAME,
        "meta": {
            "resourceType": "Group",
            "created": super::timestamp(modified.min(state.clock.unix())),
            "lastModified": super::timestamp(modified),
            "location": super::location(state, &format!("/Groups/{GROUP_ID}")),
        }
    });
    if with_members {
        let members: Vec<Value> = holders(state, org)
            .await?
            .iter()
            .map(|u| {
                json!({
                    "value": u.user_id.to_string(),
                    "$ref": super::location(state, &format!("/Users/{}", u.user_id)),
                    "display": u.user_name,
                })
            })
            .collect();
        r["members"] = json!(members);
    }
    Ok(r)
}

fn check_id(id: &str) -> Result<(), ScimError> {
    if id == GROUP_ID {
        Ok(())
    } else {
        Err(ScimError::not_found(format!(
            "No group \"{id}\": this organization's one group is {GROUP_ID} (\"{GROUP_NAME}\")."
        )))
    }
}

fn wants_members(q: &QueryParams) -> bool {
    let lower = |o: &Option<String>| o.as_deref().unwrap_or("").to_ascii_lowercase();
    let excluded = lower(&q.excluded_attributes);
    let included = lower(&q.attributes);
    !excluded
        .split(',')
        .any(|a| filter::attribute_name(a) == "members")
        && (included.is_empty()
            || included
                .split(',')
                .any(|a| filter::attribute_name(a).starts_with("members")))
}

/// Whether the one group matches a filter; `None` when Groups have no such
/// attribute.
pub fn group_matches(f: &filter::Equals) -> Option<bool> {
    match f.attribute.as_str() {
        "displayname" => Some(f.value.eq_ignore_ascii_case(GROUP_NAME)),
        "id" => Some(f.value == GROUP_ID),
        "externalid" => Some(false),
        _ => None,
    }
}

/// The group, projected, if it matches and `wanted`.
pub async fn projected(
    state: &AppState,
    org: i64,
    q: &QueryParams,
    projection: &super::Projection,
) -> Result<Value, ScimError> {
    let r = resource(state, org, wants_members(q)).await?;
    Ok(projection.apply(r))
}

async fn find(
    state: &AppState,
    caller: &ScimCaller,
    q: &QueryParams,
) -> Result<Response, ScimError> {
    let page = q.page()?;
    let projection = q.projection()?;
    let matches = match &q.filter {
        None => true,
        Some(raw) => {
            let f = filter::parse(raw)?;
            group_matches(&f).ok_or_else(|| {
                ScimError::bad(
                    "invalidFilter",
                    format!(
                        "Groups cannot be filtered on \"{}\"; use displayName or id with eq.",
                        f.attribute
                    ),
                )
            })?
        }
    };
    let total = i64::from(matches);
    let mut resources = Vec::new();
    if matches && page.offset == 0 && page.count > 0 {
        resources.push(projected(state, caller.organization_id, q, &projection).await?);
    }
    Ok(list_response(total, page, resources))
}

pub async fn list(
    State(state): State<AppState>,
    caller: ScimCaller,
    Query(q): Query<QueryParams>,
) -> Result<Response, ScimError> {
    find(&state, &caller, &q).await
}

/// `POST /Groups/.search`: the list, with its parameters in a SearchRequest.
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
    check_id(&id)?;
    let projection = q.projection()?;
    let r = resource(&state, caller.organization_id, wants_members(&q)).await?;
    Ok(respond(StatusCode::OK, &projection.apply(r)))
}

pub async fn create(_caller: ScimCaller) -> ScimError {
    fixed_group("Groups cannot be created.")
}

pub async fn delete(_caller: ScimCaller, Path(id): Path<String>) -> ScimError {
    if let Err(e) = check_id(&id) {
        return e;
    }
    fixed_group("The group cannot be deleted.")
}

/// Member ids out of a `members` value: `[{"value": "12"}, …]`.
fn member_ids(v: &Value) -> Result<Vec<i64>, ScimError> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => {
            return Err(ScimError::bad(
                "invalidValue",
                "members must be a list of {\"value\": \"<user id>\"}.",
            ));
        }
    };
    items
        .into_iter()
        .map(|m| {
            let raw = match m.get("value") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(ScimError::bad(
                        "invalidValue",
                        "Each member needs a value: the user's id.",
                    ));
                }
            };
            raw.trim().parse::<i64>().map_err(|_| {
                ScimError::bad(
                    "invalidValue",
                    format!("\"{raw}\" is not a user id of this organization."),
                )
            })
        })
        .collect()
}

fn check_display_name(v: &Value) -> Result<(), ScimError> {
    match v.as_str() {
        Some(n) if n.trim().eq_ignore_ascii_case(GROUP_NAME) => Ok(()),
        _ => Err(ScimError::bad(
            "mutability",
            format!("The group's displayName is always \"{GROUP_NAME}\"; it cannot be renamed."),
        )),
    }
}

/// Applies PATCH operations to the set of member ids.
fn apply_ops(
    current: &BTreeSet<i64>,
    ops: &[patch::Operation],
) -> Result<BTreeSet<i64>, ScimError> {
    let mut set = current.clone();
    let members_op =
        |set: &mut BTreeSet<i64>, op: Op, value: Option<&Value>| -> Result<(), ScimError> {
            match (op, value) {
                (Op::Add, Some(v)) => set.extend(member_ids(v)?),
                (Op::Replace, Some(v)) => *set = member_ids(v)?.into_iter().collect(),
                (Op::Remove, Some(v)) => {
                    for id in member_ids(v)? {
                        set.remove(&id);
                    }
                }
                (Op::Remove, None) => set.clear(),
                (_, None) => {
                    return Err(ScimError::bad("invalidValue", "members needs a value."));
                }
            }
            Ok(())
        };
    for o in ops {
        match &o.path {
            None => {
                let Some(Value::Object(map)) = &o.value else {
                    return Err(ScimError::bad("invalidValue", "A value object is needed."));
                };
                for (k, v) in map {
                    match filter::attribute_name(k).as_str() {
                        "members" => members_op(&mut set, o.op, Some(v))?,
                        "displayname" => check_display_name(v)?,
                        "schemas" | "id" | "meta" => {}
                        other => {
                            return Err(ScimError::bad(
                                "invalidPath",
                                format!("Groups have displayName and members, not \"{other}\"."),
                            ));
                        }
                    }
                }
            }
            Some(path) => {
                let name = filter::attribute_name(path);
                if let Some((attr, inner, rest)) = patch::split_value_path(&name) {
                    // `members[value eq "12"]`: that one member.
                    let f = filter::parse(inner)?;
                    if attr != "members" || f.attribute != "value" || !rest.is_empty() {
                        return Err(ScimError::bad(
                            "invalidPath",
                            format!(
                                "The path \"{path}\" is not supported; use members or members[value eq \"<id>\"]."
                            ),
                        ));
                    }
                    let id: i64 = f.value.parse().map_err(|_| {
                        ScimError::bad("invalidValue", format!("\"{}\" is not a user id.", f.value))
                    })?;
                    match o.op {
                        Op::Remove => {
                            set.remove(&id);
                        }
                        _ => {
                            set.insert(id);
                        }
                    }
                    continue;
                }
                match name.as_str() {
                    "members" => members_op(&mut set, o.op, o.value.as_ref())?,
                    "displayname" => match (o.op, &o.value) {
                        (Op::Remove, _) | (_, None) => {
                            return Err(ScimError::bad(
                                "mutability",
                                "The group's displayName cannot be removed.",
                            ));
                        }
                        (_, Some(v)) => check_display_name(v)?,
                    },
                    _ => {
                        return Err(ScimError::bad(
                            "invalidPath",
                            format!("Groups have displayName and members, not \"{path}\"."),
                        ));
                    }
                }
            }
        }
    }
    Ok(set)
}

/// Makes the group's members exactly `wanted`: grants and withdraws the
/// permission in one transaction, with audit events, emails and the
/// invalidation every instance acts on.
async fn save(
    state: &AppState,
    caller: &ScimCaller,
    meta: &RequestMeta,
    wanted: &BTreeSet<i64>,
) -> Result<(), ScimError> {
    let org = caller.organization_id;
    let now = state.clock.unix();
    let detail = caller.audit_detail();
    let ip = meta.ip_string();
    let mut tx = state.db.begin().await?;
    orgs::lock_organization(&mut tx, org).await?;
    let mut invalidations = Vec::new();
    let mut mailed = false;
    for id in wanted {
        if store::user_in(&mut tx, org, *id).await?.is_none() {
            return Err(ScimError::bad(
                "invalidValue",
                format!(
                    "There is no user with id \"{id}\" in this organization. Nothing was changed."
                ),
            ));
        }
    }
    let all = store::all_users_in(&mut tx, org).await?;
    for u in &all {
        let want = wanted.contains(&u.user_id);
        let has = u.can_manage_tokens || u.superuser;
        if want == has {
            continue;
        }
        if u.superuser {
            return Err(ScimError::conflict(format!(
                "{} is a superuser and always holds the token permission; demote them on the Team page first. Nothing was changed.",
                u.user_name
            )));
        }
        orgs::set_can_manage_tokens(&mut tx, org, u.user_id, want).await?;
        store::touch(&mut tx, org, u.user_id, now).await?;
        let action = if want {
            "member.permission_granted"
        } else {
            "member.permission_withdrawn"
        };
        record_audit(
            &mut tx,
            &AuditEvent {
                organization_id: Some(org),
                subject_user_id: Some(u.user_id),
                action,
                detail: Some(&detail),
                ip: Some(&ip),
                user_agent: meta.user_agent.as_deref(),
                ..AuditEvent::default()
            },
        )
        .await?;
        let notice = if want {
            Mail::PermissionRestored {
                organization_id: org,
                actor: detail.clone(),
            }
        } else {
            Mail::PermissionWithdrawn {
                organization_id: org,
                actor: detail.clone(),
            }
        };
        mail::enqueue(&mut tx, &u.email, &notice, now).await?;
        mailed = true;
        invalidations.push(Invalidation::Member {
            organization_id: org,
            user_id: u.user_id,
        });
    }
    commit_and_invalidate(tx, &state.verifier, &invalidations).await?;
    if mailed {
        state.mail.wake();
    }
    tracing::info!(
        changed = invalidations.len(),
        "SCIM changed the token holders"
    );
    Ok(())
}

async fn current_ids(state: &AppState, org: i64) -> Result<BTreeSet<i64>, ScimError> {
    Ok(holders(state, org)
        .await?
        .iter()
        .map(|u| u.user_id)
        .collect())
}

pub async fn patch(
    State(state): State<AppState>,
    caller: ScimCaller,
    meta: RequestMeta,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    check_id(&id)?;
    let body = json_body(&body)?;
    let ops = patch::parse(&body)?;
    let current = current_ids(&state, caller.organization_id).await?;
    let wanted = apply_ops(&current, &ops)?;
    save(&state, &caller, &meta, &wanted).await?;
    let r = resource(&state, caller.organization_id, true).await?;
    Ok(respond(StatusCode::OK, &r))
}

pub async fn replace(
    State(state): State<AppState>,
    caller: ScimCaller,
    meta: RequestMeta,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    check_id(&id)?;
    let body: Map<String, Value> = json_body(&body)?;
    let mut wanted = BTreeSet::new();
    for (k, v) in &body {
        match filter::attribute_name(k).as_str() {
            "displayname" => check_display_name(v)?,
            "members" if !v.is_null() => wanted.extend(member_ids(v)?),
            _ => {}
        }
    }
    save(&state, &caller, &meta, &wanted).await?;
    let r = resource(&state, caller.organization_id, true).await?;
    Ok(respond(StatusCode::OK, &r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(v: Value) -> Vec<patch::Operation> {
        patch::parse(v.as_object().unwrap()).unwrap()
    }

    #[test]
    fn member_operations_move_ids() {
        let start: BTreeSet<i64> = [1, 2].into();
        let got = apply_ops(
            &start,
            &ops(json!({"Operations": [
                {"op": "add", "path": "members", "value": [{"value": "3"}, {"value": 4}]},
                {"op": "remove", "path": "members[value eq \"1\"]"},
                {"op": "Remove", "path": "members", "value": [{"value": "4"}]},
                {"op": "replace", "value": {"displayName": "token holders"}}
            ]})),
        )
        .unwrap();
        assert_eq!(got, [2, 3].into());
        let got = apply_ops(
            &start,
            &ops(json!({"Operations": [{"op": "replace", "path": "members", "value": []}]})),
        )
        .unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn the_group_cannot_be_renamed() {
        let e = apply_ops(
            &BTreeSet::new(),
            &ops(json!({"Operations": [{"op": "replace", "path": "displayName", "value": "Admins"}]})),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("mutability"));
        let e = apply_ops(
            &BTreeSet::new(),
            &ops(json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": "x"}]}]})),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("invalidValue"));
    }
}

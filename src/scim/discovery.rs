//! What the server says about itself (RFC 7644 §4): ServiceProviderConfig,
//! ResourceTypes and Schemas. The schemas list only the attributes Keysmith
//! stores, so a client (and scim2-tester) knows exactly what round-trips.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::error::ScimError;
use super::{GROUP_SCHEMA, MAX_COUNT, USER_SCHEMA, list_response, location, respond};
use crate::app::AppState;

const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RT_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

pub async fn service_provider_config(State(state): State<AppState>) -> Response {
    respond(
        StatusCode::OK,
        &json!({
            "schemas": [SPC_SCHEMA],
            "documentationUri": "https://github.com/keysmith/keysmith#scim-provisioning",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": MAX_COUNT},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "Organization SCIM secret",
                "description": "Authorization: Bearer <secret>; a superuser makes one on the Team page, or the operator sets KEYSMITH_SCIM_TOKENS.",
                "primary": true
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": location(&state, "/ServiceProviderConfig"),
            }
        }),
    )
}

fn resource_type_docs(state: &AppState) -> Vec<Value> {
    vec![
        json!({
            "schemas": [RT_SCHEMA],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "A member of the organization",
            "schema": USER_SCHEMA,
            "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": location(state, "/ResourceTypes/User")}
        }),
        json!({
            "schemas": [RT_SCHEMA],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Token holders: the members who may create and manage personal API tokens",
            "schema": GROUP_SCHEMA,
            "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": location(state, "/ResourceTypes/Group")}
        }),
    ]
}

fn attribute(
    name: &str,
    kind: &str,
    required: bool,
    mutability: &str,
    uniqueness: &str,
    description: &str,
) -> Value {
    json!({
        "name": name,
        "type": kind,
        "multiValued": false,
        "description": description,
        "required": required,
        "caseExact": false,
        "mutability": mutability,
        "returned": "default",
        "uniqueness": uniqueness,
    })
}

fn schema_docs(state: &AppState) -> Vec<Value> {
    let mut emails = attribute(
        "emails",
        "complex",
        true,
        "readWrite",
        "none",
        "The member's email; Keysmith signs members in by email, so one is required. Keysmith keeps one address: of several sent, the one marked primary (else the first).",
    );
    emails["multiValued"] = json!(true);
    emails["subAttributes"] = json!([attribute(
        "value",
        "string",
        true,
        "readWrite",
        "none",
        "An email address"
    ),]);
    let mut members = attribute(
        "members",
        "complex",
        false,
        "readWrite",
        "none",
        "The members who hold the token permission (superusers always do).",
    );
    members["multiValued"] = json!(true);
    let mut ref_attr = attribute(
        "$ref",
        "reference",
        false,
        "immutable",
        "none",
        "The member's URI",
    );
    ref_attr["referenceTypes"] = json!(["User"]);
    members["subAttributes"] = json!([
        attribute(
            "value",
            "string",
            false,
            "immutable",
            "none",
            "The member's id"
        ),
        ref_attr,
        attribute(
            "display",
            "string",
            false,
            "readOnly",
            "none",
            "The member's userName"
        ),
    ]);
    vec![
        json!({
            "schemas": [SCHEMA_SCHEMA],
            "id": USER_SCHEMA,
            "name": "User",
            "description": "A member of the organization",
            "attributes": [
                attribute("userName", "string", true, "readWrite", "server", "Unique in the organization; the email when the provider never set one"),
                attribute("displayName", "string", false, "readWrite", "none", "The member's name as shown"),
                attribute("active", "boolean", true, "readWrite", "none", "false disables the member: sessions end, tokens stop"),
                emails,
            ],
            "meta": {"resourceType": "Schema", "location": location(state, &format!("/Schemas/{USER_SCHEMA}"))}
        }),
        json!({
            "schemas": [SCHEMA_SCHEMA],
            "id": GROUP_SCHEMA,
            "name": "Group",
            "description": "The organization's one group, Token holders",
            "attributes": [
                attribute("displayName", "string", true, "readWrite", "server", "Always \"Token holders\""),
                members,
            ],
            "meta": {"resourceType": "Schema", "location": location(state, &format!("/Schemas/{GROUP_SCHEMA}"))}
        }),
    ]
}

fn page_of(all: Vec<Value>) -> Response {
    let n = all.len() as i64;
    list_response(
        n,
        super::Page {
            offset: 0,
            count: n,
        },
        all,
    )
}

pub async fn resource_types(State(state): State<AppState>) -> Response {
    page_of(resource_type_docs(&state))
}

pub async fn resource_type(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    resource_type_docs(&state)
        .into_iter()
        .find(|r| r["id"].as_str() == Some(id.as_str()))
        .map(|r| respond(StatusCode::OK, &r))
        .ok_or_else(|| ScimError::not_found("No such resource type: there are User and Group."))
}

pub async fn schemas(State(state): State<AppState>) -> Response {
    page_of(schema_docs(&state))
}

pub async fn schema(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    schema_docs(&state)
        .into_iter()
        .find(|r| r["id"].as_str() == Some(id.as_str()))
        .map(|r| respond(StatusCode::OK, &r))
        .ok_or_else(|| {
            ScimError::not_found(format!(
                "No such schema: there are {USER_SCHEMA} and {GROUP_SCHEMA}."
            ))
        })
}

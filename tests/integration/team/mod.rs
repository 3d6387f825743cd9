//! `/team`, the organization superuser's page, over HTTP: who may open it,
//! the token permission, members, invitations, a member's tokens, policy,
//! projects, the audit log, and the emails these send.

mod access;
mod audit;
mod confirm;
mod emails;
mod invitations;
mod listing;
mod member_tokens;
mod members;
mod permission;
mod policy;

use keysmith::store::orgs::Bootstrapped;

use crate::bearer::{Minted, Org, Spec, member, mint};
use crate::harness::{TestApp, new_client};

/// The signed-in superuser (ada, the app's client) and their organization.
pub async fn superuser(app: &TestApp) -> Org {
    let b: Bootstrapped = app.signed_in_superuser("ada@example.com").await;
    Org {
        id: b.organization.id,
        owner: b.user.id,
    }
}

/// A member who may manage tokens, with one token labelled `label`.
pub async fn member_with_token(
    app: &TestApp,
    org: &Org,
    email: &str,
    label: &str,
) -> (i64, Minted) {
    let id = member(app, org, email).await;
    let token = mint(
        app,
        org.id,
        id,
        Spec {
            label,
            ..Spec::default()
        },
    )
    .await;
    (id, token)
}

/// A POST from the app's client (the superuser) with the CSRF token of
/// `/team`, as htmx sends it when `htmx` is set.
pub async fn team_post(
    app: &TestApp,
    path: &str,
    fields: &[(&str, &str)],
    htmx: bool,
) -> reqwest::Response {
    let csrf = app.csrf_with(&app.client, "/team").await;
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    form.push(("csrf_token", &csrf));
    let mut req = app.client.post(app.url(path)).form(&form);
    if htmx {
        req = req.header("hx-request", "true");
    }
    req.send().await.unwrap()
}

/// A second browser, signed in as `email`.
pub async fn client_for(app: &TestApp, email: &str) -> reqwest::Client {
    let client = new_client();
    app.sign_in_with(&client, email).await;
    client
}

pub async fn text(r: reqwest::Response) -> String {
    r.text().await.unwrap()
}

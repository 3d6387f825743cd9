//! Our own SCIM checks, written with scim2-client (PyPI, pinned) against
//! the live server: create, userName eq filters, pagination, PATCH,
//! deactivation, the Token holders group and delete.

use super::{python, setup};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    #[cfg_attr(
        skip_scim_tests,
        ignore = "SCIM test skipped: pip install -r tests/scim/requirements.txt, then touch build.rs (CI installs it)"
    )]
    scim2_client_checks_pass,
);

const CHECKS: &[&str] = &[
    "discover",
    "create",
    "filter_username_eq_case_insensitive",
    "filter_no_match",
    "pagination",
    "patch_replace_and_add",
    "patch_deactivate",
    "group_filter_display_name",
    "group_add_member",
    "group_remove_member",
    "unsupported_filter_is_invalid_filter",
    "delete",
];

async fn scim2_client_checks_pass(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let base = app.url("/scim/v2");
    let out =
        tokio::task::spawn_blocking(move || python("client_checks.py", &[&base, &scim.secret]))
            .await
            .unwrap();
    let passed: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("ok ")).collect();
    assert_eq!(passed, CHECKS, "{out}");
    assert_eq!(out.lines().last(), Some("done"));
    app.shutdown().await;
}

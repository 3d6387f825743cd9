//! `Keysmith-Token-Expires` on verified answers for a token that expires.

use crate::backend_tests;
use crate::bearer::{Spec, header, mint, org, owner_token, verify, whoami};
use crate::harness::{Backend, TestApp};

backend_tests!(verified_answers_carry_the_expiry_of_a_token_that_expires);

async fn verified_answers_carry_the_expiry_of_a_token_that_expires(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    // 2030-01-01T00:00:00Z
    let expiring = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "expiring",
            expires_at: Some(1_893_456_000),
            ..Spec::default()
        },
    )
    .await;
    for _ in 0..2 {
        // The first answer is built, the second comes from the cache.
        let r = whoami(&app, &expiring.token).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "keysmith-token-expires").as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
        let r = verify(&app, &expiring.token, "", "GET", "/x").await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "keysmith-token-expires").as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
    }
    let forever = owner_token(&app, &org).await;
    let r = whoami(&app, &forever.token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "keysmith-token-expires"), None);
    let r = verify(&app, &forever.token, "", "GET", "/x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "keysmith-token-expires"), None);
    // A refusal carries none.
    let r = whoami(&app, "ks_nonsense").await;
    assert_eq!(header(&r, "keysmith-token-expires"), None);
    app.shutdown().await;
}

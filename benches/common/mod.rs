//! What the benches share: running one on both backends.

use std::future::Future;

/// Runs `run` on a fresh SQLite database, then, when
/// `KEYSMITH_TEST_POSTGRES_URL` is set, on a PostgreSQL database of its
/// own (`keysmith_bench_{name}_{pid}`, dropped afterwards); exits non-zero
/// when a run says its target was missed.
pub async fn on_both_backends<F, Fut>(name: &str, run: F)
where
    F: Fn(&'static str, String) -> Fut,
    Fut: Future<Output = bool>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    let mut met = run("SQLite", sqlite).await;
    match std::env::var("KEYSMITH_TEST_POSTGRES_URL") {
        Ok(admin) => {
            let db = format!("keysmith_bench_{name}_{}", std::process::id());
            admin_sql(&admin, &format!("CREATE DATABASE \"{db}\"")).await;
            let mut url = url::Url::parse(&admin).expect("KEYSMITH_TEST_POSTGRES_URL is a URL");
            url.set_path(&format!("/{db}"));
            met &= run("PostgreSQL", url.to_string()).await;
            admin_sql(&admin, &format!("DROP DATABASE \"{db}\" WITH (FORCE)")).await;
        }
        Err(_) => eprintln!("PostgreSQL skipped: set KEYSMITH_TEST_POSTGRES_URL to run it too"),
    }
    if !met {
        std::process::exit(1);
    }
}

async fn admin_sql(admin_url: &str, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap();
}

//! Prometheus metrics on `KEYSMITH_METRICS_ADDR`, scraped by a real
//! Prometheus server (Debian's `prometheus`) and read back through its HTTP
//! API. The server under test runs as its own process (the `keysmith`
//! binary): the metrics recorder is process-wide, and the other tests in
//! this binary verify tokens of their own all the time.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keysmith::config::DatabaseUrl;
use keysmith::domain::{EmailAddress, OrgName, TokenLabel};
use keysmith::store::{Db, PoolSettings, orgs, outbox, tokens};
use keysmith::token::{PlainToken, TokenPrefix};

use crate::backend_tests;
use crate::harness::{Backend, TestDb};

backend_tests!(
    #[cfg_attr(
        skip_prometheus_tests,
        ignore = "Prometheus test skipped: apt-get install prometheus (CI installs it)"
    )]
    prometheus_scrapes_outcomes_routes_rate_limits_and_the_outbox
);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keysmith(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keysmith"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KEYSMITH_CONFIG", "/dev/null");
    cmd
}

async fn wait_for_http(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Mints a token straight into the store.
async fn mint(db: &Db, org_id: i64, user_id: i64, label: &str, scopes: &[&str]) -> (i64, String) {
    let prefix = TokenPrefix::parse("ks").unwrap();
    let plain = PlainToken::generate(&prefix);
    let scopes = keysmith::token::ScopeCatalogue::default()
        .parse_set(scopes.iter().copied())
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    let id = tokens::create(
        &mut tx,
        &tokens::NewToken {
            user_id,
            organization_id: org_id,
            label: &TokenLabel::parse(label).unwrap(),
            display_prefix: &plain.display_prefix(),
            digest: &plain.digest(),
            scopes: &scopes,
            expires_at: None,
            project_ids: &[],
            created_ip: None,
            created_user_agent: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (id, plain.expose_secret().to_string())
}

/// Asks Prometheus for one instant value, if the query has exactly one series.
async fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(
            url::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), [("query", promql)])
                .unwrap(),
        )
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    assert_eq!(body["status"], "success", "{promql}: {body}");
    let result = body["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

/// Waits until Prometheus reports `promql` and `accept` likes the value.
async fn until(prometheus: &str, promql: &str, accept: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = None;
    loop {
        last = query(prometheus, promql).await.or(last);
        if let Some(v) = last
            && accept(v)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{promql}: last value {last:?} never became what was expected"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn prometheus_scrapes_outcomes_routes_rate_limits_and_the_outbox(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let url = DatabaseUrl::parse(&test_db.url).unwrap();
    let db = Db::connect(&url, &PoolSettings::default()).await.unwrap();
    db.migrate().await.unwrap();
    let boot = orgs::bootstrap(
        &db,
        &OrgName::parse("Acme").unwrap(),
        &EmailAddress::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap();
    let (org, owner) = (boot.organization.id, boot.user.id);
    let (_, valid) = mint(&db, org, owner, "valid", &["write"]).await;
    let (_, reader) = mint(&db, org, owner, "reader", &["read"]).await;
    let (revoked_id, revoked) = mint(&db, org, owner, "revoked", &["read"]).await;
    let (disabled_id, disabled) = mint(&db, org, owner, "disabled", &["read"]).await;
    let now = keysmith::store::unix_now();
    for (column, id) in [("revoked_at", revoked_id), ("disabled_at", disabled_id)] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_tokens SET {column} = $1 WHERE id = $2"
        )))
        .bind(now)
        .bind(id)
        .execute(db.pool())
        .await
        .unwrap();
    }
    // Three messages written a minute ago: one due now, which cannot be
    // built (its payload is empty) and fails for good; two due in an hour.
    let mut tx = db.begin().await.unwrap();
    for n in 0..3 {
        let id = outbox::enqueue(
            &mut tx,
            "sign_in",
            &format!("m{n}@example.com"),
            "{}",
            now - 60,
        )
        .await
        .unwrap();
        if n > 0 {
            sqlx::query("UPDATE mail_outbox SET next_attempt_at = $1 WHERE id = $2")
                .bind(now + 3600)
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();
    let unknown = PlainToken::generate(&TokenPrefix::parse("ks").unwrap());

    let dir = tempfile::tempdir().unwrap();
    let (main_port, metrics_port, prom_port) = (free_port(), free_port(), free_port());
    let _keysmith = Killed(
        keysmith(dir.path())
            .arg("serve")
            .env("DATABASE_URL", &test_db.url)
            .env("KEYSMITH_ADDR", format!("127.0.0.1:{main_port}"))
            .env("KEYSMITH_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("KEYSMITH_DATA_DIR", dir.path().join("data"))
            .env(
                "KEYSMITH_SMTP_URL",
                format!("smtp://127.0.0.1:{}", free_port()),
            )
            .env("KEYSMITH_READS_PER_MINUTE", "5")
            .env("KEYSMITH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("keysmith.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{main_port}");
    wait_for_http(&format!("{base}/healthz")).await;
    if backend == Backend::Postgres {
        // Until the invalidation listener is connected the cache is not
        // trusted (every lookup is a miss), which the counts below assume.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(dir.path().join("keysmith.log"))
            .unwrap_or_default()
            .contains("listening for token invalidations")
        {
            assert!(Instant::now() < deadline, "the listener never connected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let client = reqwest::Client::new();
    let whoami = |token: String| {
        let request = client
            .get(format!("{base}/api/v2/whoami"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(whoami(valid.clone()).await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    for _ in 0..2 {
        assert_eq!(whoami(revoked.clone()).await, 401);
        assert_eq!(whoami(disabled.clone()).await, 401);
    }
    for _ in 0..4 {
        assert_eq!(whoami(unknown.expose_secret().to_string()).await, 401);
    }
    let refused = client
        .get(format!("{base}/auth/verify?scope=write"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: keysmith\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs (apt-get install prometheus)"),
    );
    let prometheus = format!("http://127.0.0.1:{prom_port}");
    wait_for_http(&format!("{prometheus}/-/ready")).await;
    until(&prometheus, "up{job=\"keysmith\"}", |v| v == 1.0).await;

    for (outcome, sent) in [
        ("valid", 5.0),
        ("rate_limited", 3.0),
        ("revoked", 2.0),
        ("disabled", 2.0),
        ("unknown", 4.0),
        ("insufficient_scope", 1.0),
        ("expired", 0.0),
    ] {
        let promql = format!("keysmith_verifications_total{{outcome=\"{outcome}\"}}");
        let got = until(&prometheus, &promql, |v| v == sent).await;
        assert_eq!(got, sent, "{outcome}");
    }
    until(
        &prometheus,
        "keysmith_rate_limited_total{class=\"read\"}",
        |v| v == 3.0,
    )
    .await;
    until(
        &prometheus,
        "keysmith_http_request_duration_seconds_count{route=\"/api/v2/whoami\"}",
        |v| v == 16.0,
    )
    .await;
    until(
        &prometheus,
        "keysmith_http_request_duration_seconds_count{route=\"/auth/verify\"}",
        |v| v == 1.0,
    )
    .await;
    // Buckets are there, and no raw path (or secret) ever became a label.
    until(
        &prometheus,
        "keysmith_http_request_duration_seconds_bucket{route=\"/api/v2/whoami\",le=\"+Inf\"}",
        |v| v == 16.0,
    )
    .await;
    until(
        &prometheus,
        "count(keysmith_http_request_duration_seconds_count{route=~\".*(ks_|\\\\?).*\"}) or vector(0)",
        |v| v == 0.0,
    )
    .await;
    until(&prometheus, "keysmith_mail_outbox_pending", |v| v == 2.0).await;
    until(
        &prometheus,
        "keysmith_mail_outbox_oldest_pending_age_seconds",
        |v| v >= 60.0,
    )
    .await;
    until(&prometheus, "keysmith_mail_outbox_failed", |v| v == 1.0).await;
    until(
        &prometheus,
        "keysmith_mail_delivery_attempts_total{result=\"failed\"}",
        |v| v >= 1.0,
    )
    .await;
    until(&prometheus, "keysmith_verify_cache_entries", |v| v >= 3.0).await;
    until(&prometheus, "keysmith_verify_cache_hits_total", |v| {
        v >= 10.0
    })
    .await;
    until(&prometheus, "keysmith_verify_cache_misses_total", |v| {
        v >= 4.0
    })
    .await;
    until(&prometheus, "keysmith_db_pool_connections", |v| v >= 1.0).await;
    // The five allowed uses reach the database within the flush period.
    until(&prometheus, "keysmith_last_used_written_total", |v| {
        v >= 1.0
    })
    .await;

    // The main listener has no /metrics, the metrics one nothing else.
    assert_eq!(
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .status(),
        404
    );
    let other = reqwest::get(format!("http://127.0.0.1:{metrics_port}/healthz"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

mod main_listener {
    use crate::backend_tests;
    use crate::harness::{Backend, TestApp};

    backend_tests!(metrics_are_not_served_on_the_main_listener);

    /// Operators expose the metrics port to the scraper only; the main
    /// port answers `/metrics` like any unknown address.
    async fn metrics_are_not_served_on_the_main_listener(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.get("/metrics").await.status(), 404);
        app.shutdown().await;
    }
}

fn one_line_error(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(
        lines[0].starts_with("keysmith: ") && lines[0].contains(needle),
        "{err}"
    );
}

#[test]
fn bad_metrics_addr_stops_start_up_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["9464", "localhost:9464", "127.0.0.1:70000"] {
        let out = keysmith(dir.path())
            .arg("serve")
            .env("KEYSMITH_METRICS_ADDR", bad)
            .output()
            .unwrap();
        one_line_error(&out, 2, "KEYSMITH_METRICS_ADDR");
    }
    let out = keysmith(dir.path())
        .arg("serve")
        .env("KEYSMITH_ADDR", "127.0.0.1:4567")
        .env("KEYSMITH_METRICS_ADDR", "127.0.0.1:4567")
        .output()
        .unwrap();
    one_line_error(&out, 2, "port of their own");
}

#[test]
fn metrics_port_in_use_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = keysmith(dir.path())
        .arg("serve")
        .env("KEYSMITH_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("KEYSMITH_METRICS_ADDR", &addr)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/k.db", dir.path().display()),
        )
        .output()
        .unwrap();
    one_line_error(
        &out,
        1,
        &format!("KEYSMITH_METRICS_ADDR: cannot listen on {addr}"),
    );
}

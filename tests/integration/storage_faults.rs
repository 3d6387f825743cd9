//! Storage faults: a real full filesystem under the SQLite database. A small
//! tmpfs is mounted for the test (root only; CI runs as root), filled up,
//! then freed. Writes must fail with a clear 503 while it is full, `/readyz`
//! must say the database cannot write, and every write must work again once
//! space is back — without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp};

/// These tests create tokens fast; the per-member limits are not the subject.
const UNLIMITED_CREATIONS: (&str, &str) = ("KEYSMITH_TOKEN_CREATIONS_PER_HOUR", "100000");
const UNLIMITED_LIVE: (&str, &str) = ("KEYSMITH_MAX_LIVE_TOKENS_PER_MEMBER", "100000");

/// A tmpfs of a few megabytes, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (the storage-fault tests need root; CI runs as root)",
            dir.path().display()
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the filesystem refuses (ENOSPC).
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0u8; 16 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("writing the filler: {e}"),
            }
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn create(app: &TestApp, label: &str) -> (u16, Value) {
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    create_with(app, &csrf, label).await
}

/// Creates a token with a CSRF token read earlier (while the database is
/// down the page that carries one cannot be read).
async fn create_with(app: &TestApp, csrf: &str, label: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/api/user/api-keys"))
        .header("x-csrf-token", csrf)
        .json(&json!({ "label": label, "scopes": ["read"] }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let r = app.get("/readyz").await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_root_tests,
    ignore = "storage-fault test skipped: it needs root (CI runs it)"
)]
async fn a_full_disk_fails_writes_clearly_and_they_recover_when_space_returns() {
    let disk = SmallDisk::mount("3m");
    let db_url = format!("sqlite://{}", disk.path().join("keysmith.db").display());
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("DATABASE_URL", &db_url),
            UNLIMITED_CREATIONS,
            UNLIMITED_LIVE,
        ],
    )
    .await;
    app.signed_in_superuser("ada@example.com").await;
    let (status, _) = create(&app, "before").await;
    assert_eq!(status, 201);
    assert_eq!(readyz(&app).await.0, 200);

    let filler = disk.fill();
    // More attempts than the pool has connections, so every pooled
    // connection meets the error at least once.
    for i in 0..12 {
        let (status, body) = create(&app, &format!("while full {i}")).await;
        assert_eq!(status, 503, "a write on a full disk: {body}");
        let message = body["error_description"]
            .as_str()
            .or(body["error"].as_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains("storage") || message.contains("disk"),
            "the answer says what is wrong: {body}"
        );
    }
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], "cannot write", "{body}");

    std::fs::remove_file(&filler).unwrap();
    for i in 0..12 {
        let (status, body) = create(&app, &format!("after {i}")).await;
        assert_eq!(status, 201, "a write once space is back: {body}");
        let plaintext = body["plaintext"].as_str().unwrap();
        assert_eq!(app.whoami_status(plaintext).await, 200);
    }
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 200, "{body}");
    let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(live, 13, "nothing written while full, everything after");

    // The background writers recover too: the creation notices go out (the
    // sign-in link, "before" and the twelve after), and the last-used
    // writer records the whoami calls above.
    // A notice in flight when the disk filled waits out its retry backoff
    // (it grows with each failed attempt, up to about 12 minutes), so the
    // clock moves past the longest one rather than the test waiting it out.
    app.state
        .clock
        .advance(std::time::Duration::from_secs(15 * 60));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mail = app.dev_mail().await;
        let to_ada = mail.iter().filter(|m| m.to == "ada@example.com").count();
        if to_ada >= 14 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{to_ada} of 14 messages arrived after space came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let used: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_tokens WHERE label LIKE 'after %' AND last_used_at IS NOT NULL",
        )
        .fetch_one(app.db().pool())
        .await
        .unwrap();
        if used == 12 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last use recorded for {used} of 12 tokens"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.shutdown().await;
}

/// A PostgreSQL server of the test's own (the shared one serves every other
/// test, so it cannot be restarted), run as the `postgres` user on a free port.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn bin(name: &str) -> PathBuf {
        let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed");
        let mut found: Vec<PathBuf> = versions
            .filter_map(|v| v.ok())
            .map(|v| v.path().join("bin").join(name))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found
            .pop()
            .unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql"))
    }

    fn as_postgres(args: &[&str]) {
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run runuser");
        assert!(status.success(), "{args:?} failed");
    }

    fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        let data = dir.path().join("data");
        let initdb = Self::bin("initdb");
        Self::as_postgres(&[
            initdb.to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]);
        let pg = PrivatePostgres { dir, port };
        pg.ctl("start");
        pg
    }

    fn ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        Self::as_postgres(&[
            Self::bin("pg_ctl").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-m",
            "fast",
            "-w",
            action,
        ]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Self::bin("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_root_tests,
    ignore = "storage-fault test skipped: it needs root (CI runs it)"
)]
async fn writes_recover_after_postgres_restarts_under_load() {
    let pg = PrivatePostgres::start();
    let app = std::sync::Arc::new(
        TestApp::spawn_with(
            Backend::Sqlite,
            &[
                ("DATABASE_URL", &pg.url()),
                UNLIMITED_CREATIONS,
                UNLIMITED_LIVE,
            ],
        )
        .await,
    );
    app.signed_in_superuser("ada@example.com").await;
    let (_, token) = app.create_key("probe").await;
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;

    // Writers and bearer readers run through the restart.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (app, stop, token, csrf) = (app.clone(), stop.clone(), token.clone(), csrf.clone());
        load.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut created = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let (status, body) = create_with(&app, &csrf, &format!("load {worker}-{n}")).await;
                if status == 201 {
                    created.push(body["id"].as_i64().unwrap());
                }
                seen.push((status, body.to_string()));
                // A read budget running out is fine here; a 500 is not.
                let status = app.whoami_status(&token).await;
                seen.push((if status == 429 { 200 } else { status }, "whoami".into()));
            }
            (seen, created)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pg = std::sync::Arc::new(pg);
    let restarting = pg.clone();
    tokio::task::spawn_blocking(move || restarting.ctl("restart"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut created = Vec::new();
    for task in load {
        let (seen, ids) = task.await.unwrap();
        for (status, body) in seen {
            assert!(
                [200, 201, 503].contains(&status),
                "during a PostgreSQL restart a request got {status}: {body}"
            );
        }
        created.extend(ids);
    }

    // After the restart every write works, on every pooled connection.
    for i in 0..20 {
        let (status, body) = create(&app, &format!("after restart {i}")).await;
        assert_eq!(status, 201, "a write after the restart: {body}");
    }
    assert_eq!(readyz(&app).await.0, 200);
    // No write that got a 201 was lost.
    for id in created {
        let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
        assert_eq!(found, 1, "token {id} got a 201 and is gone");
    }
}

/// A TCP relay between Keysmith and PostgreSQL that the test can cut: it
/// drops every relayed connection and hangs up on new ones straight after
/// accepting them, as a server going down does.
struct Relay {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn to(upstream: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (cut2, links2) = (cut.clone(), links.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if cut2.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().unwrap().push(link.abort_handle());
            }
        });
        Relay {
            port,
            cut,
            links,
            accepting,
        }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn mend(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}

/// A connection the database closes during its handshake (sqlx reads an
/// empty answer to its TLS request and calls it a protocol error) is the
/// database being unreachable, like a refused or reset connection: 503
/// with `Retry-After`, never a 500. Seen once in CI during a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_postgres_tests,
    ignore = "PostgreSQL test skipped: set KEYSMITH_TEST_POSTGRES_URL (CI sets it)"
)]
async fn a_database_that_hangs_up_mid_handshake_is_unavailable_not_an_error() {
    let admin = url::Url::parse(&crate::harness::postgres_admin_url()).unwrap();
    let upstream = tokio::net::lookup_host((
        admin.host_str().unwrap().to_string(),
        admin.port().unwrap_or(5432),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let relay = Relay::to(upstream).await;
    let port = relay.port;
    let app = TestApp::spawn_reaching_db(Backend::Postgres, &[], move |url| {
        let mut url = url::Url::parse(url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(port)).unwrap();
        url.to_string()
    })
    .await;
    app.signed_in_superuser("ada@example.com").await;
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let (status, body) = create_with(&app, &csrf, "before").await;
    assert_eq!(status, 201, "{body}");

    relay.cut();
    for i in 0..3 {
        let r = app
            .client
            .post(app.url("/api/user/api-keys"))
            .header("x-csrf-token", &csrf)
            .json(&json!({ "label": format!("while cut {i}"), "scopes": ["read"] }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").cloned();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 503, "a write while the database hangs up: {body}");
        assert!(retry_after.is_some(), "a 503 says when to try again");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("not answering"),
            "{body}"
        );
    }
    let page = app.get("/settings/api-tokens").await;
    assert_eq!(page.status(), 503, "the page while the database hangs up");
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");

    relay.mend();
    let (status, body) = create_with(&app, &csrf, "after").await;
    assert_eq!(
        status, 201,
        "a write once the database answers again: {body}"
    );
    assert_eq!(readyz(&app).await.0, 200);
}

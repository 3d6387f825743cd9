//! The test harness: fresh databases on both backends, the real server on a
//! random port, and a cookie-keeping HTTP client that does not follow redirects.

use std::collections::HashMap;

use keysmith::app::{self, AppState, RunningServer};
use keysmith::config::Config;
use keysmith::store::Db;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed `async fn name(backend: Backend)` once per backend, as
/// `sqlite::name` and `postgres::name`. Without KEYSMITH_TEST_POSTGRES_URL
/// (and outside CI) the PostgreSQL copies show up as ignored, with the reason.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(skip_postgres_tests, ignore = "PostgreSQL test skipped: set KEYSMITH_TEST_POSTGRES_URL (CI sets it)")]
                async fn $name() {
                    super::$name($crate::harness::Backend::Postgres).await
                }
            )*
        }
    };
    // One attribute for every test on both backends, e.g. a further
    // `cfg_attr(skip_…, ignore = "…")` for tests that need another program.
    (#[$attr:meta] $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[$attr]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(skip_postgres_tests, ignore = "PostgreSQL test skipped: set KEYSMITH_TEST_POSTGRES_URL (CI sets it)")]
                // One reason is enough (a second `ignore` is a warning).
                #[cfg_attr(not(skip_postgres_tests), $attr)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A database that exists for one test: a SQLite file in a temporary
/// directory, or a uniquely named PostgreSQL database dropped afterwards.
pub struct TestDb {
    pub url: String,
    pg: Option<(String, String)>,
    _dir: Option<TempDir>,
}

pub fn postgres_admin_url() -> String {
    std::env::var("KEYSMITH_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "KEYSMITH_TEST_POSTGRES_URL is not set; PostgreSQL tests need it \
             (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
        )
    })
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("keysmith.db").display());
                TestDb {
                    url,
                    pg: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("keysmith_test_{}", random_suffix());
                run_admin_sql(&admin, &format!("CREATE DATABASE \"{name}\"")).await;
                let mut url =
                    url::Url::parse(&admin).expect("KEYSMITH_TEST_POSTGRES_URL is not a URL");
                url.set_path(&format!("/{name}"));
                TestDb {
                    url: url.to_string(),
                    pg: Some((admin, name)),
                    _dir: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Drop runs outside any runtime we may block; use a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(run_admin_sql(
                    &admin,
                    &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                ));
            })
            .join();
        }
    }
}

async fn run_admin_sql(admin_url: &str, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at KEYSMITH_TEST_POSTGRES_URL: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub fn random_suffix() -> String {
    use rand::TryRng;
    let mut b = [0u8; 8];
    rand::rngs::SysRng.try_fill_bytes(&mut b).unwrap();
    hex::encode(b)
}

/// The real server, started in-process on a random port.
pub struct TestApp {
    pub base_url: String,
    pub setup_url: Option<String>,
    pub data_dir: std::path::PathBuf,
    pub state: AppState,
    pub client: reqwest::Client,
    server: Option<RunningServer>,
    env: HashMap<String, String>,
    _dir: TempDir,
    _test_db: TestDb,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, &[]).await
    }

    /// Starts with extra configuration variables on top of the test defaults.
    pub async fn spawn_with(backend: Backend, vars: &[(&str, &str)]) -> TestApp {
        Self::spawn_reaching_db(backend, vars, |url| url.to_string()).await
    }

    /// Starts with the fresh database reached at `reach(url)` instead of
    /// its own URL (e.g. through a relay the test controls).
    pub async fn spawn_reaching_db(
        backend: Backend,
        vars: &[(&str, &str)],
        reach: impl FnOnce(&str) -> String,
    ) -> TestApp {
        let test_db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let mut env: HashMap<String, String> = HashMap::from([
            ("KEYSMITH_CONFIG".into(), "/dev/null".into()),
            ("KEYSMITH_ADDR".into(), "127.0.0.1:0".into()),
            ("DATABASE_URL".into(), reach(&test_db.url)),
            ("KEYSMITH_DATA_DIR".into(), data_dir.display().to_string()),
        ]);
        for (k, v) in vars {
            env.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_vars(&env).expect("test configuration");
        let server = app::start(config).await.expect("server starts");
        let base_url = format!("http://{}", server.addr);
        let setup_url = server.setup_url.clone();
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        TestApp {
            base_url,
            setup_url,
            data_dir,
            state: server.state.clone(),
            client,
            server: Some(server),
            env,
            _dir: dir,
            _test_db: test_db,
        }
    }

    /// Stops the server and starts a new one on the same database and data
    /// directory (a restart, or a deploy). The client keeps its cookies.
    pub async fn restart(mut self) -> TestApp {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
        let config = Config::from_vars(&self.env).expect("test configuration");
        let server = app::start(config).await.expect("server restarts");
        self.base_url = format!("http://{}", server.addr);
        self.state = server.state.clone();
        self.setup_url = server.setup_url.clone();
        self.server = Some(server);
        self
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A fresh cookie-keeping client that does not follow redirects.
pub fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `<meta name="csrf-token">` of a page.
pub fn csrf_of(html: &str) -> String {
    let marker = "<meta name=\"csrf-token\" content=\"";
    let start = html.find(marker).expect("page has a csrf-token meta tag") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

impl TestApp {
    /// Loads `path` with `client` and returns the CSRF token of the page.
    pub async fn csrf_with(&self, client: &reqwest::Client, path: &str) -> String {
        let html = client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        csrf_of(&html)
    }

    /// POSTs a form with `client`, adding the CSRF token of the page at `page`.
    pub async fn post_form_with(
        &self,
        client: &reqwest::Client,
        page: &str,
        path: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let csrf = self.csrf_with(client, page).await;
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf_token", &csrf));
        client
            .post(self.url(path))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Messages in the development outbox, newest first.
    pub async fn dev_mail(&self) -> Vec<keysmith::mail::transport::DevMailMeta> {
        keysmith::mail::transport::list_dev_mail(&self.data_dir.join("mail")).await
    }

    /// Waits (up to 10 s) until the development outbox holds `count` messages to `to`.
    pub async fn wait_for_dev_mail(
        &self,
        to: &str,
        count: usize,
    ) -> Vec<keysmith::mail::transport::DevMailMeta> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mail: Vec<_> = self
                .dev_mail()
                .await
                .into_iter()
                .filter(|m| m.to == to)
                .collect();
            if mail.len() >= count {
                return mail;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no mail to {to} arrived (have {})",
                mail.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Signs `client` in as `email` (an existing, active user) through the
    /// real flow: request a link, read it from the outbox, press the button.
    pub async fn sign_in_with(&self, client: &reqwest::Client, email: &str) {
        let seen: std::collections::HashSet<String> = self
            .dev_mail()
            .await
            .into_iter()
            .filter(|m| m.to == email)
            .map(|m| m.file)
            .collect();
        let r = self
            .post_form_with(client, "/signin", "/signin", &[("email", email)])
            .await;
        assert_eq!(r.status(), 200, "sign-in request accepted");
        // The sign-in mail, not whichever mail came next: a notification
        // queued earlier (a token created, say) may be delivered meanwhile,
        // and its first link is a one-click revoke.
        let sign_in = format!("{}/signin/link/", self.base_url);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let link = loop {
            let mail = self.wait_for_dev_mail(email, seen.len() + 1).await;
            if let Some(link) = mail
                .iter()
                .filter(|m| !seen.contains(&m.file))
                .flat_map(|m| &m.links)
                .find(|l| l.starts_with(&sign_in))
            {
                break link.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no sign-in mail to {email} arrived"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let path = link
            .strip_prefix(&self.base_url)
            .expect("link points at this server")
            .to_string();
        let r = self.post_form_with(client, &path, &path, &[]).await;
        assert_eq!(r.status(), 303, "link accepted: {:?}", r.text().await);
    }

    pub async fn sign_in(&self, email: &str) {
        self.sign_in_with(&self.client, email).await
    }
}

/// A real SMTP server process (Python's aiosmtpd) writing to a Maildir.
pub struct SmtpServer {
    pub port: u16,
    dir: TempDir,
    child: Option<std::process::Child>,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = SmtpServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    /// Starts the process (again) on the same port and Maildir.
    pub fn restart(&mut self) {
        let maildir = self.dir.path().join("maildir");
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{}", self.port),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "aiosmtpd did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, raw.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.dir.path().join("maildir").join(sub)) {
                for e in entries.flatten() {
                    out.push(std::fs::read(e.path()).unwrap());
                }
            }
        }
        out
    }

    /// Waits (up to 15 s) for at least `count` messages.
    pub async fn wait_for(&self, count: usize) -> Vec<Vec<u8>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let m = self.messages();
            if m.len() >= count {
                return m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {count} messages arrived",
                m.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestApp {
    /// Bootstraps "Acme" with `email` as superuser and signs the app's client in.
    pub async fn signed_in_superuser(&self, email: &str) -> keysmith::store::orgs::Bootstrapped {
        let b = keysmith::store::orgs::bootstrap(
            self.db(),
            &keysmith::domain::OrgName::parse("Acme").unwrap(),
            &keysmith::domain::EmailAddress::parse(email).unwrap(),
        )
        .await
        .unwrap();
        self.sign_in(email).await;
        b
    }

    /// A JSON request to the session API with the page's CSRF token.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let csrf = self.csrf_with(&self.client, "/settings/api-tokens").await;
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("x-csrf-token", csrf);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    /// Status of `GET /api/v2/whoami` with this bearer token.
    pub async fn whoami_status(&self, token: &str) -> u16 {
        new_client()
            .get(self.url("/api/v2/whoami"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Creates a token through the JSON API; returns (id, plaintext).
    pub async fn create_key(&self, label: &str) -> (i64, String) {
        let r = self
            .api(
                reqwest::Method::POST,
                "/api/user/api-keys",
                Some(serde_json::json!({ "label": label, "scopes": ["write"] })),
            )
            .await;
        assert_eq!(r.status(), 201);
        let body: serde_json::Value = r.json().await.unwrap();
        (
            body["id"].as_i64().unwrap(),
            body["plaintext"].as_str().unwrap().to_string(),
        )
    }

    /// Audit actions recorded for a token, oldest first.
    pub async fn audit_actions(
        &self,
        token_id: i64,
    ) -> Vec<(String, Option<String>, Option<String>, Option<i64>)> {
        sqlx::query_as("SELECT action, ip, user_agent, actor_user_id FROM audit_events WHERE token_id = $1 ORDER BY id")
            .bind(token_id)
            .fetch_all(self.db().pool())
            .await
            .unwrap()
    }
}

impl TestApp {
    /// Signs the app's client in with a link minted directly (as
    /// `keysmith signin-link` does), for tests whose mail goes to SMTP.
    pub async fn sign_in_direct(&self, email: &str) {
        let url = keysmith::auth::signin::issue_signin_link(
            self.db(),
            &self.state.config,
            &self.state.clock,
            &keysmith::domain::EmailAddress::parse(email).unwrap(),
            None,
        )
        .await
        .unwrap();
        let path = url
            .strip_prefix(&self.base_url)
            .expect("link points at this server")
            .to_string();
        let r = self.post_form_with(&self.client, &path, &path, &[]).await;
        assert_eq!(r.status(), 303);
    }

    /// Bootstraps "Acme" with `email` as superuser, signed in without email.
    pub async fn superuser_direct(&self, email: &str) -> keysmith::store::orgs::Bootstrapped {
        let b = keysmith::store::orgs::bootstrap(
            self.db(),
            &keysmith::domain::OrgName::parse("Acme").unwrap(),
            &keysmith::domain::EmailAddress::parse(email).unwrap(),
        )
        .await
        .unwrap();
        self.sign_in_direct(email).await;
        b
    }
}

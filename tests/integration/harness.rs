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
    pub state: AppState,
    pub client: reqwest::Client,
    server: Option<RunningServer>,
    _dir: TempDir,
    _test_db: TestDb,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, &[]).await
    }

    /// Starts with extra configuration variables on top of the test defaults.
    pub async fn spawn_with(backend: Backend, vars: &[(&str, &str)]) -> TestApp {
        let test_db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let mut env: HashMap<String, String> = HashMap::from([
            ("KEYSMITH_CONFIG".into(), "/dev/null".into()),
            ("KEYSMITH_ADDR".into(), "127.0.0.1:0".into()),
            ("DATABASE_URL".into(), test_db.url.clone()),
            ("KEYSMITH_DATA_DIR".into(), data_dir.display().to_string()),
        ]);
        for (k, v) in vars {
            env.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_vars(&env).expect("test configuration");
        let server = app::start(config).await.expect("server starts");
        let base_url = format!("http://{}", server.addr);
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        TestApp {
            base_url,
            state: server.state.clone(),
            client,
            server: Some(server),
            _dir: dir,
            _test_db: test_db,
        }
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

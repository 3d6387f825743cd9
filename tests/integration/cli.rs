//! The `keysmith` binary as an operator runs it: commands, start-up from any
//! directory, and one clear line for bad configuration.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::backend_tests;
use crate::harness::{Backend, TestDb};

/// The binary with a clean environment: only what the test sets.
fn keysmith(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keysmith"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a failed start: the exit code, and exactly one line on stderr that contains `needle`.
fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let (_, err) = text(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(
        lines[0].starts_with("keysmith: ") && lines[0].contains(needle),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

backend_tests!(
    bootstrap_then_signin_link_on_a_fresh_database,
    mail_status_lists_failed_mail_and_retry_requeues_it
);

async fn mail_status_lists_failed_mail_and_retry_requeues_it(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        keysmith(dir.path())
            .env("DATABASE_URL", &test_db.url)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["migrate"]).status.success());
    let (stdout, _) = text(&run(&["mail", "status"]));
    assert!(stdout.contains("All mail has been delivered."), "{stdout}");

    let db = keysmith::store::Db::connect(
        &keysmith::config::DatabaseUrl::parse(&test_db.url).unwrap(),
        &keysmith::store::PoolSettings::default(),
    )
    .await
    .unwrap();
    let mut tx = db.begin().await.unwrap();
    let id = keysmith::store::outbox::enqueue(
        &mut tx,
        "sign_in",
        "ada@example.com",
        "{}",
        1_700_000_000,
    )
    .await
    .unwrap();
    keysmith::store::outbox::enqueue(
        &mut tx,
        "token_created",
        "bob@example.com",
        "{}",
        1_700_000_000,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    keysmith::store::outbox::mark_failed(&db, id, "connection refused", 1_700_000_100)
        .await
        .unwrap();
    db.close().await;

    let (stdout, _) = text(&run(&["mail", "status"]));
    assert!(
        stdout.contains("FAILED")
            && stdout.contains("connection refused")
            && stdout.contains("ada@example.com"),
        "{stdout}"
    );
    assert!(stdout.contains("1 pending, 1 failed."), "{stdout}");
    let (stdout, _) = text(&run(&["mail", "retry"]));
    assert!(stdout.contains("Requeued 1 failed message."), "{stdout}");
    let (stdout, _) = text(&run(&["mail", "status"]));
    assert!(stdout.contains("2 pending, 0 failed."), "{stdout}");
}

async fn bootstrap_then_signin_link_on_a_fresh_database(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        keysmith(dir.path())
            .env("DATABASE_URL", &db.url)
            .env("KEYSMITH_PUBLIC_URL", "https://keys.example.com")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["bootstrap", "--org", "Acme", "--email", "Ada@Example.com"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("Created organization \"Acme\"") && stdout.contains("ada@example.com"),
        "{stdout}"
    );

    let again = run(&["bootstrap", "--org", "Acme", "--email", "ada@example.com"]);
    let (stdout, _) = text(&again);
    assert!(again.status.success());
    assert!(stdout.contains("already set up"), "{stdout}");

    let link = run(&["signin-link", "ada@example.com"]);
    let (stdout, stderr) = text(&link);
    assert!(link.status.success(), "{stderr}");
    let url = stdout.trim();
    assert!(
        url.starts_with("https://keys.example.com/signin/link/") && url.len() > 60,
        "{url}"
    );
    assert!(
        !stderr.contains(url.rsplit('/').next().unwrap()),
        "the secret is printed once, on stdout"
    );

    let unknown = run(&["signin-link", "nobody@example.com"]);
    assert_one_line_error(
        &unknown,
        1,
        "no user has the email address nobody@example.com",
    );
}

#[test]
fn bad_cli_arguments_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = keysmith(dir.path())
        .args(["bootstrap", "--org", "Acme", "--email", "not-an-email"])
        .output()
        .unwrap();
    assert_one_line_error(&out, 2, "--email: An email address needs an @");
    let out = keysmith(dir.path())
        .args(["bootstrap", "--org", "  ", "--email", "a@b.co"])
        .output()
        .unwrap();
    assert_one_line_error(&out, 2, "--org: Enter an organization name");
    let out = keysmith(dir.path())
        .args(["bootstrap", "--org", "Acme"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("--email"),
        "clap names the missing flag"
    );
    // Nothing was created by refused commands.
    assert!(!dir.path().join("keysmith.db").exists());
}

#[test]
fn help_describes_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = keysmith(dir.path()).arg("--help").output().unwrap();
    let (stdout, _) = text(&out);
    for word in [
        "serve",
        "migrate",
        "bootstrap",
        "signin-link",
        "DATABASE_URL",
    ] {
        assert!(stdout.contains(word), "--help lacks {word}: {stdout}");
    }
    let out = keysmith(dir.path())
        .args(["bootstrap", "--help"])
        .output()
        .unwrap();
    assert!(text(&out).0.contains("--org <NAME>"));
}

#[test]
fn unparsable_database_url_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (url, needle) in [
        (
            "mysql://root@localhost/keys",
            "DATABASE_URL: unsupported scheme \"mysql\"",
        ),
        ("::::", "DATABASE_URL:"),
        ("postgres://%zz@/", "DATABASE_URL:"),
    ] {
        let out = keysmith(dir.path())
            .env("DATABASE_URL", url)
            .output()
            .unwrap();
        assert_one_line_error(&out, 2, needle);
    }
}

#[test]
fn unknown_scope_in_includes_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keysmith.toml"),
        "[[scopes]]\nname = \"read\"\n[[scopes]]\nname = \"write\"\nincludes = [\"read\", \"admin\"]\n",
    )
    .unwrap();
    let out = keysmith(dir.path()).output().unwrap();
    assert_one_line_error(&out, 2, "\"admin\"");
}

#[test]
fn bad_environment_values_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("KEYSMITH_ADDR", "localhost:99999"),
        ("KEYSMITH_PUBLIC_URL", "keys.example.com"),
        ("KEYSMITH_SMTP_URL", "http://mail"),
        ("KEYSMITH_TOKEN_PREFIX", "Has Spaces"),
        ("KEYSMITH_MAIL_FROM", "not a mailbox"),
        ("KEYSMITH_LOG_FORMAT", "xml"),
        ("KEYSMITH_LOG", "keysmith=loud"),
    ] {
        let out = keysmith(dir.path()).env(var, value).output().unwrap();
        assert_one_line_error(&out, 2, var);
    }
}

#[test]
fn port_in_use_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = keysmith(dir.path())
        .env("KEYSMITH_ADDR", &addr)
        .output()
        .unwrap();
    assert_one_line_error(&out, 1, &format!("cannot listen on {addr}"));
}

#[test]
fn unreachable_postgres_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = keysmith(dir.path())
        .env(
            "DATABASE_URL",
            format!("postgres://keysmith:s3cretpw@127.0.0.1:{port}/keys"),
        )
        .output()
        .unwrap();
    assert_one_line_error(&out, 1, "cannot open the database");
    assert!(
        !text(&out).1.contains("s3cretpw"),
        "the password is never printed"
    );
}

#[test]
fn migrate_command_applies_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = keysmith(dir.path()).arg("migrate").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("up to date"), "{stdout}");
    assert!(dir.path().join("keysmith.db").exists());
}

/// `keysmith` with no arguments, run from an unrelated directory: creates its
/// SQLite file there, serves health and the embedded assets, stops on SIGTERM.
#[test]
fn serve_from_any_directory_creates_sqlite_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = keysmith(dir.path())
        .env("KEYSMITH_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let healthz = loop {
        match blocking_get(&format!("{base}/healthz")) {
            Some(r) => break r,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => {
                let _ = child.kill();
                panic!(
                    "server did not start: {:?}",
                    child.wait_with_output().map(|o| text(&o))
                );
            }
        }
    };
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert!(
        blocking_get(&format!("{base}/readyz"))
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    let css = blocking_get(&format!("{base}/static/app.css")).unwrap();
    assert!(
        css.starts_with("HTTP/1.1 200") && css.contains("text/css"),
        "{css}"
    );
    assert!(
        dir.path().join("keysmith.db").exists(),
        "SQLite file created in the working directory"
    );

    // SIGTERM: graceful shutdown, exit status 0.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(
        stdout.contains(&format!("Keysmith is running at http://127.0.0.1:{port}/")),
        "{stdout}"
    );
}

/// A tiny HTTP/1.1 GET without a client library, so this test stays synchronous.
fn blocking_get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf).ok()?;
    Some(buf)
}

/// The real binary with debug logging: after creating a token and using it
/// (also wrongly, in the query string), the plaintext appears in no log line.
#[tokio::test]
async fn plaintext_tokens_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let run = |args: &[&str]| {
        keysmith(dir.path())
            .env("KEYSMITH_PUBLIC_URL", &base)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        run(&["bootstrap", "--org", "Acme", "--email", "ada@example.com"])
            .status
            .success()
    );
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = keysmith(dir.path())
        .env("KEYSMITH_ADDR", format!("127.0.0.1:{port}"))
        .env("KEYSMITH_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while blocking_get(&format!("{base}/healthz")).is_none() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let link = text(&run(&["signin-link", "ada@example.com"]))
        .0
        .trim()
        .to_string();
    let client = crate::harness::new_client();
    let page = client
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = client
        .post(&link)
        .form(&[("csrf_token", crate::harness::csrf_of(&page))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let page = client
        .get(format!("{base}/settings/api-tokens"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = client
        .post(format!("{base}/api/user/api-keys"))
        .header("x-csrf-token", crate::harness::csrf_of(&page))
        .json(&serde_json::json!({ "label": "secret keeper" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<serde_json::Value>().await.unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string();
    let plain = crate::harness::new_client();
    assert_eq!(
        plain
            .get(format!("{base}/api/v2/whoami"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = plain
        .get(format!("{base}/api/v2/whoami?access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a token in the query string never authenticates"
    );
    // Let the mail worker and the last-used flusher run, then stop.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("/api/user/api-keys") && logs.contains("/api/v2/whoami"),
        "the requests were logged:\n{logs}"
    );
    let body = &token[token.find('_').unwrap() + 1..];
    assert!(
        !logs.contains(body),
        "the token leaked into the logs:\n{logs}"
    );
}

/// `KEYSMITH_LOG_FORMAT=json`: every line the server logs is one JSON
/// object with a time, a level and a message, including request logs.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = keysmith(dir.path())
        .env("KEYSMITH_ADDR", format!("127.0.0.1:{port}"))
        .env("KEYSMITH_LOG_FORMAT", "json")
        .env("KEYSMITH_LOG", "keysmith=info,tower_http=debug,warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while blocking_get(&format!("{base}/healthz")).is_none() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        blocking_get(&format!("{base}/no-such-page"))
            .unwrap()
            .starts_with("HTTP/1.1 404")
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let logged = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = logged.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() >= 3,
        "start-up, requests and shutdown are logged: {logged}"
    );
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(event[field].is_string(), "no {field}: {line}");
        }
        assert!(event["message"].is_string(), "no message: {line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"status\":404") || l.contains("\"status\":\"404")),
        "the 404 request is logged with its status: {logged}"
    );
}

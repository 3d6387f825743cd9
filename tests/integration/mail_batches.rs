//! The outbox under load: batched claims, concurrent deliveries over pooled
//! SMTP connections, batched outcome updates. The guarantees stay those of
//! one message at a time: a refused message is retried while the rest of
//! its batch goes out, a restart in the middle of a batch loses nothing and
//! repeats only what was in flight, two instances on one PostgreSQL
//! database never send the same message, and a pooled connection the
//! server dropped costs no retry.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keysmith::mail::Mail;
use mail_parser::MessageParser;

use crate::backend_tests;
use crate::harness::{Backend, SmtpServer, TestApp};

/// aiosmtpd that refuses, at RCPT, any address starting with `refuse`
/// while the file `refuse` exists, and in DATA stores the message as
/// `new/N.eml`, then waits the seconds written in `delay` if that exists.
const SINK: &str = r#"
import asyncio, itertools, pathlib, sys, time
from aiosmtpd.controller import Controller
port, folder = int(sys.argv[1]), pathlib.Path(sys.argv[2])
(folder / "new").mkdir(exist_ok=True)
(folder / "tmp").mkdir(exist_ok=True)
counter = itertools.count(1)
class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse") and (folder / "refuse").exists():
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"
    async def handle_DATA(self, server, session, envelope):
        name = f"{next(counter)}.eml"
        (folder / "tmp" / name).write_bytes(envelope.original_content)
        (folder / "tmp" / name).rename(folder / "new" / name)
        delay = folder / "delay"
        if delay.exists():
            await asyncio.sleep(float(delay.read_text()))
        return "250 OK"
Controller(Handler(), hostname="127.0.0.1", port=port).start()
while True:
    time.sleep(3600)
"#;

struct Sink {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Sink {
    fn start() -> Sink {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("python3")
            .args(["-c", SINK, &port.to_string()])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the SMTP server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sink { port, dir, child }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn flag(&self, name: &str, value: Option<&str>) {
        let path = self.dir.path().join(name);
        match value {
            Some(v) => std::fs::write(path, v).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn messages(&self) -> Vec<Vec<u8>> {
        maildir_messages(&self.dir.path().join("new"))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn maildir_messages(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect()
}

/// How many times each Message-ID (without the angle brackets) arrived.
fn by_message_id(raw: &[Vec<u8>]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for m in raw {
        let id = MessageParser::default()
            .parse(m)
            .and_then(|m| m.message_id().map(str::to_string))
            .expect("a Message-ID");
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

async fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An organization for the notices to name.
async fn organization(app: &TestApp) -> i64 {
    keysmith::store::orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Acme").unwrap(),
        &keysmith::domain::EmailAddress::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap()
    .organization
    .id
}

/// Writes one "permission restored" notice per recipient in one
/// transaction, as a change reporting to many members would.
async fn enqueue(app: &TestApp, organization_id: i64, recipients: &[String]) {
    let mail = Mail::PermissionRestored {
        organization_id,
        actor: "ada@example.com".into(),
    };
    let mut tx = app.db().begin().await.unwrap();
    for to in recipients {
        keysmith::mail::enqueue(&mut tx, to, &mail, app.state.clock.unix())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    app.state.mail.wake();
}

fn recipients(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("member{i}@example.com")).collect()
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    recipient: String,
    attempts: i64,
    sent_at: Option<i64>,
    failed_at: Option<i64>,
    next_attempt_at: i64,
    locked_until: Option<i64>,
    message_id: Option<String>,
    last_error: Option<String>,
}

async fn outbox_rows(app: &TestApp) -> Vec<Row> {
    sqlx::query_as(
        "SELECT id, recipient, attempts, sent_at, failed_at, next_attempt_at, locked_until, \
         message_id, last_error FROM mail_outbox WHERE template = 'permission_restored' ORDER BY id",
    )
    .fetch_all(app.db().pool())
    .await
    .unwrap()
}

/// Message-IDs as stored, without the angle brackets the header has.
fn stored_id(row: &Row) -> String {
    row.message_id
        .as_deref()
        .unwrap_or_else(|| panic!("row {} has no Message-ID", row.id))
        .trim_matches(['<', '>'])
        .to_string()
}

backend_tests!(
    #[cfg_attr(
        skip_smtp_tests,
        ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
    )]
    a_refused_message_is_retried_and_the_rest_of_its_batch_is_delivered,
    a_restart_mid_batch_loses_nothing_and_repeats_only_what_was_in_flight,
    a_pooled_connection_the_server_dropped_is_replaced_without_a_retry,
);

async fn a_refused_message_is_retried_and_the_rest_of_its_batch_is_delivered(backend: Backend) {
    let sink = Sink::start();
    sink.flag("refuse", Some(""));
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_SMTP_URL", &sink.url())]).await;
    let org = organization(&app).await;
    let mut to = recipients(24);
    to[5] = "refuse-me@example.com".into();
    enqueue(&app, org, &to).await;

    wait_until("23 of 24 delivered", 15, || sink.messages().len() >= 23).await;
    // The refused one's outcome is written with the others'.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = outbox_rows(&app).await;
        if rows
            .iter()
            .all(|r| r.sent_at.is_some() || r.last_error.is_some())
        {
            break rows;
        }
        assert!(Instant::now() < deadline, "outcomes not recorded: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let now = app.state.clock.unix();
    let arrived = by_message_id(&sink.messages());
    for row in &rows {
        if row.recipient == "refuse-me@example.com" {
            assert_eq!((row.sent_at, row.failed_at), (None, None), "{row:?}");
            assert_eq!(row.attempts, 1, "{row:?}");
            assert_eq!(row.locked_until, None, "released: {row:?}");
            assert!(
                row.last_error.as_deref().is_some_and(|e| e.contains("550")),
                "the server's answer is kept: {row:?}"
            );
            assert!(row.next_attempt_at > now, "waits its backoff: {row:?}");
        } else {
            assert!(row.sent_at.is_some(), "{row:?}");
            assert_eq!(row.attempts, 1, "{row:?}");
            assert_eq!(arrived.get(&stored_id(row)), Some(&1), "{row:?}");
        }
    }
    assert_eq!(arrived.len(), 23);

    // Once the server takes it, the retry delivers it (and nothing else again).
    sink.flag("refuse", None);
    app.state.clock.advance(Duration::from_secs(3600));
    app.state.mail.wake();
    wait_until("the refused message retried", 15, || {
        sink.messages().len() >= 24
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrived = by_message_id(&sink.messages());
    assert_eq!(arrived.len(), 24);
    assert!(arrived.values().all(|n| *n == 1), "{arrived:?}");
    let refused = outbox_rows(&app)
        .await
        .into_iter()
        .find(|r| r.recipient == "refuse-me@example.com")
        .unwrap();
    assert_eq!(refused.attempts, 2);
    assert!(refused.sent_at.is_some());
    assert_eq!(arrived.get(&stored_id(&refused)), Some(&1));
    app.shutdown().await;
}

async fn a_restart_mid_batch_loses_nothing_and_repeats_only_what_was_in_flight(backend: Backend) {
    const MESSAGES: usize = 80;
    const CONCURRENCY: usize = 4;
    let sink = Sink::start();
    // Each message takes the server a while, so the restart finds
    // deliveries in flight and claimed messages waiting behind them.
    sink.flag("delay", Some("0.2"));
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_SMTP_URL", &sink.url()),
            ("KEYSMITH_MAIL_CONCURRENCY", &CONCURRENCY.to_string()),
        ],
    )
    .await;
    let org = organization(&app).await;
    enqueue(&app, org, &recipients(MESSAGES)).await;
    wait_until("a first few delivered", 15, || sink.messages().len() >= 10).await;

    let started = Instant::now();
    let app = app.restart().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    sink.flag("delay", None);
    // Interrupted messages are due at once: no clock advance, no backoff.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = outbox_rows(&app).await;
        if rows.iter().all(|r| r.sent_at.is_some()) {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "not all sent after the restart: {:?}",
            rows.iter()
                .filter(|r| r.sent_at.is_none())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows.len(), MESSAGES);
    let arrived = by_message_id(&sink.messages());
    for row in &rows {
        assert!(
            arrived.contains_key(&stored_id(row)),
            "lost: {row:?} (stored as sent, never arrived)"
        );
        assert!(row.attempts <= 2, "{row:?}");
    }
    assert_eq!(arrived.len(), MESSAGES, "nothing but the outbox's messages");
    // Only a message the server was holding when the worker stopped can
    // arrive twice (with its one Message-ID), and only it counts a second
    // attempt: claimed messages that were not started yet go back as they
    // were.
    let twice = arrived.values().filter(|n| **n > 1).count();
    assert!(twice <= CONCURRENCY, "{twice} arrived twice: {arrived:?}");
    assert!(arrived.values().all(|n| *n <= 2), "{arrived:?}");
    let retried = rows.iter().filter(|r| r.attempts == 2).count();
    assert!(
        retried <= CONCURRENCY,
        "{retried} messages counted a second attempt"
    );
    app.shutdown().await;
}

async fn a_pooled_connection_the_server_dropped_is_replaced_without_a_retry(backend: Backend) {
    let mut smtp = SmtpServer::start();
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_SMTP_URL", &smtp.url())]).await;
    let org = organization(&app).await;
    enqueue(&app, org, &recipients(1)).await;
    smtp.wait_for(1).await;
    // The pooled connection dies with the server.
    smtp.stop();
    smtp.restart();
    let started = Instant::now();
    enqueue(&app, org, &["later@example.com".into()]).await;
    smtp.wait_for(2).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}: a backoff instead of a new connection",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = outbox_rows(&app).await;
        if rows.iter().all(|r| r.sent_at.is_some()) {
            assert!(rows.iter().all(|r| r.attempts == 1), "{rows:?}");
            assert!(rows.iter().all(|r| r.last_error.is_none()), "{rows:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await;
}

/// A second Keysmith instance on the database of `app`, sending to `smtp_url`.
async fn second_instance(
    app: &TestApp,
    smtp_url: &str,
    data_dir: &Path,
) -> keysmith::app::RunningServer {
    let env: HashMap<String, String> = HashMap::from([
        ("KEYSMITH_CONFIG".into(), "/dev/null".into()),
        ("KEYSMITH_ADDR".into(), "127.0.0.1:0".into()),
        (
            "DATABASE_URL".into(),
            app.state.config.database_url.connect_url().to_string(),
        ),
        ("KEYSMITH_DATA_DIR".into(), data_dir.display().to_string()),
        ("KEYSMITH_SMTP_URL".into(), smtp_url.into()),
    ]);
    let config = keysmith::config::Config::from_vars(&env).expect("configuration");
    keysmith::app::start(config)
        .await
        .expect("second instance starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(skip_smtp_tests, skip_postgres_tests),
    ignore = "SMTP/PostgreSQL test skipped: needs aiosmtpd and KEYSMITH_TEST_POSTGRES_URL (CI has both)"
)]
async fn two_instances_on_one_postgres_database_send_each_message_exactly_once() {
    const MESSAGES: usize = 400;
    // One sink per instance, so that each one's share can be told apart.
    let (first_sink, second_sink) = (Sink::start(), Sink::start());
    let app = TestApp::spawn_with(
        Backend::Postgres,
        &[("KEYSMITH_SMTP_URL", &first_sink.url())],
    )
    .await;
    let data = tempfile::tempdir().unwrap();
    let second = second_instance(&app, &second_sink.url(), data.path()).await;
    let org = organization(&app).await;
    enqueue(&app, org, &recipients(MESSAGES)).await;
    second.state.mail.wake();

    wait_until("every message arrived somewhere", 60, || {
        first_sink.messages().len() + second_sink.messages().len() >= MESSAGES
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = outbox_rows(&app).await;
        if rows.iter().all(|r| r.sent_at.is_some()) {
            break rows;
        }
        assert!(Instant::now() < deadline, "not all recorded as sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A moment for a duplicate, if there were one, to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = by_message_id(&first_sink.messages());
    let second_got = by_message_id(&second_sink.messages());
    assert!(
        !first.is_empty() && !second_got.is_empty(),
        "both instances took part: {} and {}",
        first.len(),
        second_got.len()
    );
    for row in &rows {
        let id = stored_id(row);
        let copies = first.get(&id).unwrap_or(&0) + second_got.get(&id).unwrap_or(&0);
        assert_eq!(copies, 1, "{row:?} arrived {copies} times");
        assert_eq!(row.attempts, 1, "{row:?}");
    }
    assert_eq!(first.len() + second_got.len(), MESSAGES);
    second.shutdown().await.expect("clean shutdown");
    app.shutdown().await;
}

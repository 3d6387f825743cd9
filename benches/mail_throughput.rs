//! Benchmark: how fast the outbox worker empties a backlog into a local
//! SMTP sink (aiosmtpd, counting what it receives), on SQLite and
//! PostgreSQL, against references measured in the same run on the same
//! sink: Python's smtplib sending messages of the same size one after
//! another over one connection (the sink's own rate with a trivial
//! client), and a plain loop over lettre's pooled `AsyncSmtpTransport`
//! (what the worker used before).
//!
//!     cargo bench --bench mail_throughput
//!     MESSAGES=2000 ROUNDS=5 BACKENDS=sqlite cargo bench --bench mail_throughput
//!
//! Needs python3 with aiosmtpd; PostgreSQL at BENCH_POSTGRES_URL (default
//! postgres://postgres@127.0.0.1:5432/postgres), where it creates and drops
//! a database of its own. Everything runs on 127.0.0.1 and every run is
//! bounded in time. Per round it prints each rate and the ratio of the
//! outbox's to smtplib's; at the end the medians.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keysmith::app::{self, RunningServer};
use keysmith::config::Config;
use keysmith::domain::{EmailAddress, OrgName};
use keysmith::mail::Mail;
use keysmith::store::orgs;

/// aiosmtpd that keeps nothing but counts: messages and bytes, written to
/// `stats` every 20 ms.
const SINK: &str = r#"
import pathlib, sys, threading, time
from aiosmtpd.controller import Controller
port, stats = int(sys.argv[1]), pathlib.Path(sys.argv[2])
count = [0, 0]
class Handler:
    async def handle_DATA(self, server, session, envelope):
        count[0] += 1
        count[1] += len(envelope.original_content)
        return "250 OK"
Controller(Handler(), hostname="127.0.0.1", port=port).start()
while True:
    tmp = stats.with_suffix(".tmp")
    tmp.write_text(f"{count[0]} {count[1]}")
    tmp.rename(stats)
    time.sleep(0.02)
"#;

/// smtplib over one connection: N messages of SIZE bytes; prints seconds.
const SMTPLIB: &str = r#"
import smtplib, sys, time
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
head = "From: bench@example.com\r\nTo: member@example.com\r\nSubject: bench\r\n\r\n"
line = "x" * 76 + "\r\n"
body = head + line * max(1, (size - len(head)) // len(line))
s = smtplib.SMTP("127.0.0.1", port)
s.ehlo()
t = time.perf_counter()
for i in range(n):
    s.sendmail("bench@example.com", ["member@example.com"], body)
print(time.perf_counter() - t)
s.quit()
"#;

struct Sink {
    port: u16,
    stats: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sink {
    fn start() -> Sink {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let stats = dir.path().join("stats");
        let child = Command::new("python3")
            .args(["-c", SINK, &port.to_string()])
            .arg(&stats)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !stats.exists() {
            assert!(Instant::now() < deadline, "the sink did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sink {
            port,
            stats,
            child,
            _dir: dir,
        }
    }

    /// (messages, bytes) received so far.
    fn received(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(&self.stats).unwrap_or_default();
        let mut it = text.split_whitespace().map(|n| n.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }

    /// The counts once they have stopped changing (the file is rewritten
    /// every 20 ms, so a fresh read may miss the last messages).
    fn settled(&self) -> (u64, u64) {
        let mut last = self.received();
        loop {
            std::thread::sleep(Duration::from_millis(60));
            let now = self.received();
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// Waits (bounded) until the sink has counted `count` messages.
    fn wait_for(&self, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.received().0 < count {
            assert!(
                Instant::now() < deadline,
                "the sink counted {} of {count}",
                self.received().0
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Messages a second from smtplib, one connection, messages of `size` bytes.
fn smtplib_rate(sink: &Sink, n: usize, size: u64) -> f64 {
    let before = sink.settled().0;
    let out = Command::new("python3")
        .args(["-c", SMTPLIB, &sink.port.to_string()])
        .arg(n.to_string())
        .arg(size.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    sink.wait_for(before + n as u64);
    n as f64 / secs
}

/// Messages a second from a loop over lettre's own pooled transport.
async fn lettre_loop_rate(sink: &Sink, n: usize, size: u64) -> f64 {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let line = "x".repeat(76);
    let lines = (size as usize / 78).max(1);
    let body = vec![line; lines].join("\r\n");
    let message = Message::builder()
        .from("bench@example.com".parse().unwrap())
        .to("member@example.com".parse().unwrap())
        .subject("bench")
        .body(body)
        .unwrap();
    let smtp = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port)
        .build();
    // The first one connects.
    smtp.send(message.clone()).await.unwrap();
    let before = sink.settled().0;
    let t = Instant::now();
    for _ in 0..n {
        smtp.send(message.clone()).await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    sink.wait_for(before + n as u64);
    n as f64 / secs
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

async fn admin_sql(url: &str, sql: String) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at BENCH_POSTGRES_URL: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// A fresh database for one run: its URL, and the PostgreSQL database to drop.
async fn fresh_database(backend: Backend, dir: &Path, pg_admin: &str) -> (String, Option<String>) {
    match backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.join("bench.db").display()), None),
        Backend::Postgres => {
            let name = format!("keysmith_mail_bench_{}", std::process::id());
            admin_sql(
                pg_admin,
                format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )
            .await;
            admin_sql(pg_admin, format!("CREATE DATABASE \"{name}\"")).await;
            let mut url = url::Url::parse(pg_admin).unwrap();
            url.set_path(&format!("/{name}"));
            (url.to_string(), Some(name))
        }
    }
}

/// Starts Keysmith on a fresh database, writes `n` notices to the outbox in
/// one transaction and times from its commit until every row is marked
/// sent and the sink has counted them all. Returns (messages a second,
/// mean bytes a message).
async fn outbox_rate(
    backend: Backend,
    sink: &Sink,
    n: usize,
    concurrency: usize,
    pg_admin: &str,
) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (db_url, pg_db) = fresh_database(backend, dir.path(), pg_admin).await;
    let env: HashMap<String, String> = HashMap::from([
        ("KEYSMITH_CONFIG".into(), "/dev/null".into()),
        ("KEYSMITH_ADDR".into(), "127.0.0.1:0".into()),
        ("DATABASE_URL".into(), db_url),
        (
            "KEYSMITH_DATA_DIR".into(),
            dir.path().join("data").display().to_string(),
        ),
        (
            "KEYSMITH_SMTP_URL".into(),
            format!("smtp://127.0.0.1:{}", sink.port),
        ),
        ("KEYSMITH_MAIL_CONCURRENCY".into(), concurrency.to_string()),
    ]);
    let server: RunningServer = app::start(Config::from_vars(&env).unwrap()).await.unwrap();
    let state = server.state.clone();
    let org = orgs::bootstrap(
        &state.db,
        &OrgName::parse("Acme").unwrap(),
        &EmailAddress::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap()
    .organization
    .id;
    let mail = Mail::PermissionRestored {
        organization_id: org,
        actor: "ada@example.com".into(),
    };
    let (before, bytes_before) = sink.settled();
    let mut tx = state.db.begin().await.unwrap();
    for i in 0..n {
        keysmith::mail::enqueue(
            &mut tx,
            &format!("member{i}@example.com"),
            &mail,
            state.clock.unix(),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let t = Instant::now();
    state.mail.wake();
    let deadline = t + Duration::from_secs(120);
    loop {
        let (unsent,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NULL")
                .fetch_one(state.db.pool())
                .await
                .unwrap();
        if unsent == 0 && sink.received().0 >= before + n as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "{unsent} of {n} still unsent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let (after, bytes_after) = sink.settled();
    assert_eq!(after - before, n as u64, "each message once");
    server.shutdown().await.unwrap();
    if let Some(name) = pg_db {
        admin_sql(
            pg_admin,
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .await;
    }
    (n as f64 / secs, (bytes_after - bytes_before) / n as u64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let messages: usize = env_or("MESSAGES", 2000);
    let rounds: usize = env_or("ROUNDS", 3);
    let concurrency: usize = env_or("CONCURRENCY", 8);
    let lettre_messages: usize = env_or("LETTRE_MESSAGES", 100);
    let pg_admin = std::env::var("BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let backends: Vec<Backend> = std::env::var("BACKENDS")
        .unwrap_or_else(|_| "sqlite postgres".into())
        .split_whitespace()
        .map(|b| match b {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => panic!("BACKENDS: unknown backend {other} (sqlite, postgres)"),
        })
        .collect();

    let sink = Sink::start();
    // A warm-up run: the size of the messages the references then send.
    let (_, size) = outbox_rate(Backend::Sqlite, &sink, 200, concurrency, &pg_admin).await;
    println!(
        "{messages} messages a run ({size} bytes each), concurrency {concurrency}, {rounds} rounds"
    );
    let mut reference = Vec::new();
    let mut lettre = Vec::new();
    let mut rates: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut ratios: HashMap<&str, Vec<f64>> = HashMap::new();
    for round in 1..=rounds {
        let smtplib = smtplib_rate(&sink, messages, size);
        let plain_lettre = lettre_loop_rate(&sink, lettre_messages, size).await;
        print!(
            "round {round}: smtplib {smtplib:.0}/s, lettre loop {plain_lettre:.1}/s ({:.1} ms each)",
            1000.0 / plain_lettre
        );
        reference.push(smtplib);
        lettre.push(plain_lettre);
        for &backend in &backends {
            let (rate, _) = outbox_rate(backend, &sink, messages, concurrency, &pg_admin).await;
            print!(
                ", outbox on {} {rate:.0}/s ({:.0} % of smtplib)",
                backend.name(),
                100.0 * rate / smtplib
            );
            rates.entry(backend.name()).or_default().push(rate);
            ratios
                .entry(backend.name())
                .or_default()
                .push(rate / smtplib);
        }
        println!();
    }
    println!(
        "median: smtplib {:.0}/s, lettre loop {:.1}/s",
        median(reference),
        median(lettre)
    );
    for &backend in &backends {
        let rate = median(rates[backend.name()].clone());
        let ratio = median(ratios[backend.name()].clone());
        println!(
            "median: outbox on {} {rate:.0}/s, {:.0} % of smtplib (median of per-round ratios); target 300/s: {}",
            backend.name(),
            100.0 * ratio,
            if rate >= 300.0 { "met" } else { "NOT met" }
        );
    }
}

//! Mail that stops on time: an SMTP server that takes the message and then
//! never answers (aiosmtpd with a handler that stalls in DATA). Delivery
//! gives up after the SMTP timeout, shutdown never waits for it, and every
//! attempt at one message carries the same Message-ID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mail_parser::MessageParser;

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

/// aiosmtpd whose DATA handler writes what it got to `attempt-N.eml`, then
/// stalls for an hour while the `stall` file exists, or answers 250.
const STALLING_SERVER: &str = r#"
import asyncio, pathlib, sys, time
from aiosmtpd.controller import Controller
port, folder = int(sys.argv[1]), pathlib.Path(sys.argv[2])
class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len(list(folder.glob("attempt-*.eml"))) + 1
        partial = folder / f".attempt-{n}.tmp"
        partial.write_bytes(envelope.original_content)
        partial.rename(folder / f"attempt-{n}.eml")
        if (folder / "stall").exists():
            await asyncio.sleep(3600)
        return "250 OK"
Controller(Handler(), hostname="127.0.0.1", port=port).start()
while True:
    time.sleep(3600)
"#;

struct StallingSmtp {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl StallingSmtp {
    fn start() -> StallingSmtp {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stall"), b"").unwrap();
        let child = Command::new("python3")
            .args(["-c", STALLING_SERVER, &port.to_string()])
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
        StallingSmtp { port, dir, child }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn answer(&self) {
        std::fs::remove_file(self.dir.path().join("stall")).unwrap();
    }

    fn attempt(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("attempt-{n}.eml"))
    }

    async fn wait_for_attempt(&self, n: usize) -> Vec<u8> {
        wait_for_file(&self.attempt(n)).await
    }
}

impl Drop for StallingSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_file(path: &Path) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(bytes) = std::fs::read(path) {
            return bytes;
        }
        assert!(Instant::now() < deadline, "{} never came", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn message_id(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.message_id().map(str::to_string))
        .expect("a Message-ID")
}

/// (attempts, sent_at, failed_at, next_attempt_at, last_error) of the one row.
async fn outbox_row(app: &TestApp) -> (i64, Option<i64>, Option<i64>, i64, Option<String>) {
    sqlx::query_as(
        "SELECT attempts, sent_at, failed_at, next_attempt_at, last_error FROM mail_outbox \
         WHERE template <> 'signin' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(app.db().pool())
    .await
    .unwrap()
}

backend_tests!(
    #[cfg_attr(
        skip_smtp_tests,
        ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
    )]
    a_stalled_data_phase_times_out_and_the_message_waits_for_its_retry,
    shutdown_does_not_wait_for_a_stalled_smtp_server_and_the_message_goes_at_the_next_start,
);

async fn a_stalled_data_phase_times_out_and_the_message_waits_for_its_retry(backend: Backend) {
    let smtp = StallingSmtp::start();
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_SMTP_URL", &smtp.url()),
            ("KEYSMITH_SMTP_TIMEOUT_SECONDS", "2"),
        ],
    )
    .await;
    app.superuser_direct("ada@example.com").await;
    app.create_key("deploy").await;
    smtp.wait_for_attempt(1).await;
    let stalled_at = Instant::now();

    let deadline = Instant::now() + Duration::from_secs(10);
    let (_, sent, failed, next_attempt, error) = loop {
        let row = outbox_row(&app).await;
        if row.4.is_some() {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled delivery never gave up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        stalled_at.elapsed() < Duration::from_secs(6),
        "gave up after {:?}, not about 2 s",
        stalled_at.elapsed()
    );
    assert_eq!(
        (sent, failed),
        (None, None),
        "neither sent nor failed: it is retried"
    );
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("did not take the message within 2 s")),
        "{error:?}"
    );
    assert!(
        next_attempt > app.state.clock.unix(),
        "the retry waits its backoff"
    );
    app.shutdown().await;
}

async fn shutdown_does_not_wait_for_a_stalled_smtp_server_and_the_message_goes_at_the_next_start(
    backend: Backend,
) {
    let smtp = StallingSmtp::start();
    // The default SMTP timeout (20 s) is longer than a container runtime waits.
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_SMTP_URL", &smtp.url())]).await;
    app.superuser_direct("ada@example.com").await;
    app.create_key("deploy").await;
    let first = smtp.wait_for_attempt(1).await;

    // The stalled handler holds the first attempt; the next one is answered.
    smtp.answer();
    let started = Instant::now();
    let app = app.restart().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?} with an SMTP server stalled in DATA",
        started.elapsed()
    );

    // The interrupted message was put back due at once: the new instance
    // sends it without waiting for a lease or a backoff.
    let restarted = Instant::now();
    let second = smtp.wait_for_attempt(2).await;
    assert!(
        restarted.elapsed() < Duration::from_secs(5),
        "resent after {:?}",
        restarted.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored_id: String = loop {
        let (_, sent, failed, _, _) = outbox_row(&app).await;
        assert_eq!(failed, None);
        if sent.is_some() {
            break sqlx::query_scalar(
                "SELECT message_id FROM mail_outbox WHERE template <> 'signin' ORDER BY id DESC LIMIT 1",
            )
            .fetch_one(app.db().pool())
            .await
            .unwrap();
        }
        assert!(Instant::now() < deadline, "the message was not marked sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Both copies are recognisably the same message.
    assert_eq!(message_id(&first), message_id(&second));
    assert_eq!(format!("<{}>", message_id(&second)), stored_id);
    assert!(
        !smtp.attempt(3).exists(),
        "sent once more, not again and again"
    );
    app.shutdown().await;
}

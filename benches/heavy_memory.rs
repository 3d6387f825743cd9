//! Benchmark: the server's memory while four heavy requests run at once for
//! a member who owns 100,000 tokens (issue: "server memory under four
//! concurrent heavy requests stays under 60 MB whatever a member owns").
//!
//!     cargo bench --bench heavy_memory
//!
//! The database is seeded through the store code the product uses (100,000
//! tokens, so also 100,000 `token.created` audit events); then the real
//! `keysmith` binary is started on it as a process of its own, so what is
//! measured is the server alone: its resident set (`VmRSS`, sampled every
//! 2 ms from `/proc`) and the kernel's high-water mark (`VmHWM`).
//!
//! Phases, in one run: idle after start-up (reference); four clients
//! looping on `/healthz` (reference); four clients each cycling through the
//! heavy requests (the last page of the settings list sorted by expiry, a
//! search matching every token, the Team page for that member, the JSON list
//! at its largest page, the whole audit log as CSV). With
//! `KEYSMITH_TEST_POSTGRES_URL` set, the same run on PostgreSQL follows.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keysmith::app;
use keysmith::auth::signin::issue_signin_link;
use keysmith::clock::Clock;
use keysmith::config::Config;
use keysmith::domain::{EmailAddress, OrgName, TokenLabel};
use keysmith::store::{Db, PoolSettings, orgs, tokens};
use keysmith::token::{PlainToken, ScopeCatalogue};

const TOKENS: usize = 100_000;
/// How many times each client goes through the list of heavy requests.
const ROUNDS: usize = 3;
const TARGET_MB: f64 = 60.0;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn csrf_of(html: &str) -> String {
    let marker = "<meta name=\"csrf-token\" content=\"";
    let start = html.find(marker).expect("csrf meta") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

/// `VmRSS` and `VmHWM` of a process, in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Seeds one member with `TOKENS` tokens, through the product's store code.
async fn seed(vars: &HashMap<String, String>) -> (EmailAddress, i64) {
    let mut vars = vars.clone();
    vars.insert("KEYSMITH_ADDR".into(), "127.0.0.1:0".into());
    let server = app::start(Config::from_vars(&vars).unwrap()).await.unwrap();
    let state = server.state.clone();
    let email = EmailAddress::parse("heavy@example.com").unwrap();
    let b = orgs::bootstrap(&state.db, &OrgName::parse("Heavy").unwrap(), &email)
        .await
        .unwrap();
    let scopes = ScopeCatalogue::default().parse_set(["write"]).unwrap();
    let started = Instant::now();
    for chunk in 0..TOKENS / 10_000 {
        let mut tx = state.db.begin().await.unwrap();
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            let plain = PlainToken::generate(&state.config.token_prefix);
            let label = TokenLabel::parse(&format!("token {i:06}")).unwrap();
            tokens::create(
                &mut tx,
                &tokens::NewToken {
                    user_id: b.user.id,
                    organization_id: b.organization.id,
                    label: &label,
                    display_prefix: &plain.display_prefix(),
                    digest: &plain.digest(),
                    scopes: &scopes,
                    expires_at: match i % 4 {
                        0 => Some(state.clock.unix() + 86_400 * 30),
                        1 => Some(state.clock.unix() + 86_400 * 3),
                        _ => None,
                    },
                    project_ids: &[],
                    created_ip: Some("192.0.2.1"),
                    created_user_agent: Some("bench"),
                },
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    eprintln!(
        "  seeded {TOKENS} tokens (and as many audit events) in {:.1?}",
        started.elapsed()
    );
    server.shutdown().await.unwrap();
    (email, b.user.id)
}

async fn signed_in_client(db: &Db, config: &Config, email: &EmailAddress) -> reqwest::Client {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let link = issue_signin_link(db, config, &Clock::default(), email, None)
        .await
        .unwrap();
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
        .form(&[("csrf_token", csrf_of(&page))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed in");
    client
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(vars: &HashMap<String, String>) -> Server {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .arg("serve")
        .env_clear()
        .envs(vars)
        .env("KEYSMITH_ADDR", format!("127.0.0.1:{port}"))
        .env("KEYSMITH_PUBLIC_URL", &base)
        .env("KEYSMITH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start keysmith");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "keysmith did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, base }
}

/// Samples the server's resident set every 2 ms until `stop`; the largest seen.
fn sample(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(memory_kb(pid).0);
            std::thread::sleep(Duration::from_millis(2));
        }
        peak
    })
}

/// Four clients, each going through `urls` `rounds` times, each starting at
/// a different one so four different heavy requests run at once. Returns the
/// peak RSS seen, the bytes received and the slowest request.
async fn load(pid: u32, clients: &[reqwest::Client], urls: &[String], rounds: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample(pid, stop.clone());
    let bytes = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (n, client) in clients.iter().enumerate() {
        let (client, urls) = (client.clone(), urls.to_vec());
        let (bytes, slowest) = (bytes.clone(), slowest.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..rounds {
                for k in 0..urls.len() {
                    let url = &urls[(n + k + round) % urls.len()];
                    let t = Instant::now();
                    let mut r = client.get(url).send().await.unwrap();
                    assert_eq!(r.status(), 200, "{url}");
                    // Read the body as it arrives and drop it: the client
                    // holds no more than a chunk.
                    while let Some(chunk) = r.chunk().await.unwrap() {
                        bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    slowest.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    Load {
        peak_kb: sampler.join().unwrap(),
        bytes: bytes.load(Ordering::Relaxed),
        slowest: Duration::from_micros(slowest.load(Ordering::Relaxed)),
        elapsed,
    }
}

struct Load {
    peak_kb: u64,
    bytes: u64,
    slowest: Duration,
    elapsed: Duration,
}

async fn run(backend: &str, database_url: String) -> bool {
    eprintln!("heavy_memory on {backend}:");
    let dir = tempfile::tempdir().unwrap();
    let vars: HashMap<String, String> = HashMap::from([
        ("KEYSMITH_CONFIG".into(), "/dev/null".into()),
        ("DATABASE_URL".into(), database_url),
        (
            "KEYSMITH_DATA_DIR".into(),
            dir.path().join("data").display().to_string(),
        ),
    ]);
    let (email, user_id) = seed(&vars).await;

    let server = start_server(&vars).await;
    let pid = server.child.id();
    let mut client_vars = vars.clone();
    client_vars.insert("KEYSMITH_PUBLIC_URL".into(), server.base.clone());
    let config = Config::from_vars(&client_vars).unwrap();
    let db = Db::connect(&config.database_url, &PoolSettings::default())
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(signed_in_client(&db, &config, &email).await);
    }
    db.close().await;

    // Idle, after one request has warmed the server.
    let base = &server.base;
    let heavy = vec![
        format!("{base}/settings/api-tokens?sort=expiry&page=2000"),
        format!("{base}/settings/api-tokens?q=token"),
        format!("{base}/team/members/{user_id}?sort=last_used&page=1000"),
        format!("{base}/api/user/api-keys?limit=100"),
        format!("{base}/team/audit.csv"),
    ];
    load(pid, &clients[..1], &[format!("{base}/healthz")], 1).await;
    let (idle_kb, _) = memory_kb(pid);
    let healthz = load(pid, &clients, &[format!("{base}/healthz")], 500).await;
    let (_, hwm_before_kb) = memory_kb(pid);
    let heavy_load = load(pid, &clients, &heavy, ROUNDS).await;
    let (after_kb, hwm_kb) = memory_kb(pid);

    let requests = 4 * ROUNDS * heavy.len();
    eprintln!(
        "  idle after start-up (reference):      RSS {:6.1} MB",
        mb(idle_kb)
    );
    eprintln!(
        "  4 clients on /healthz (reference):    peak RSS {:6.1} MB  (2,000 requests in {:.1?})",
        mb(healthz.peak_kb),
        healthz.elapsed
    );
    eprintln!(
        "  4 clients on the heavy requests:      peak RSS {:6.1} MB  ({requests} requests, {:.1} MB of responses in {:.1?}, slowest {:.0?})",
        mb(heavy_load.peak_kb),
        heavy_load.bytes as f64 / 1e6,
        heavy_load.elapsed,
        heavy_load.slowest
    );
    eprintln!(
        "  high-water mark (VmHWM):               {:6.1} MB before the heavy phase, {:6.1} MB after; RSS after {:.1} MB",
        mb(hwm_before_kb),
        mb(hwm_kb),
        mb(after_kb)
    );
    eprintln!(
        "  peak vs idle: {:.2}x; vs /healthz under the same load: {:.2}x",
        heavy_load.peak_kb as f64 / idle_kb as f64,
        heavy_load.peak_kb as f64 / healthz.peak_kb as f64
    );
    let met = mb(hwm_kb) < TARGET_MB;
    eprintln!(
        "  target: the high-water mark under {TARGET_MB} MB: {}",
        if met { "met" } else { "NOT met" }
    );
    met
}

#[tokio::main]
async fn main() {
    common::on_both_backends("memory", run).await;
}

//! Benchmark: `/settings/api-tokens` for a member with 1,000 tokens, served
//! by the real server over loopback (session lookup, list query, rendering).
//!
//!     cargo bench --bench tokens_page
//!
//! Prints the mean, p50, p99 latency and the sequential request rate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keysmith::app;
use keysmith::auth::signin::issue_signin_link;
use keysmith::config::Config;
use keysmith::domain::{EmailAddress, OrgName, TokenLabel};
use keysmith::store::{orgs, tokens};
use keysmith::token::{PlainToken, ScopeCatalogue};

const TOKENS: usize = 1_000;
const WARMUP: usize = 20;
const REQUESTS: usize = 300;

fn csrf_of(html: &str) -> String {
    let marker = "<meta name=\"csrf-token\" content=\"";
    let start = html.find(marker).expect("csrf meta") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let vars: HashMap<String, String> = HashMap::from([
        ("KEYSMITH_CONFIG".into(), "/dev/null".into()),
        ("KEYSMITH_ADDR".into(), "127.0.0.1:0".into()),
        (
            "DATABASE_URL".into(),
            format!("sqlite://{}", dir.path().join("bench.db").display()),
        ),
        (
            "KEYSMITH_DATA_DIR".into(),
            dir.path().join("data").display().to_string(),
        ),
    ]);
    let server = app::start(Config::from_vars(&vars).unwrap()).await.unwrap();
    let state = server.state.clone();
    let email = EmailAddress::parse("bench@example.com").unwrap();
    let b = orgs::bootstrap(&state.db, &OrgName::parse("Bench").unwrap(), &email)
        .await
        .unwrap();

    let seeding = Instant::now();
    let scopes = ScopeCatalogue::default().parse_set(["write"]).unwrap();
    let mut tx = state.db.begin().await.unwrap();
    for n in 0..TOKENS {
        let plain = PlainToken::generate(&state.config.token_prefix);
        let label = TokenLabel::parse(&format!("token {n:04}")).unwrap();
        tokens::create(
            &mut tx,
            &tokens::NewToken {
                user_id: b.user.id,
                organization_id: b.organization.id,
                label: &label,
                display_prefix: &plain.display_prefix(),
                digest: &plain.digest(),
                scopes: &scopes,
                expires_at: (n % 3 == 0).then_some(state.clock.unix() + 86_400 * 30),
                project_ids: &[],
                created_ip: Some("192.0.2.1"),
                created_user_agent: Some("bench"),
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    eprintln!("seeded {TOKENS} tokens in {:.1?}", seeding.elapsed());

    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let link = issue_signin_link(&state.db, &state.config, &state.clock, &email, None)
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

    let url = format!("{base}/settings/api-tokens");
    let mut bytes = 0;
    for _ in 0..WARMUP {
        bytes = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len();
    }
    let mut times: Vec<Duration> = Vec::with_capacity(REQUESTS);
    let all = Instant::now();
    for _ in 0..REQUESTS {
        let t = Instant::now();
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    let total = all.elapsed();
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let mean = total / REQUESTS as u32;
    println!("tokens_page: {TOKENS} tokens, {REQUESTS} sequential requests, page {bytes} bytes");
    println!(
        "  mean {:.2} ms   p50 {:.2} ms   p99 {:.2} ms   {:.0} pages/s",
        mean.as_secs_f64() * 1e3,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        REQUESTS as f64 / total.as_secs_f64()
    );
    server.shutdown().await.unwrap();
}

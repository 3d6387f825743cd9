//! Benchmark: `/settings/api-tokens` for a member with 10,000 tokens (the
//! first page of 50, a search, the last page) and `GET /api/user/api-keys`,
//! served by the real server over loopback (session lookup, list and count
//! queries, rendering). References measured in the same run: `/healthz`
//! and the same page for a member with one token.
//!
//!     cargo bench --bench tokens_page
//!
//! Prints p50, p99, mean and the page size for each, and the p50 ratio
//! against the references.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keysmith::app::{self, AppState};
use keysmith::auth::signin::issue_signin_link;
use keysmith::config::Config;
use keysmith::domain::{EmailAddress, OrgName, TokenLabel};
use keysmith::store::{orgs, tokens};
use keysmith::token::{PlainToken, ScopeCatalogue};

const TOKENS: usize = 10_000;
const WARMUP: usize = 30;
const REQUESTS: usize = 400;

fn csrf_of(html: &str) -> String {
    let marker = "<meta name=\"csrf-token\" content=\"";
    let start = html.find(marker).expect("csrf meta") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

async fn seed(state: &AppState, org: &str, email: &str, n: usize) -> EmailAddress {
    let email = EmailAddress::parse(email).unwrap();
    let b = orgs::bootstrap(&state.db, &OrgName::parse(org).unwrap(), &email)
        .await
        .unwrap();
    let scopes = ScopeCatalogue::default().parse_set(["write"]).unwrap();
    let mut tx = state.db.begin().await.unwrap();
    for i in 0..n {
        let plain = PlainToken::generate(&state.config.token_prefix);
        let label = TokenLabel::parse(&format!("token {i:05}")).unwrap();
        tokens::create(
            &mut tx,
            &tokens::NewToken {
                user_id: b.user.id,
                organization_id: b.organization.id,
                label: &label,
                display_prefix: &plain.display_prefix(),
                digest: &plain.digest(),
                scopes: &scopes,
                // A mix, so the page shows every group and badge.
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
    email
}

async fn signed_in_client(state: &AppState, email: &EmailAddress) -> reqwest::Client {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let link = issue_signin_link(&state.db, &state.config, &state.clock, email, None)
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

struct Figures {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    bytes: usize,
}

async fn measure(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Figures {
    let get = || {
        let mut req = client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req
    };
    let mut bytes = 0;
    for _ in 0..WARMUP {
        let r = get().send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        bytes = r.bytes().await.unwrap().len();
    }
    let mut times: Vec<Duration> = Vec::with_capacity(REQUESTS);
    let all = Instant::now();
    for _ in 0..REQUESTS {
        let t = Instant::now();
        let r = get().send().await.unwrap();
        r.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    let total = all.elapsed();
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    Figures {
        p50: pct(0.50),
        p99: pct(0.99),
        mean: total / REQUESTS as u32,
        bytes,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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

    let seeding = Instant::now();
    let many = seed(&state, "Bench", "bench@example.com", TOKENS).await;
    let one = seed(&state, "Solo", "solo@example.com", 1).await;
    eprintln!("seeded {TOKENS} + 1 tokens in {:.1?}", seeding.elapsed());
    let many = signed_in_client(&state, &many).await;
    let one = signed_in_client(&state, &one).await;

    let base = format!("http://{}", server.addr);
    let page = format!("{base}/settings/api-tokens");
    let runs = [
        (
            "/healthz (reference)",
            &one,
            format!("{base}/healthz"),
            vec![],
        ),
        (
            "settings page, 1 token (reference)",
            &one,
            page.clone(),
            vec![],
        ),
        (
            "settings page, 10,000 tokens, page 1 of 200",
            &many,
            page.clone(),
            vec![],
        ),
        (
            "settings page, 10,000 tokens, search \"token 09\"",
            &many,
            format!("{page}?q=token+09"),
            vec![],
        ),
        (
            "settings page, 10,000 tokens, page 200, sorted by expiry",
            &many,
            format!("{page}?sort=expiry&page=200"),
            vec![],
        ),
        (
            "the list fragment (htmx), 10,000 tokens",
            &many,
            format!("{page}?page=2"),
            vec![("hx-request", "true")],
        ),
        (
            "GET /api/user/api-keys, 10,000 tokens, 50 keys",
            &many,
            format!("{base}/api/user/api-keys"),
            vec![],
        ),
    ];
    let mut results = Vec::new();
    for (name, client, url, headers) in &runs {
        let f = measure(client, url, headers).await;
        results.push((name, f));
    }
    let healthz = results[0].1.p50;
    let small = results[1].1.p50;
    println!("tokens_page: {REQUESTS} sequential requests each over loopback");
    for (name, f) in &results {
        println!(
            "  {name}\n    p50 {:.2} ms   p99 {:.2} ms   mean {:.2} ms   {:.1} KB   p50 = {:.1}x /healthz, {:.2}x the 1-token page",
            ms(f.p50),
            ms(f.p99),
            ms(f.mean),
            f.bytes as f64 / 1024.0,
            f.p50.as_secs_f64() / healthz.as_secs_f64(),
            f.p50.as_secs_f64() / small.as_secs_f64(),
        );
    }
    server.shutdown().await.unwrap();
}

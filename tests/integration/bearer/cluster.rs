//! Cluster-wide rate limits: three real Keysmith instances on one
//! PostgreSQL share each token's budget. Requests spread round-robin over
//! the three by many concurrent clients are accepted up to the budget and
//! at most a tenth more, and refused with 429 and Retry-After after that;
//! an instance that stops stops counting.
//!
//! Windows are minute-aligned on the program clock, which the test moves
//! (on all three alike) to the start of a window instead of waiting for one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{header, org, owner_token, wait_until_listening};
use crate::harness::{Backend, TestApp};
use crate::postgres_only_tests;

postgres_only_tests!(
    three_instances_round_robin_accept_the_budget_and_at_most_a_tenth_more,
    an_instance_that_stops_stops_counting,
);

const WRITES: usize = 60;
const READS: usize = 120;

async fn cluster(size: usize) -> Vec<TestApp> {
    let vars = [
        ("KEYSMITH_WRITES_PER_MINUTE", "60"),
        ("KEYSMITH_READS_PER_MINUTE", "120"),
    ];
    let first = TestApp::spawn_with(Backend::Postgres, &vars).await;
    let url = first.state.config.database_url.connect_url().to_string();
    let mut apps = vec![first];
    for _ in 1..size {
        let mut with_url = vars.to_vec();
        with_url.push(("DATABASE_URL", &url));
        apps.push(TestApp::spawn_with(Backend::Postgres, &with_url).await);
    }
    for app in &apps {
        wait_until_listening(app).await;
    }
    apps
}

/// Waits until every instance's last exchange counted `live` instances.
async fn wait_for_live(apps: &[&TestApp], live: u32) {
    let started = Instant::now();
    while !apps
        .iter()
        .all(|a| a.state.verifier.cluster_instances() == Some(live))
    {
        let seen: Vec<_> = apps
            .iter()
            .map(|a| a.state.verifier.cluster_instances())
            .collect();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "instances never counted {live} live: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Moves every instance's clock to just past the start of the next window.
async fn to_next_window(apps: &[&TestApp]) {
    let now = apps[0].state.clock.unix_ms();
    let ahead = 60_000 - now.rem_euclid(60_000) + 50;
    for app in apps {
        app.state.clock.advance(Duration::from_millis(ahead as u64));
    }
    // Heartbeats beaten before the jump look old now: wait for fresh ones.
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for_live(apps, apps.len() as u32).await;
}

#[derive(Default)]
struct Tally {
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

/// `clients` concurrent clients send `/auth/verify` for an original
/// request `method /tickets`, round-robin over `apps`, for `for_how_long`.
/// Every answer must be 200, or 429 with `Retry-After` and the RateLimit
/// fields; anything else fails the test.
async fn hammer(
    apps: &[&TestApp],
    token: &str,
    method: &'static str,
    clients: usize,
    for_how_long: Duration,
) -> (usize, usize) {
    let urls: Arc<Vec<String>> = Arc::new(apps.iter().map(|a| a.url("/auth/verify")).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + for_how_long;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (urls, next, tally) = (Arc::clone(&urls), Arc::clone(&next), Arc::clone(&tally));
        let token = token.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while Instant::now() < until {
                let url = &urls[next.fetch_add(1, Ordering::Relaxed) % urls.len()];
                let r = client
                    .get(url)
                    .bearer_auth(&token)
                    .header("X-Forwarded-Method", method)
                    .header("X-Forwarded-Uri", "/tickets")
                    .send()
                    .await
                    .expect("request");
                match r.status().as_u16() {
                    200 => {
                        tally.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    429 => {
                        let retry: i64 = header(&r, "retry-after")
                            .expect("429 without Retry-After")
                            .parse()
                            .expect("Retry-After in seconds");
                        assert!((1..=60).contains(&retry), "Retry-After {retry}");
                        let ratelimit = header(&r, "ratelimit").expect("RateLimit on a 429");
                        let t: i64 = ratelimit.rsplit("t=").next().unwrap().parse().unwrap();
                        assert!(retry >= t, "Retry-After {retry} before t={t}");
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("{method} answered {other}: {}", r.text().await.unwrap()),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    (
        tally.accepted.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    )
}

fn assert_within_a_tenth(what: &str, budget: usize, (accepted, refused): (usize, usize)) {
    eprintln!("{what}: {accepted} accepted, {refused} refused (budget {budget})");
    assert!(
        (budget..=budget + budget / 10).contains(&accepted),
        "{what}: {accepted} accepted of a budget of {budget} ({refused} refused)"
    );
    assert!(
        refused >= budget,
        "{what}: only {refused} refused: the load did not press the budget"
    );
}

async fn three_instances_round_robin_accept_the_budget_and_at_most_a_tenth_more() {
    let apps = cluster(3).await;
    let all: Vec<&TestApp> = apps.iter().collect();
    wait_for_live(&all, 3).await;
    let org = org(&apps[0]).await;
    let t = owner_token(&apps[0], &org).await;
    to_next_window(&all).await;

    let writes = hammer(&all, &t.token, "POST", 24, Duration::from_secs(3)).await;
    assert_within_a_tenth("writes", WRITES, writes);
    // Reads have their own budget, shared the same way.
    let reads = hammer(&all, &t.token, "GET", 24, Duration::from_secs(3)).await;
    assert_within_a_tenth("reads", READS, reads);

    // Once the budget is spent, each instance refuses until the window
    // ends, and says so.
    for app in &apps {
        let r = super::verify(app, &t.token, "", "PUT", "/tickets/1").await;
        assert_eq!(r.status(), 429);
        let retry: i64 = header(&r, "retry-after").unwrap().parse().unwrap();
        let left = 60 - app.state.clock.unix_ms().rem_euclid(60_000) / 1000;
        assert!(
            (left..=left + 1).contains(&retry),
            "Retry-After {retry}, window ends in {left} s"
        );
    }

    // The next window has the whole budget again.
    to_next_window(&all).await;
    let writes = hammer(&all, &t.token, "DELETE", 24, Duration::from_secs(3)).await;
    assert_within_a_tenth("writes, next window", WRITES, writes);

    // Ended windows leave the ledger (cleaned every 25 exchanges, 5 s).
    let current = apps[0].state.clock.unix_ms();
    let current = current - current.rem_euclid(60_000);
    let started = Instant::now();
    loop {
        let old: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM rate_limit_counts WHERE window_start_ms < $1")
                .bind(current)
                .fetch_one(apps[0].db().pool())
                .await
                .unwrap();
        if old == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{old} rows of ended windows are still in the ledger"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rate_limit_counts")
        .fetch_one(apps[0].db().pool())
        .await
        .unwrap();
    assert!(
        (1..=6).contains(&rows),
        "{rows} ledger rows for one token on three instances"
    );

    for app in apps {
        app.shutdown().await;
    }
}

async fn an_instance_that_stops_stops_counting() {
    let mut apps = cluster(3).await;
    let all: Vec<&TestApp> = apps.iter().collect();
    wait_for_live(&all, 3).await;
    let org = org(&apps[0]).await;
    let t = owner_token(&apps[0], &org).await;
    to_next_window(&all).await;
    // The third instance takes its share of this window's budget, then stops.
    let third = apps.pop().unwrap();
    let (accepted, _) = hammer(&[&third], &t.token, "POST", 8, Duration::from_secs(1)).await;
    assert!(
        (20..=WRITES).contains(&accepted),
        "the third instance accepted {accepted}"
    );
    third.shutdown().await;

    // Once its heartbeat is old the other two count two instances, and
    // what it used no longer counts against them.
    let rest: Vec<&TestApp> = apps.iter().collect();
    wait_for_live(&rest, 2).await;
    let writes = hammer(&rest, &t.token, "POST", 16, Duration::from_secs(3)).await;
    assert_within_a_tenth("writes after the third stopped", WRITES, writes);

    for app in apps {
        app.shutdown().await;
    }
}

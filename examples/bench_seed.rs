//! Seeds a database for `bench/run.sh`: one organization and superuser, and
//! COUNT tokens created the way the product creates them (digest stored,
//! audit event written). Prints SAMPLE of the plaintexts, one per line, to
//! OUT so the load generator can present them.
//!
//!     cargo run --release --example bench_seed -- DATABASE_URL COUNT OUT SAMPLE

use std::io::Write;

use keysmith::config::DatabaseUrl;
use keysmith::domain::{EmailAddress, OrgName, TokenLabel};
use keysmith::store::{Db, PoolSettings, orgs, tokens};
use keysmith::token::{PlainToken, ScopeCatalogue, TokenPrefix};

/// Tokens per transaction.
const BATCH: usize = 1000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, count, out, sample] = args.as_slice() else {
        anyhow::bail!("usage: bench_seed DATABASE_URL COUNT OUT SAMPLE");
    };
    let count: usize = count.parse()?;
    let sample: usize = sample.parse()?;
    let db = Db::connect(&DatabaseUrl::parse(url)?, &PoolSettings::default()).await?;
    db.migrate().await?;
    let b = orgs::bootstrap(
        &db,
        &OrgName::parse("Bench")?,
        &EmailAddress::parse("bench@example.com")?,
    )
    .await?;
    let prefix = TokenPrefix::default();
    let scopes = ScopeCatalogue::default().parse_set(["write"])?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut made = 0;
    while made < count {
        let mut tx = db.begin().await?;
        for _ in 0..BATCH.min(count - made) {
            let plain = PlainToken::generate(&prefix);
            let label = TokenLabel::parse(&format!("bench {made}"))?;
            tokens::create(
                &mut tx,
                &tokens::NewToken {
                    user_id: b.user.id,
                    organization_id: b.organization.id,
                    label: &label,
                    display_prefix: &plain.display_prefix(),
                    digest: &plain.digest(),
                    scopes: &scopes,
                    expires_at: None,
                    project_ids: &[],
                    created_ip: Some("127.0.0.1"),
                    created_user_agent: Some("bench_seed"),
                },
            )
            .await?;
            if made < sample {
                writeln!(out, "{}", plain.expose_secret())?;
            }
            made += 1;
        }
        tx.commit().await?;
    }
    out.flush()?;
    db.close().await;
    eprintln!(
        "bench_seed: {made} tokens, {} written to the sample file",
        sample.min(made)
    );
    Ok(())
}

//! The `keysmith` binary: parse the command line, load the configuration,
//! call into the library. Errors end the process with one line and a
//! non-zero status, never a backtrace.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keysmith::auth::signin::issue_signin_link;
use keysmith::clock::Clock;
use keysmith::config::Config;
use keysmith::domain::{EmailAddress, OrgName};
use keysmith::mail::notices::mail_time;
use keysmith::store::{Db, PoolSettings, orgs, outbox};

/// mimalloc instead of the system allocator: under load glibc's arenas
/// were a tenth of a whoami's CPU time (lock waits and consolidation).
/// Built without transparent huge pages (`no_thp`): with them it kept
/// 2 MiB pages for a few KiB in use, 12 MB more resident than glibc with
/// 10,000 tokens cached. The README's performance section has the figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keysmith",
    version,
    about = "Self-hosted personal API tokens: settings page, team controls, notification emails and bearer verification.",
    long_about = "Self-hosted personal API tokens: settings page, team controls, notification emails and bearer verification.\n\n\
        With no command, `keysmith` runs the server (the same as `keysmith serve`).\n\
        Configuration comes from environment variables (KEYSMITH_ADDR, KEYSMITH_PUBLIC_URL, DATABASE_URL, \
        KEYSMITH_SMTP_URL, KEYSMITH_TOKEN_PREFIX, …) and an optional keysmith.toml; see the README."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web server (the default). Applies pending migrations first.
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Create an organization with EMAIL as its superuser. Safe to run again.
    Bootstrap {
        /// The organization's name (1-100 characters).
        #[arg(long, value_name = "NAME")]
        org: String,
        /// The superuser's email address.
        #[arg(long, value_name = "EMAIL")]
        email: String,
    },
    /// Print a single-use sign-in URL (valid 10 minutes) for an existing user.
    SigninLink {
        /// The user's email address.
        email: String,
    },
    /// Inspect or requeue the outgoing mail queue.
    Mail {
        #[command(subcommand)]
        action: MailCommand,
    },
}

#[derive(Subcommand)]
enum MailCommand {
    /// List messages not delivered yet: pending (with their next attempt) and failed.
    Status,
    /// Put every failed message back in the queue, to be sent now.
    Retry,
}

/// Usage and configuration errors exit 2; failures while running exit 1.
enum Failure {
    Usage(String),
    Runtime(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = init_tracing()
        .and_then(|()| {
            Config::from_env().map_err(|e| Failure::Usage(format!("configuration error: {e}")))
        })
        .and_then(|config| {
            tokio::runtime::Runtime::new()
                .map_err(|e| Failure::Runtime(format!("cannot start the async runtime: {e}")))?
                .block_on(run(cli.command.unwrap_or(Command::Serve), config))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("keysmith: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("keysmith: {msg}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command, config: Config) -> Result<(), Failure> {
    let runtime = |e: &dyn std::fmt::Display| Failure::Runtime(e.to_string());
    match command {
        Command::Serve => keysmith::app::serve(config).await.map_err(|e| runtime(&e)),
        Command::Migrate => {
            let db = open(&config).await?;
            db.migrate().await.map_err(|e| runtime(&e))?;
            println!(
                "Database is up to date ({}).",
                config.database_url.redacted()
            );
            Ok(())
        }
        Command::Bootstrap { org, email } => {
            let org = OrgName::parse(&org).map_err(|e| Failure::Usage(format!("--org: {e}")))?;
            let email =
                EmailAddress::parse(&email).map_err(|e| Failure::Usage(format!("--email: {e}")))?;
            let db = open(&config).await?;
            db.migrate().await.map_err(|e| runtime(&e))?;
            let done = orgs::bootstrap(&db, &org, &email)
                .await
                .map_err(|e| runtime(&e))?;
            let what = match (done.created_organization, done.changed_membership) {
                (true, _) => "Created organization",
                (false, true) => "Updated organization",
                (false, false) => "Organization already set up:",
            };
            println!(
                "{what} \"{}\" (id {}) with superuser {}.",
                done.organization.name, done.organization.id, done.user.email
            );
            println!("Sign in with: keysmith signin-link {}", done.user.email);
            Ok(())
        }
        Command::Mail { action } => {
            let db = open(&config).await?;
            db.migrate().await.map_err(|e| runtime(&e))?;
            match action {
                MailCommand::Status => {
                    let rows = outbox::undelivered(&db).await.map_err(|e| runtime(&e))?;
                    if rows.is_empty() {
                        println!("All mail has been delivered.");
                    }
                    for m in &rows {
                        let state = match m.failed_at {
                            Some(_) => "FAILED ".to_string(),
                            None => {
                                format!("pending, next attempt {}", mail_time(m.next_attempt_at))
                            }
                        };
                        println!(
                            "#{:<6} {:<22} to {:<30} {} attempts  {}{}",
                            m.id,
                            m.template,
                            m.recipient,
                            m.attempts,
                            state,
                            m.last_error
                                .as_deref()
                                .map(|e| format!("  last error: {e}"))
                                .unwrap_or_default()
                        );
                    }
                    let failed = rows.iter().filter(|m| m.failed_at.is_some()).count();
                    println!("{} pending, {failed} failed.", rows.len() - failed);
                }
                MailCommand::Retry => {
                    let n = outbox::requeue_failed(&db, Clock::default().unix())
                        .await
                        .map_err(|e| runtime(&e))?;
                    println!(
                        "Requeued {n} failed message{}. A running server sends them shortly.",
                        if n == 1 { "" } else { "s" }
                    );
                }
            }
            Ok(())
        }
        Command::SigninLink { email } => {
            let email =
                EmailAddress::parse(&email).map_err(|e| Failure::Usage(format!("EMAIL: {e}")))?;
            let db = open(&config).await?;
            db.migrate().await.map_err(|e| runtime(&e))?;
            let url = issue_signin_link(
                &db,
                &config,
                &keysmith::clock::Clock::default(),
                &email,
                None,
            )
            .await
            .map_err(|e| runtime(&e))?;
            println!("{url}");
            eprintln!("This link signs in {email} once, within 10 minutes.");
            Ok(())
        }
    }
}

async fn open(config: &Config) -> Result<Db, Failure> {
    Db::connect(&config.database_url, &PoolSettings::default())
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))
}

/// Logs to stderr: human-readable text, or one JSON object per line
/// (`KEYSMITH_LOG_FORMAT=json`) for log shippers. A filter or format that
/// cannot be read is a usage error, not a silent fallback.
fn init_tracing() -> Result<(), Failure> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("KEYSMITH_LOG") {
        Err(_) => EnvFilter::new("keysmith=info,tower_http=info,warn"),
        Ok(spec) => EnvFilter::try_new(&spec).map_err(|e| {
            Failure::Usage(format!(
                "configuration error: KEYSMITH_LOG: {e} (a tracing filter, e.g. `keysmith=debug,warn`)"
            ))
        })?,
    };
    let json = match std::env::var("KEYSMITH_LOG_FORMAT").as_deref() {
        Err(_) | Ok("text") => false,
        Ok("json") => true,
        Ok(other) => {
            return Err(Failure::Usage(format!(
                "configuration error: KEYSMITH_LOG_FORMAT: expected `text` or `json`, got `{other}`"
            )));
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    Ok(())
}

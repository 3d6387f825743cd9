//! Where mail goes: an SMTP server (lettre), or, with no SMTP configured, a
//! development outbox folder of `.eml` files a newcomer can open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::config::{MailTransport, SmtpSecurity, SmtpSettings};

pub enum Transport {
    DevOutbox(PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// What the development outbox records next to each `.eml` file, for the
/// `/dev/mail` page and for tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevMailMeta {
    pub file: String,
    pub to: String,
    pub subject: String,
    pub date: String,
    pub links: Vec<String>,
}

impl Transport {
    pub fn from_config(mail: &MailTransport) -> Result<Transport, String> {
        match mail {
            MailTransport::DevOutbox(dir) => Ok(Transport::DevOutbox(dir.clone())),
            MailTransport::Smtp(s) => smtp(s).map(Transport::Smtp),
        }
    }

    /// Sends one message. `links` are the URLs in it, recorded by the
    /// development outbox only.
    pub async fn send(
        &self,
        message: &Message,
        to: &str,
        subject: &str,
        links: &[String],
    ) -> Result<(), String> {
        match self {
            Transport::Smtp(smtp) => smtp
                .send(message.clone())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Transport::DevOutbox(dir) => write_dev_mail(dir, message, to, subject, links).await,
        }
    }
}

fn smtp(s: &SmtpSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let builder = match s.security {
        SmtpSecurity::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
        SmtpSecurity::StartTls => {
            let tls = TlsParameters::new(s.host.clone()).map_err(|e| e.to_string())?;
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host).tls(Tls::Required(tls))
        }
        SmtpSecurity::Tls => {
            let tls = TlsParameters::new(s.host.clone()).map_err(|e| e.to_string())?;
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host).tls(Tls::Wrapper(tls))
        }
    };
    let mut builder = builder.port(s.port).timeout(Some(Duration::from_secs(20)));
    if let (Some(user), Some(password)) = (&s.username, s.password()) {
        builder = builder.credentials(Credentials::new(user.clone(), password.to_string()));
    }
    Ok(builder.build())
}

async fn write_dev_mail(
    dir: &Path,
    message: &Message,
    to: &str,
    subject: &str,
    links: &[String],
) -> Result<(), String> {
    create_private_dir(dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let stem = format!(
        "{}-{}",
        now.unix_timestamp_nanos() / 1_000_000,
        crate::auth::secret::short_random()
    );
    let eml = dir.join(format!("{stem}.eml"));
    write_private(&eml, &message.formatted())
        .await
        .map_err(|e| format!("cannot write {}: {e}", eml.display()))?;
    let meta = DevMailMeta {
        file: format!("{stem}.eml"),
        to: to.to_string(),
        subject: subject.to_string(),
        date: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        links: links.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
    write_private(&dir.join(format!("{stem}.json")), &json)
        .await
        .map_err(|e| format!("cannot write mail metadata: {e}"))?;
    // Development only: with no SMTP configured the outbox folder is the
    // mailbox, and printing the link is how a newcomer follows it.
    tracing::info!(file = %eml.display(), %to, %subject, links = ?links, "mail written to the development outbox (no KEYSMITH_SMTP_URL set)");
    Ok(())
}

/// The outbox folder holds working sign-in links: only its owner may list it.
async fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).await
}

/// Writes a new file readable by its owner only (0600), whatever the umask.
async fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await?;
    file.write_all(bytes).await?;
    file.flush().await
}

/// Messages in the development outbox, newest first.
pub async fn list_dev_mail(dir: &Path) -> Vec<DevMailMeta> {
    let mut out = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return out;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Ok(bytes) = tokio::fs::read(&path).await
            && let Ok(meta) = serde_json::from_slice::<DevMailMeta>(&bytes)
        {
            out.push(meta);
        }
    }
    out.sort_by(|a, b| b.file.cmp(&a.file));
    out
}

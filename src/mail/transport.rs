//! Where mail goes: an SMTP server (lettre), or, with no SMTP configured, a
//! development outbox folder of `.eml` files a newcomer can open.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use serde::{Deserialize, Serialize};

use crate::config::{MailTransport, SmtpSecurity, SmtpSettings};

pub enum Transport {
    DevOutbox(PathBuf),
    Smtp(SmtpPool),
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
            MailTransport::Smtp(s) => SmtpPool::new(s).map(Transport::Smtp),
        }
    }

    /// Sends one message. `links` are the URLs in it, recorded by the
    /// development outbox only. Safe to call from many tasks at once.
    pub async fn send(
        &self,
        message: &Message,
        to: &str,
        subject: &str,
        links: &[String],
    ) -> Result<(), String> {
        match self {
            Transport::Smtp(smtp) => smtp.send(message).await,
            Transport::DevOutbox(dir) => write_dev_mail(dir, message, to, subject, links).await,
        }
    }
}

/// How long an idle pooled connection is kept. Servers drop idle clients
/// after a while (RFC 5321 suggests 5 minutes); well before that we close.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// The most idle connections kept: one per concurrent delivery at most.
const MAX_IDLE: usize = 64;
/// Connecting (TCP, greeting, EHLO) gives up after this long; the worker's
/// own deadline bounds the whole delivery anyway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// SMTP with pooled connections, one SMTP transaction per message.
///
/// lettre's connection does the protocol (greeting, EHLO, STARTTLS, AUTH,
/// reply parsing); the pool and the transaction are ours, for one reason:
/// lettre writes a message and its final `.` in two writes before reading
/// the reply, and on a TCP connection with Nagle's algorithm (lettre does
/// not set `TCP_NODELAY`) the second write waits for the server's delayed
/// ACK: about 40 ms per message on Linux, whatever the server. Here the
/// dot-stuffed message and its terminator go out as one write.
pub struct SmtpPool {
    host: String,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

/// How one SMTP transaction failed.
enum Failure {
    /// The connection was dead before the server took anything (a pooled
    /// connection the server had closed): a fresh one may simply work.
    Stale(String),
    /// The server answered no (a bad recipient, a full mailbox) and the
    /// connection is still usable after RSET.
    Refused(String),
    /// Anything else, e.g. the link broke during DATA: the server may or
    /// may not have the message. The outbox retries it later with the same
    /// Message-ID.
    Broken(String),
}

impl SmtpPool {
    fn new(s: &SmtpSettings) -> Result<SmtpPool, String> {
        if s.security != SmtpSecurity::Plain {
            // Checked once here so that a bad host name fails at start-up.
            TlsParameters::new(s.host.clone()).map_err(|e| e.to_string())?;
        }
        let credentials = match (&s.username, s.password()) {
            (Some(user), Some(password)) => {
                Some(Credentials::new(user.clone(), password.to_string()))
            }
            _ => None,
        };
        Ok(SmtpPool {
            host: s.host.clone(),
            port: s.port,
            security: s.security,
            credentials,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Delivers `message` to its envelope's recipients.
    pub async fn send(&self, message: &Message) -> Result<(), String> {
        let envelope = message.envelope();
        let data = DotStuffed::new(&message.formatted())?;
        if let Some(mut conn) = self.checkout() {
            match transaction(&mut conn, envelope, &data).await {
                Ok(()) => {
                    self.checkin(conn);
                    return Ok(());
                }
                // Nothing was handed over: try once more on a new connection.
                Err(Failure::Stale(e)) => {
                    tracing::debug!(error = %e, "pooled SMTP connection was closed; reconnecting");
                }
                Err(Failure::Refused(e)) => return Err(self.after_refusal(conn, e).await),
                Err(Failure::Broken(e)) => return Err(e),
            }
        }
        let mut conn = self.connect().await.map_err(|e| e.to_string())?;
        match transaction(&mut conn, envelope, &data).await {
            Ok(()) => {
                self.checkin(conn);
                Ok(())
            }
            Err(Failure::Refused(e)) => Err(self.after_refusal(conn, e).await),
            Err(Failure::Stale(e) | Failure::Broken(e)) => Err(e),
        }
    }

    /// Resets a connection after the server refused a message, and keeps
    /// it if it is still good.
    async fn after_refusal(&self, mut conn: AsyncSmtpConnection, e: String) -> String {
        if conn.command(Rset).await.is_ok() {
            self.checkin(conn);
        }
        e
    }

    /// The most recently used idle connection still young enough, if any.
    fn checkout(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Oldest first: the ones past their time are at the front.
        idle.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        idle.pop().map(|(conn, _)| conn)
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let tls = || TlsParameters::new(self.host.clone());
        let wrapper = match self.security {
            SmtpSecurity::Tls => Some(tls()?),
            SmtpSecurity::Plain | SmtpSecurity::StartTls => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(CONNECT_TIMEOUT),
            &self.hello,
            wrapper,
            None,
        )
        .await?;
        if self.security == SmtpSecurity::StartTls {
            conn.starttls(tls()?, &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }
}

/// MAIL, RCPT for each recipient, DATA, then the message and its final
/// `.` in one write.
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    data: &DotStuffed,
) -> Result<(), Failure> {
    let mut options = Vec::new();
    let non_ascii = |a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii();
    if envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii) {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(Failure::Broken(
                "the address is not ASCII and the SMTP server does not support SMTPUTF8".into(),
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !data.0.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(Failure::Broken(
                "the message is not ASCII and the SMTP server does not support 8BITMIME".into(),
            ));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), options))
        .await
        .map_err(|e| {
            if is_refusal(&e) {
                Failure::Refused(e.to_string())
            } else {
                Failure::Stale(e.to_string())
            }
        })?;
    let refused_or_broken = |e: SmtpError| {
        if is_refusal(&e) {
            Failure::Refused(e.to_string())
        } else {
            Failure::Broken(e.to_string())
        }
    };
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), vec![]))
            .await
            .map_err(refused_or_broken)?;
    }
    conn.command(Data).await.map_err(refused_or_broken)?;
    conn.command(data).await.map_err(refused_or_broken)?;
    Ok(())
}

/// The server answered with a reply code that refuses this message but
/// keeps the session: any 4xx or 5xx but 421 (which closes it).
fn is_refusal(e: &SmtpError) -> bool {
    let closing = e.status().is_some_and(|c| c.to_string() == "421");
    (e.is_transient() || e.is_permanent()) && !closing
}

/// The message as DATA sends it: lines starting with `.` doubled (RFC
/// 5321 §4.5.2), then CRLF `.` CRLF. `Display` so that lettre's
/// `command` writes it in one go and then reads the reply.
struct DotStuffed(String);

impl DotStuffed {
    fn new(formatted: &[u8]) -> Result<DotStuffed, String> {
        let text = std::str::from_utf8(formatted)
            .map_err(|_| "the message is not valid UTF-8".to_string())?;
        let mut out = String::with_capacity(text.len() + 64);
        for line in text.split_inclusive('\n') {
            if line.starts_with('.') {
                out.push('.');
            }
            out.push_str(line);
        }
        if !out.ends_with("\r\n") {
            out.push_str("\r\n");
        }
        out.push_str(".\r\n");
        Ok(DotStuffed(out))
    }
}

impl std::fmt::Display for DotStuffed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
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

#[cfg(test)]
mod tests {
    use super::DotStuffed;

    #[test]
    fn data_doubles_leading_dots_and_ends_with_the_terminator() {
        let d = DotStuffed::new(b"Subject: x\r\n\r\n.hidden\r\nok\r\n..two\r\n.").unwrap();
        assert_eq!(
            d.0,
            "Subject: x\r\n\r\n..hidden\r\nok\r\n...two\r\n..\r\n.\r\n"
        );
        // A body already ending in CRLF gets only the terminator.
        assert_eq!(DotStuffed::new(b"a\r\n").unwrap().0, "a\r\n.\r\n");
        // A lone "." line inside the body would end DATA early: doubled.
        assert!(
            !DotStuffed::new(b"a\r\n.\r\nb\r\n")
                .unwrap()
                .0
                .contains("\r\n.\r\nb")
        );
        assert!(DotStuffed::new(&[0xff, 0xfe]).is_err(), "not UTF-8");
    }
}

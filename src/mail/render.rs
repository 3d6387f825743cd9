//! Turning an outbox row into a message: minting any one-time link it
//! carries, rendering subject, text and HTML from Askama templates, and
//! assembling a multipart message with a Date and a unique Message-ID.

use askama::Template;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

use crate::auth::secret::Secret;
use crate::auth::signin::{SIGNIN_LINK_TTL_SECONDS, signin_link_path};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::EmailAddress;
use crate::store::links::{self, LinkKind, NewLink};
use crate::store::outbox::OutboxMessage;
use crate::store::{Db, StoreError, orgs};

use super::Mail;

/// A message ready to send.
pub struct Prepared {
    pub message: Message,
    pub subject: String,
    pub links: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The message can never be sent (e.g. the recipient lost access).
    #[error("{0}")]
    Drop(String),
    /// Try again later (e.g. the database did not answer).
    #[error("{0}")]
    Retry(String),
}

impl From<StoreError> for PrepareError {
    fn from(e: StoreError) -> Self {
        PrepareError::Retry(e.to_string())
    }
}

impl From<askama::Error> for PrepareError {
    fn from(e: askama::Error) -> Self {
        PrepareError::Drop(format!("template error: {e}"))
    }
}

#[derive(Template)]
#[template(path = "emails/signin/subject.txt")]
struct SignInSubject;

#[derive(Template)]
#[template(path = "emails/signin/body.txt")]
struct SignInText<'a> {
    email: &'a str,
    link: &'a str,
    minutes: i64,
    base_url: &'a str,
}

#[derive(Template)]
#[template(path = "emails/signin/body.html")]
struct SignInHtml<'a> {
    email: &'a str,
    link: &'a str,
    minutes: i64,
    base_url: &'a str,
}

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub links: Vec<String>,
}

/// Renders the outbox row, minting its link if it has one.
pub async fn prepare(
    db: &Db,
    config: &Config,
    clock: &Clock,
    row: &OutboxMessage,
) -> Result<Prepared, PrepareError> {
    let mail: Mail = serde_json::from_str(&row.payload).map_err(|e| {
        PrepareError::Drop(format!(
            "unreadable payload for template {}: {e}",
            row.template
        ))
    })?;
    let rendered = match &mail {
        Mail::SignIn { next } => {
            render_sign_in(db, config, clock, &row.recipient, next.as_deref()).await?
        }
        notice => super::notices::render_notice(db, config, clock, notice).await?,
    };
    let message = assemble(config, row, &rendered)?;
    Ok(Prepared {
        message,
        subject: rendered.subject,
        links: rendered.links,
    })
}

async fn render_sign_in(
    db: &Db,
    config: &Config,
    clock: &Clock,
    recipient: &str,
    next: Option<&str>,
) -> Result<Rendered, PrepareError> {
    let email = EmailAddress::parse(recipient).map_err(|e| PrepareError::Drop(e.to_string()))?;
    let user = orgs::find_user_by_email(db, &email)
        .await?
        .ok_or_else(|| PrepareError::Drop("the recipient is no longer a user".into()))?;
    if orgs::active_memberships(db, user.id).await?.is_empty() {
        return Err(PrepareError::Drop(
            "the recipient has no active membership".into(),
        ));
    }
    // A new link retires the older ones, so only the newest email works.
    let secret = Secret::generate();
    let digest = secret.digest_hex();
    let now = clock.unix();
    let mut tx = db.begin().await?;
    links::retire_for_user(&mut tx, LinkKind::SignIn, user.id, now).await?;
    links::create(
        &mut tx,
        LinkKind::SignIn,
        &NewLink {
            secret_hash: &digest,
            user_id: Some(user.id),
            redirect_to: next,
            ttl_seconds: SIGNIN_LINK_TTL_SECONDS,
            ..NewLink::default()
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;

    let link = config.public_link(&signin_link_path(&secret));
    let base_url = config.public_link("");
    let minutes = SIGNIN_LINK_TTL_SECONDS / 60;
    Ok(Rendered {
        subject: SignInSubject.render()?.trim().to_string(),
        text: SignInText {
            email: email.as_str(),
            link: &link,
            minutes,
            base_url: &base_url,
        }
        .render()?,
        html: SignInHtml {
            email: email.as_str(),
            link: &link,
            minutes,
            base_url: &base_url,
        }
        .render()?,
        links: vec![link],
    })
}

/// The same for every attempt at one outbox row, so that a copy sent twice
/// (a crash between the SMTP server's 250 and the outbox update; a shutdown
/// mid-DATA) is recognisable as a duplicate by the receiver. The row's id
/// and time, with a hash that also covers its template and recipient, keep
/// it unique across databases that reuse ids; no payload (it may hold a
/// link) goes into it.
fn message_id(row: &OutboxMessage, domain: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(row.id.to_be_bytes())
        .chain_update(row.created_at.to_be_bytes())
        .chain_update(row.template.as_bytes())
        .chain_update([0])
        .chain_update(row.recipient.as_bytes())
        .finalize();
    format!(
        "<keysmith.{}.{}.{}@{domain}>",
        row.created_at,
        row.id,
        hex::encode(&digest[..8])
    )
}

fn assemble(config: &Config, row: &OutboxMessage, r: &Rendered) -> Result<Message, PrepareError> {
    let to: Mailbox = row
        .recipient
        .parse()
        .map_err(|e| PrepareError::Drop(format!("bad recipient address: {e}")))?;
    let domain = config.mail_from.email.domain().to_string();
    Message::builder()
        .from(config.mail_from.clone())
        .to(to)
        .subject(r.subject.clone())
        .message_id(Some(message_id(row, &domain)))
        .multipart(MultiPart::alternative_plain_html(
            r.text.clone(),
            r.html.clone(),
        ))
        .map_err(|e| PrepareError::Drop(format!("cannot build the message: {e}")))
}

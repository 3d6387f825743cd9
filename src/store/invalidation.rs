//! Telling every Keysmith instance that cached verification answers are out
//! of date. A write that kills or narrows tokens calls [`announce`] inside
//! its transaction; on PostgreSQL that is a `pg_notify` which other
//! instances' listeners receive only if the transaction commits. SQLite has
//! a single instance, so there is nobody to tell.

use sqlx::AnyConnection;

use super::{Backend, StoreResult};

/// The PostgreSQL channel the verifier's listener subscribes to.
pub const CHANNEL: &str = "keysmith_invalidate";

/// Which cached tokens a change affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// One token: revoked, disabled or enabled, scopes or expiry changed.
    Token(i64),
    /// Every token of one member in one organization: permission withdrawn
    /// or given back, member disabled or enabled.
    Member { organization_id: i64, user_id: i64 },
    /// Every token of an organization: its rate limits or token policy changed.
    Organization(i64),
}

impl Invalidation {
    /// The notification payload: `t:<id>`, `m:<org>:<user>` or `o:<id>`.
    pub fn to_payload(&self) -> String {
        match self {
            Invalidation::Token(id) => format!("t:{id}"),
            Invalidation::Member {
                organization_id,
                user_id,
            } => format!("m:{organization_id}:{user_id}"),
            Invalidation::Organization(id) => format!("o:{id}"),
        }
    }

    /// Reads a payload back; `None` for anything else (the listener then
    /// drops its whole cache rather than guess).
    pub fn from_payload(payload: &str) -> Option<Invalidation> {
        let mut parts = payload.split(':');
        let kind = parts.next()?;
        let first: i64 = parts.next()?.parse().ok()?;
        let what = match kind {
            "t" => Invalidation::Token(first),
            "o" => Invalidation::Organization(first),
            "m" => Invalidation::Member {
                organization_id: first,
                user_id: parts.next()?.parse().ok()?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(what)
    }
}

/// Called inside the write transaction that kills or narrows tokens: on
/// PostgreSQL it runs `SELECT pg_notify('keysmith_invalidate', <payload>)`,
/// delivered to other instances only if the transaction commits; on SQLite
/// it does nothing.
pub async fn announce(
    conn: &mut AnyConnection,
    backend: Backend,
    what: &Invalidation,
) -> StoreResult<()> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(what.to_payload())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for what in [
            Invalidation::Token(42),
            Invalidation::Member {
                organization_id: 7,
                user_id: 9,
            },
            Invalidation::Organization(3),
        ] {
            assert_eq!(Invalidation::from_payload(&what.to_payload()), Some(what));
        }
    }

    #[test]
    fn unknown_payloads_are_refused() {
        for bad in ["", "t", "t:", "t:x", "m:1", "m:1:2:3", "x:1", "t:1:2"] {
            assert_eq!(Invalidation::from_payload(bad), None, "{bad}");
        }
    }
}

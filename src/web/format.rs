//! How times read on the pages: relative ("3 minutes ago") with the exact
//! UTC time beside it (in `title` and `datetime`); and what a token's
//! status badge says (`TokenStatus`).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::store::from_unix;
use crate::store::tokens::TokenRecord;

/// `2026-11-23 17:52 UTC`
pub fn exact(ts: i64) -> String {
    from_unix(ts)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default()
}

/// `2026-11-23T17:52:00Z`, for `<time datetime>`.
pub fn iso(ts: i64) -> String {
    from_unix(ts).format(&Rfc3339).unwrap_or_default()
}

/// `just now`, `5 minutes ago`, `in 3 days`, `2 years ago`…
pub fn relative(ts: i64, now: i64) -> String {
    let delta = ts - now;
    let secs = delta.unsigned_abs();
    if secs < 45 {
        return "just now".into();
    }
    let (n, unit) = match secs {
        s if s < 90 * 60 => ((s + 30) / 60, "minute"),
        s if s < 36 * 3600 => ((s + 1800) / 3600, "hour"),
        s if s < 45 * 86400 => ((s + 43200) / 86400, "day"),
        s if s < 548 * 86400 => ((s + 15 * 86400) / (30 * 86400), "month"),
        s => ((s + 182 * 86400) / (365 * 86400), "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if delta < 0 {
        format!("{n} {unit}{plural} ago")
    } else {
        format!("in {n} {unit}{plural}")
    }
}

/// A calendar date, `2026-11-30` (the minimum of a date input).
pub fn date_only(at: OffsetDateTime) -> String {
    at.format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

/// A token expiring within this long is shown as "Expires soon".
pub use crate::store::tokens::EXPIRES_SOON_SECONDS;

/// What a token's badge says: the one place that decides it, for the
/// settings page, the Team pages and anything that counts tokens.
///
/// The order of the checks is the order of what matters most to the reader:
/// a revoked token is gone whatever else is true of it; an expired one will
/// never work again; a disabled one is off by someone's hand; a paused one
/// is blocked because its owner lost the permission or was disabled (giving
/// it back makes the token work again); only then is it live, soon to
/// expire or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Enabled,
    ExpiresSoon,
    Paused,
    Disabled,
    Expired,
    Revoked,
}

impl TokenStatus {
    /// The status of `t` at `now`. `owner_may_use` is false when the owner's
    /// membership no longer lets their tokens work (permission withdrawn or
    /// member disabled): see `Membership::may_manage_tokens`.
    pub fn of(t: &TokenRecord, owner_may_use: bool, now: i64) -> TokenStatus {
        if t.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if t.expires_at.is_some_and(|at| at <= now) {
            TokenStatus::Expired
        } else if t.disabled_at.is_some() {
            TokenStatus::Disabled
        } else if !owner_may_use {
            TokenStatus::Paused
        } else if t
            .expires_at
            .is_some_and(|at| at - now <= EXPIRES_SOON_SECONDS)
        {
            TokenStatus::ExpiresSoon
        } else {
            TokenStatus::Enabled
        }
    }

    /// The badge text.
    pub fn label(self) -> &'static str {
        match self {
            TokenStatus::Enabled => "Enabled",
            TokenStatus::ExpiresSoon => "Expires soon",
            TokenStatus::Paused => "Paused",
            TokenStatus::Disabled => "Disabled",
            TokenStatus::Expired => "Expired",
            TokenStatus::Revoked => "Revoked",
        }
    }

    /// A stable name: the CSS class suffix (`badge-…`, `status-…`) and the
    /// value of the list's `status` filter.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Enabled => "enabled",
            TokenStatus::ExpiresSoon => "expiring",
            TokenStatus::Paused => "paused",
            TokenStatus::Disabled => "disabled",
            TokenStatus::Expired => "expired",
            TokenStatus::Revoked => "revoked",
        }
    }

    /// The token would pass verification now (enabled, expiring soon or not).
    pub fn works(self) -> bool {
        matches!(self, TokenStatus::Enabled | TokenStatus::ExpiresSoon)
    }

    /// On, as far as its own switch goes: not disabled, not revoked.
    /// (An expired or paused token's switch still reads its own state.)
    pub fn switch_on(t: &TokenRecord) -> bool {
        t.disabled_at.is_none() && t.revoked_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = 1_800_000_000;
        assert_eq!(relative(now - 10, now), "just now");
        assert_eq!(relative(now - 60, now), "1 minute ago");
        assert_eq!(relative(now - 5 * 60, now), "5 minutes ago");
        assert_eq!(relative(now - 3 * 3600, now), "3 hours ago");
        assert_eq!(relative(now + 7 * 86400, now), "in 7 days");
        assert_eq!(relative(now - 400 * 86400, now), "13 months ago");
        assert_eq!(relative(now - 800 * 86400, now), "2 years ago");
    }

    #[test]
    fn exact_is_utc_and_unambiguous() {
        assert_eq!(exact(0), "1970-01-01 00:00 UTC");
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
    }

    fn token(
        expires_at: Option<i64>,
        disabled_at: Option<i64>,
        revoked_at: Option<i64>,
    ) -> TokenRecord {
        TokenRecord {
            id: 1,
            user_id: 1,
            organization_id: 1,
            label: "t".into(),
            display_prefix: "ks_x".into(),
            scopes: crate::token::ScopeSet::from_stored("read"),
            created_at: 0,
            created_ip: None,
            created_user_agent: None,
            expires_at,
            disabled_at,
            revoked_at,
            revoked_reason: None,
            last_used_at: None,
            last_used_method: None,
            last_used_path: None,
            last_used_ip: None,
            disabled_by: None,
        }
    }

    #[test]
    fn status_says_what_matters_most_first() {
        let now = 1_800_000_000;
        let day = 86_400;
        let of = |t: &TokenRecord, owner: bool| TokenStatus::of(t, owner, now);
        assert_eq!(of(&token(None, None, None), true), TokenStatus::Enabled);
        assert_eq!(
            of(&token(Some(now + 30 * day), None, None), true),
            TokenStatus::Enabled
        );
        assert_eq!(
            of(&token(Some(now + 5 * day), None, None), true),
            TokenStatus::ExpiresSoon
        );
        assert_eq!(
            of(&token(Some(now + 7 * day), None, None), true),
            TokenStatus::ExpiresSoon
        );
        assert_eq!(
            of(&token(Some(now), None, None), true),
            TokenStatus::Expired
        );
        assert_eq!(of(&token(None, Some(1), None), true), TokenStatus::Disabled);
        assert_eq!(of(&token(None, None, None), false), TokenStatus::Paused);
        // Disabled by hand beats paused; expired beats disabled; revoked beats all.
        assert_eq!(
            of(&token(None, Some(1), None), false),
            TokenStatus::Disabled
        );
        assert_eq!(
            of(&token(Some(now - 1), Some(1), None), false),
            TokenStatus::Expired
        );
        assert_eq!(
            of(&token(Some(now - 1), Some(1), Some(2)), false),
            TokenStatus::Revoked
        );
        assert!(TokenStatus::ExpiresSoon.works() && !TokenStatus::Paused.works());
        assert_eq!(TokenStatus::Paused.label(), "Paused");
        assert_eq!(TokenStatus::ExpiresSoon.as_str(), "expiring");
    }
}

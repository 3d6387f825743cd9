//! When a token stops working.
//!
//! This file owns the [`Expiry`] of a token, its storage form (integer unix
//! seconds, which both SQLite and PostgreSQL handle the same way), and the
//! rules for choosing one when a token is created.

use time::{Duration, OffsetDateTime, PrimitiveDateTime};

/// The longest lifetime a new token may be given: 3650 days (10 years).
const MAX_DAYS: u32 = 3650;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    At(OffsetDateTime),
}

impl Expiry {
    /// A token at or past its expiry instant is dead: `At(t)` grants access
    /// strictly before `t`.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        match self {
            Expiry::Never => false,
            Expiry::At(at) => now >= *at,
        }
    }

    /// Reads the stored form: `None` means no expiry.
    ///
    /// A value outside what `time` can represent (only possible if the row
    /// was edited by hand) is clamped to the nearest representable instant,
    /// which keeps its meaning: far future or far past.
    pub fn from_unix(seconds: Option<i64>) -> Expiry {
        match seconds {
            None => Expiry::Never,
            Some(s) => Expiry::At(OffsetDateTime::from_unix_timestamp(s).unwrap_or_else(|_| {
                if s > 0 {
                    PrimitiveDateTime::MAX.assume_utc()
                } else {
                    PrimitiveDateTime::MIN.assume_utc()
                }
            })),
        }
    }

    /// The stored form: whole unix seconds, `None` for no expiry.
    pub fn to_unix(&self) -> Option<i64> {
        match self {
            Expiry::Never => None,
            Expiry::At(at) => Some(at.unix_timestamp()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error("expiry must be in the future")]
    InPast,
    #[error("expiry must be at most 10 years (3650 days) from now")]
    TooFar,
}

/// Checks an expiry chosen for a new token: `None` is "never"; an instant
/// must be in the future and at most 10 years away.
///
/// The instant is truncated to whole seconds *before* the future check, so
/// what is stored (unix seconds) is itself in the future.
pub fn parse_new_expiry(
    at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Expiry, ExpiryError> {
    let Some(at) = at else {
        return Ok(Expiry::Never);
    };
    // `None` only when `now` is within 10 years of the end of time, where
    // nothing representable can be too far.
    if let Some(limit) = now.checked_add(Duration::days(i64::from(MAX_DAYS)))
        && at > limit
    {
        return Err(ExpiryError::TooFar);
    }
    let at = at.truncate_to_second();
    if at <= now {
        return Err(ExpiryError::InPast);
    }
    Ok(Expiry::At(at))
}

/// An expiry `days` days from `now` (the form's presets are 7, 30, 60 and
/// 90; anything in 1..=3650 is allowed).
///
/// The bounds are [`parse_new_expiry`]'s: 0 days is "now", so `InPast`, and
/// more than 3650 days is `TooFar`.
pub fn expiry_in_days(days: u32, now: OffsetDateTime) -> Result<Expiry, ExpiryError> {
    // `None` only past the end of representable time: certainly too far.
    let at = now
        .checked_add(Duration::days(i64::from(days)))
        .ok_or(ExpiryError::TooFar)?;
    parse_new_expiry(Some(at), now)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2025-06-01 12:00:00.5 UTC);

    #[test]
    fn never_never_expires() {
        assert!(!Expiry::Never.is_expired_at(PrimitiveDateTime::MAX.assume_utc()));
    }

    #[test]
    fn token_is_alive_before_its_expiry() {
        let expiry = Expiry::At(NOW);
        assert!(!expiry.is_expired_at(NOW - Duration::nanoseconds(1)));
    }

    #[test]
    fn token_is_dead_at_its_expiry_instant() {
        assert!(Expiry::At(NOW).is_expired_at(NOW));
    }

    #[test]
    fn token_is_dead_after_its_expiry() {
        assert!(Expiry::At(NOW).is_expired_at(NOW + Duration::seconds(1)));
    }

    #[test]
    fn expiry_compares_instants_across_offsets() {
        let at = datetime!(2025-06-01 14:00:00 +02:00);
        assert!(Expiry::At(at).is_expired_at(datetime!(2025-06-01 12:00:00 UTC)));
        assert!(!Expiry::At(at).is_expired_at(datetime!(2025-06-01 11:59:59 UTC)));
    }

    #[test]
    fn storage_form_is_unix_seconds() {
        assert_eq!(Expiry::Never.to_unix(), None);
        assert_eq!(Expiry::from_unix(None), Expiry::Never);
        let at = datetime!(2025-06-01 12:00:00 UTC);
        assert_eq!(Expiry::At(at).to_unix(), Some(1_748_779_200));
        assert_eq!(Expiry::from_unix(Some(1_748_779_200)), Expiry::At(at));
    }

    #[test]
    fn from_unix_clamps_out_of_range_values() {
        assert_eq!(
            Expiry::from_unix(Some(i64::MAX)),
            Expiry::At(PrimitiveDateTime::MAX.assume_utc())
        );
        assert_eq!(
            Expiry::from_unix(Some(i64::MIN)),
            Expiry::At(PrimitiveDateTime::MIN.assume_utc())
        );
        assert!(!Expiry::from_unix(Some(i64::MAX)).is_expired_at(NOW));
        assert!(Expiry::from_unix(Some(i64::MIN)).is_expired_at(NOW));
    }

    #[test]
    fn new_expiry_none_is_never() {
        assert_eq!(parse_new_expiry(None, NOW), Ok(Expiry::Never));
    }

    #[test]
    fn new_expiry_rejects_the_past() {
        let past = NOW - Duration::days(1);
        assert_eq!(parse_new_expiry(Some(past), NOW), Err(ExpiryError::InPast));
        assert_eq!(
            ExpiryError::InPast.to_string(),
            "expiry must be in the future"
        );
    }

    #[test]
    fn new_expiry_rejects_now() {
        assert_eq!(parse_new_expiry(Some(NOW), NOW), Err(ExpiryError::InPast));
    }

    #[test]
    fn new_expiry_rejects_an_instant_that_truncates_to_the_past() {
        // 12:00:00.9 truncates to 12:00:00, before NOW (12:00:00.5).
        let soon = NOW + Duration::milliseconds(400);
        assert_eq!(parse_new_expiry(Some(soon), NOW), Err(ExpiryError::InPast));
    }

    #[test]
    fn new_expiry_accepts_the_next_second() {
        let next = datetime!(2025-06-01 12:00:01 UTC);
        assert_eq!(parse_new_expiry(Some(next), NOW), Ok(Expiry::At(next)));
    }

    #[test]
    fn new_expiry_is_truncated_to_whole_seconds() {
        let at = datetime!(2025-07-01 08:30:15.999 UTC);
        assert_eq!(
            parse_new_expiry(Some(at), NOW),
            Ok(Expiry::At(datetime!(2025-07-01 08:30:15 UTC)))
        );
    }

    #[test]
    fn new_expiry_accepts_exactly_ten_years() {
        let at = NOW + Duration::days(3650);
        assert!(parse_new_expiry(Some(at), NOW).is_ok());
    }

    #[test]
    fn new_expiry_rejects_more_than_ten_years() {
        let at = NOW + Duration::days(3650) + Duration::seconds(1);
        assert_eq!(parse_new_expiry(Some(at), NOW), Err(ExpiryError::TooFar));
    }

    #[test]
    fn new_expiry_at_the_end_of_time_does_not_panic() {
        let end = PrimitiveDateTime::MAX.assume_utc();
        let now = end - Duration::days(1);
        assert_eq!(
            parse_new_expiry(Some(end), now),
            Ok(Expiry::At(end.truncate_to_second()))
        );
        assert_eq!(expiry_in_days(30, now), Err(ExpiryError::TooFar));
    }

    #[test]
    fn expiry_in_days_rejects_zero() {
        assert_eq!(expiry_in_days(0, NOW), Err(ExpiryError::InPast));
    }

    #[test]
    fn expiry_in_days_rejects_more_than_3650() {
        assert_eq!(expiry_in_days(3651, NOW), Err(ExpiryError::TooFar));
        assert_eq!(expiry_in_days(u32::MAX, NOW), Err(ExpiryError::TooFar));
    }

    #[test]
    fn expiry_in_days_is_that_many_days_ahead_in_whole_seconds() {
        for days in [1, 7, 30, 60, 90, 3650] {
            let expected = (NOW + Duration::days(i64::from(days))).truncate_to_second();
            assert_eq!(
                expiry_in_days(days, NOW),
                Ok(Expiry::At(expected)),
                "{days}"
            );
        }
    }

    proptest! {
        #[test]
        fn unix_seconds_round_trip(s in -62_000_000_000i64..250_000_000_000) {
            prop_assert_eq!(Expiry::from_unix(Some(s)).to_unix(), Some(s));
        }

        #[test]
        fn accepted_expiries_are_future_whole_seconds_within_ten_years(
            offset_ms in -1_000_000i64..400_000_000_000,
        ) {
            let at = NOW + Duration::milliseconds(offset_ms);
            match parse_new_expiry(Some(at), NOW) {
                Ok(Expiry::At(stored)) => {
                    prop_assert!(stored > NOW);
                    prop_assert!(stored <= NOW + Duration::days(3650));
                    prop_assert_eq!(stored.nanosecond(), 0);
                    prop_assert!(!Expiry::At(stored).is_expired_at(NOW));
                }
                Ok(Expiry::Never) => prop_assert!(false, "an instant became Never"),
                Err(ExpiryError::InPast) => prop_assert!(at.truncate_to_second() <= NOW),
                Err(ExpiryError::TooFar) => prop_assert!(at > NOW + Duration::days(3650)),
            }
        }

        #[test]
        fn expiry_in_days_accepts_every_allowed_day_count(days in 1u32..=3650) {
            prop_assert!(matches!(expiry_in_days(days, NOW), Ok(Expiry::At(_))));
        }
    }
}

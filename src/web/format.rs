//! How times read on the pages: relative ("3 minutes ago") with the exact
//! UTC time beside it (in `title` and `datetime`).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::store::from_unix;

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
}

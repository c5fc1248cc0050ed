//! Windows and watermarks (DESIGN §3).

use chrono::{DateTime, Duration, Utc};

/// `[from, to)`: what one query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Where the next run starts reading: the watermark less the lookback, so rows whose
/// transactions committed late are read again; on the first run, `initial_watermark`
/// or the Unix epoch.
pub fn next_start(
    watermark: Option<DateTime<Utc>>,
    initial_watermark: Option<DateTime<Utc>>,
    lookback_seconds: u32,
) -> DateTime<Utc> {
    match watermark {
        Some(w) => w - Duration::seconds(lookback_seconds.into()),
        None => initial_watermark.unwrap_or(DateTime::UNIX_EPOCH),
    }
}

/// The consecutive windows from `start` up to `end` (the source's clock at run start),
/// each at most `max` long. Without a `max` (or when the template has no upper bound)
/// there is one window. Nothing when `start` is not before `end`.
pub fn windows(start: DateTime<Utc>, end: DateTime<Utc>, max: Option<Duration>) -> impl Iterator<Item = Window> {
    let mut from = start;
    std::iter::from_fn(move || {
        if from >= end {
            return None;
        }
        let to = max.map_or(end, |m| (from + m).min(end));
        let w = Window { from, to };
        from = to;
        Some(w)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, h, 0, 0).unwrap()
    }

    #[test]
    fn start_applies_lookback_only_after_the_first_run() {
        assert_eq!(next_start(None, None, 300), DateTime::UNIX_EPOCH);
        assert_eq!(next_start(None, Some(t(3)), 300), t(3));
        assert_eq!(next_start(Some(t(3)), Some(t(1)), 300), t(3) - Duration::seconds(300));
    }

    #[test]
    fn windows_split_by_max_and_end_at_the_source_clock() {
        let w: Vec<_> = windows(t(0), t(5), Some(Duration::hours(2))).collect();
        assert_eq!(
            w,
            vec![
                Window { from: t(0), to: t(2) },
                Window { from: t(2), to: t(4) },
                Window { from: t(4), to: t(5) }
            ]
        );
        assert_eq!(windows(t(0), t(5), None).count(), 1);
        assert_eq!(windows(t(5), t(5), None).count(), 0);
        assert_eq!(windows(t(6), t(5), None).count(), 0);
    }
}

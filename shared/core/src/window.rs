//! Windows and watermarks (DESIGN §3).

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::ports::{OpenTransaction, OpenTransactions};

/// `[from, to)`: what one query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A transaction open longer than this is named in a warning: the source waits for it.
pub const LONG_TRANSACTION: Duration = Duration::hours(1);

/// Where a run's windows end, and why, in words for the run's log, the CLI and the
/// preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpperBound {
    pub at: DateTime<Utc>,
    pub reason: String,
    /// The transaction holding the bound back, when it has been open longer than
    /// [`LONG_TRANSACTION`].
    pub long_open: Option<OpenTransaction>,
}

/// The upper bound of the windows: the database's `clock`, capped at the start of the
/// oldest transaction still open, whose rows may carry earlier times than the clock
/// once they commit. A transaction begun at or after `clock` writes nothing before it.
/// Uncapped, the bound is the clock exactly, as it always was.
pub fn upper_bound(clock: DateTime<Utc>, open: OpenTransactions) -> UpperBound {
    match open {
        OpenTransactions::Seen(Some(t)) if t.started_at < clock => {
            let mut reason = format!(
                "capped at the oldest open transaction, started {} by {}",
                t.started_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                t.session
            );
            let open_for = clock - t.started_at;
            let long_open = (open_for > LONG_TRANSACTION).then(|| {
                reason.push_str(&format!(
                    "; open for {} minutes, it holds this source back until it ends (nothing is lost: its rows are read once it commits); end it if it is stuck",
                    open_for.num_minutes()
                ));
                t.clone()
            });
            UpperBound {
                at: t.started_at,
                reason,
                long_open,
            }
        }
        OpenTransactions::Seen(_) => UpperBound {
            at: clock,
            reason: "database clock: no other transaction open".into(),
            long_open: None,
        },
        OpenTransactions::Unseen(why) => UpperBound {
            at: clock,
            reason: format!("database clock: {why}"),
            long_open: None,
        },
    }
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

    fn held_by(started_at: DateTime<Utc>) -> OpenTransactions {
        OpenTransactions::Seen(Some(OpenTransaction {
            started_at,
            session: "pid 4711".into(),
        }))
    }

    #[test]
    fn the_bound_is_the_clock_unless_an_older_transaction_is_open() {
        let clock = t(5);
        let capped = upper_bound(clock, held_by(t(5) - Duration::seconds(3)));
        assert_eq!(capped.at, t(5) - Duration::seconds(3));
        assert_eq!(
            capped.reason,
            "capped at the oldest open transaction, started 2025-01-01T04:59:57Z by pid 4711"
        );
        assert_eq!(capped.long_open, None);
        // A transaction that began at or after the clock's reading holds nothing back.
        assert_eq!(upper_bound(clock, held_by(t(5))).at, clock);
        assert_eq!(upper_bound(clock, held_by(t(6))).at, clock);
        let idle = upper_bound(clock, OpenTransactions::Seen(None));
        assert_eq!(
            (idle.at, idle.reason.as_str()),
            (clock, "database clock: no other transaction open")
        );
        let unseen = upper_bound(clock, OpenTransactions::Unseen("grant pg_read_all_stats".into()));
        assert_eq!(
            (unseen.at, unseen.reason.as_str()),
            (clock, "database clock: grant pg_read_all_stats")
        );
    }

    #[test]
    fn a_transaction_open_past_an_hour_still_caps_and_is_named() {
        let bound = upper_bound(t(5), held_by(t(2)));
        assert_eq!(bound.at, t(2), "nothing is lost: the bound still waits for it");
        assert!(bound.long_open.is_some());
        assert!(bound.reason.contains("open for 180 minutes"), "{}", bound.reason);
        assert!(
            upper_bound(t(5), held_by(t(4))).long_open.is_none(),
            "an hour exactly is not long"
        );
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

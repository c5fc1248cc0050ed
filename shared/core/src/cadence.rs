//! The adaptive schedule (DESIGN §7, as Plecto documents it): a source whose imports
//! take long is synced less often, and returns toward its configured frequency after
//! consistently fast runs.
//!
//! | configured | import time | effective |
//! |---|---|---|
//! | 1 min | 30–120 s | 5 min |
//! | 1 or 5 min | 120–180 s | 15 min |
//! | 1, 5 or 15 min | 180 s and more | 1 hour |
//!
//! A custom frequency follows the step it is below: 3 minutes adapts as 1 does, 10 as 5
//! does; more than 15 minutes never adapts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The steps the effective frequency moves between, in minutes.
const STEPS: [u32; 4] = [1, 5, 15, 60];
/// A step is left toward the configured frequency after this many fast runs in a row.
pub const FAST_RUNS_TO_RETURN: u32 = 3;
/// A run is fast for a step when it takes less than this share of the import time that
/// leads to the step: the gap between the two thresholds keeps the schedule from
/// flapping around one of them.
const HYSTERESIS: f64 = 0.8;

/// Where a source's schedule stands, kept with the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cadence {
    /// The frequency the schedule runs at; 0 means the configured one.
    pub effective_minutes: u32,
    /// Fast runs in a row at this frequency.
    pub fast_runs: u32,
}

impl Cadence {
    pub fn minutes(&self, configured: u32) -> u32 {
        match self.effective_minutes {
            0 => configured,
            m => m.max(configured),
        }
    }

    /// The cadence after a successful run that took `took`.
    pub fn after_run(self, configured: u32, took: Duration) -> Cadence {
        let current = self.minutes(configured);
        let target = slowest_needed(configured, took.as_secs_f64());
        if target > current {
            return Cadence {
                effective_minutes: target,
                fast_runs: 0,
            };
        }
        if current == configured {
            return Cadence::default();
        }
        let fast = took.as_secs_f64() < threshold(current) * HYSTERESIS;
        if !fast {
            return Cadence {
                effective_minutes: current,
                fast_runs: 0,
            };
        }
        if self.fast_runs + 1 < FAST_RUNS_TO_RETURN {
            return Cadence {
                effective_minutes: current,
                fast_runs: self.fast_runs + 1,
            };
        }
        // One step back toward the configured frequency.
        let back = STEPS
            .iter()
            .rev()
            .copied()
            .find(|s| *s < current)
            .unwrap_or(configured)
            .max(configured)
            .max(target);
        Cadence {
            effective_minutes: if back == configured { 0 } else { back },
            fast_runs: 0,
        }
    }
}

/// The frequency an import of `seconds` calls for (the table above).
fn slowest_needed(configured: u32, seconds: f64) -> u32 {
    if seconds >= 180.0 && configured <= 15 {
        60
    } else if seconds >= 120.0 && configured < 15 {
        15
    } else if seconds >= 30.0 && configured < 5 {
        5
    } else {
        configured
    }
}

/// The import time that leads to the step `minutes`.
fn threshold(minutes: u32) -> f64 {
    match minutes {
        m if m >= 60 => 180.0,
        m if m >= 15 => 120.0,
        _ => 30.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn every_row_of_the_table() {
        let after = |configured, took| Cadence::default().after_run(configured, secs(took)).minutes(configured);
        // configured 1 min
        assert_eq!(after(1, 29), 1);
        assert_eq!(after(1, 30), 5);
        assert_eq!(after(1, 119), 5);
        assert_eq!(after(1, 120), 15);
        assert_eq!(after(1, 179), 15);
        assert_eq!(after(1, 180), 60);
        assert_eq!(after(1, 360), 60);
        // configured 5 min
        assert_eq!(after(5, 119), 5);
        assert_eq!(after(5, 120), 15);
        assert_eq!(after(5, 180), 60);
        // configured 15 min
        assert_eq!(after(15, 179), 15);
        assert_eq!(after(15, 180), 60);
        // custom frequencies follow the step they are below
        assert_eq!(after(3, 40), 5);
        assert_eq!(after(10, 40), 10);
        assert_eq!(after(10, 130), 15);
        assert_eq!(after(12, 200), 60);
        assert_eq!(after(20, 900), 20);
        // configured 30 min and more never adapt
        assert_eq!(after(30, 900), 30);
        assert_eq!(after(60, 900), 60);
    }

    #[test]
    fn it_returns_step_by_step_after_consistently_fast_runs() {
        let mut c = Cadence::default().after_run(1, secs(200));
        assert_eq!(c.minutes(1), 60);
        let mut path = Vec::new();
        for _ in 0..9 {
            c = c.after_run(1, secs(5));
            path.push(c.minutes(1));
        }
        assert_eq!(path, [60, 60, 15, 15, 15, 5, 5, 5, 1]);
        assert_eq!(c, Cadence::default());
    }

    #[test]
    fn a_custom_frequency_returns_to_itself() {
        let mut c = Cadence::default().after_run(3, secs(200));
        assert_eq!(c.minutes(3), 60);
        let mut path = Vec::new();
        for _ in 0..9 {
            c = c.after_run(3, secs(5));
            path.push(c.minutes(3));
        }
        assert_eq!(path, [60, 60, 15, 15, 15, 5, 5, 5, 3]);
        assert_eq!(c, Cadence::default());
    }

    #[test]
    fn it_does_not_flap_around_a_threshold() {
        // Runs alternating just under and just over 30 s keep a 1-minute source at 5.
        let mut c = Cadence::default();
        let mut seen = Vec::new();
        for i in 0..12 {
            c = c.after_run(1, secs(if i % 2 == 0 { 31 } else { 28 }));
            seen.push(c.minutes(1));
        }
        assert!(seen.iter().all(|m| *m == 5), "{seen:?}");
        // A slow run in a fast streak restarts the count.
        let mut c = Cadence::default().after_run(1, secs(40));
        c = c.after_run(1, secs(5));
        c = c.after_run(1, secs(5));
        c = c.after_run(1, secs(25));
        assert_eq!((c.minutes(1), c.fast_runs), (5, 0));
        // Slower still moves up at once.
        assert_eq!(c.after_run(1, secs(130)).minutes(1), 15);
    }
}

//! Read-ahead, local and remote: how many queue entries a dispatcher reads beyond what its
//! executor processes (or its workers) can take now, so that a process that frees up needs one
//! claim, not a read and a claim, and the queue is read once per many tasks instead of once per
//! task.
//!
//! Entries read ahead stay QUEUED (in this consumer's pending list, not claimed): a cancel still
//! cancels them as queued, and after a kill -9 they are recovered like any pending entry. What
//! they cost is fairness: another dispatcher cannot read them meanwhile. So the depth follows the
//! pace of recent runs and holds at most [`AHEAD_BUDGET`] of work per process (none while runs
//! are long, or before the first one ended), and at most [`MAX_PER_PROCESS`] entries. A
//! dispatcher that stops hands what it read ahead back to the queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Work (at the recent pace) read ahead per executor process.
pub const AHEAD_BUDGET: Duration = Duration::from_millis(5);
/// Most entries read ahead per executor process.
pub const MAX_PER_PROCESS: usize = 8;

/// Recent pace of runs: how long one took, rising at once to a longer run and falling back by an
/// eighth of the way per shorter one (0 = none ended yet). Rising at once matters when tasks
/// turn long: the next read then takes nothing ahead that another dispatcher could have run.
#[derive(Debug, Default)]
pub struct Pace(AtomicU64);

impl Pace {
    /// Counts one run that took `took`.
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == 0 || us >= old {
            us
        } else {
            let (old, us) = (i128::from(old), i128::from(us));
            u64::try_from(old + (us - old) / 8).unwrap_or(1).max(1)
        };
        self.0.store(new, Ordering::Relaxed);
    }

    /// The average run time, if any run ended.
    pub fn average(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// Entries to read ahead for `processes` executor processes whose runs take `average`.
pub fn depth(processes: usize, average: Option<Duration>) -> usize {
    let Some(avg) = average else { return 0 };
    let per = AHEAD_BUDGET.as_micros() / avg.as_micros().max(1);
    let per = usize::try_from(per)
        .unwrap_or(usize::MAX)
        .min(MAX_PER_PROCESS);
    per.saturating_mul(processes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_follows_the_pace() {
        let ms = |m: f64| Some(Duration::from_secs_f64(m / 1000.0));
        let table: &[(usize, Option<Duration>, usize)] = &[
            (2, None, 0),       // nothing ended yet: read only what runs now
            (2, ms(0.3), 16),   // no-op tasks: capped at 8 per process
            (2, ms(1.0), 10),   // 5 ms of work per process
            (4, ms(2.0), 8),    // 2 per process
            (2, ms(5.0), 2),    // one task each
            (2, ms(6.0), 0),    // longer than the budget: none
            (64, ms(100.0), 0), // sleep tasks: none
            (2, Some(Duration::ZERO), 16),
        ];
        for &(processes, avg, want) in table {
            assert_eq!(
                depth(processes, avg),
                want,
                "{processes} processes, {avg:?}"
            );
        }
    }

    #[test]
    fn pace_rises_at_once_and_falls_by_an_eighth() {
        let p = Pace::default();
        assert_eq!(p.average(), None);
        p.observe(Duration::from_micros(800));
        assert_eq!(p.average(), Some(Duration::from_micros(800)));
        p.observe(Duration::from_micros(0));
        assert_eq!(p.average(), Some(Duration::from_micros(701)));
        p.observe(Duration::from_secs(1));
        assert_eq!(p.average(), Some(Duration::from_secs(1)));
        assert_eq!(
            depth(2, p.average()),
            0,
            "a long run stops the read-ahead at once"
        );
        for _ in 0..100 {
            p.observe(Duration::from_micros(300));
        }
        assert!(p.average() < Some(Duration::from_micros(310)));
    }
}

//! The watchdog rule: a dispatcher pings systemd's watchdog only while it can show it works.
//!
//! The loop that pings (local: the dispatch loop; pull/push: the event loop) proves itself by
//! turning. The queue reader proves itself with a *sign*, at least every [`GRACE`]:
//!
//! - a queue read or recovery pass completed (with entries or, after its `BLOCK`, without), or
//! - Redis was found unavailable (a connection attempt failed, or Redis answered `LOADING` or
//!   `MASTERDOWN`: the daemon's [`Health`](crate::store::Health) says so): the reader waits for
//!   Redis, and restarting the dispatcher would not bring Redis back; or
//! - it waits for capacity (no free executor or worker slot), which needs nothing from Redis.
//!
//! A read that failed because its connection broke gives no sign either way: the next connection
//! attempt, at most a second later, decides. A reader whose reads keep failing while Redis
//! answers (a bug, a revoked permission, a wedged connection) gives no sign: the pings stop after [`GRACE`] and systemd restarts the dispatcher
//! `WatchdogSec` later. Such a failure is logged once when it begins and once when it ends, and
//! shown in the `STATUS=` line meanwhile.
//!
//! [`sign`] and [`proves_life`] are the rule (pure, table-tested); [`Pulse`] carries the reader's
//! latest sign to the loop that pings.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::StoreError;

/// How long a sign of the queue reader counts: longer than its longest legitimate silence (a
/// read's `BLOCK` plus its response timeout plus a connection attempt, about 4 s).
pub const GRACE: Duration = Duration::from_secs(5);

/// The reader's latest sign of life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// It read, or found Redis unavailable, at this instant.
    At(Instant),
    /// It waits for capacity, which does not depend on Redis.
    Waiting,
}

/// What one use of Redis by the reader came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The read or pass completed.
    Done,
    /// It failed, and Redis is unavailable.
    RedisDown,
    /// It failed, its connection broke and the next connection attempt (at most a second away)
    /// decides whether Redis is down.
    Reconnecting,
    /// It failed while Redis is reachable and the reader connected.
    Failed,
}

impl Outcome {
    /// Sorts a read's result by the daemon's Redis health and the reader's connection state.
    pub fn of<E>(result: Result<(), E>, redis_down: bool, connected: bool) -> Outcome {
        match result {
            Ok(()) => Outcome::Done,
            Err(_) if redis_down => Outcome::RedisDown,
            Err(_) if !connected => Outcome::Reconnecting,
            Err(_) => Outcome::Failed,
        }
    }
}

/// Pause after a failed read while Redis answers (it may well fail again).
pub const FAILED_PAUSE: Duration = Duration::from_secs(1);
/// Shortest pause after a read failed because Redis is unavailable.
pub const DOWN_PAUSE: Duration = Duration::from_millis(100);

/// How long the reader waits after `outcome` before it reads again; `retry_in` is the time
/// until its connection may be attempted again (at most 1 s).
pub fn pause_after(outcome: Outcome, retry_in: Duration) -> Duration {
    match outcome {
        Outcome::Done => Duration::ZERO,
        Outcome::RedisDown | Outcome::Reconnecting => retry_in.max(DOWN_PAUSE),
        Outcome::Failed => FAILED_PAUSE.max(retry_in),
    }
}

/// The sign an outcome at `now` gives, if any.
pub fn sign(outcome: Outcome, now: Instant) -> Option<Sign> {
    match outcome {
        Outcome::Done | Outcome::RedisDown => Some(Sign::At(now)),
        Outcome::Reconnecting | Outcome::Failed => None,
    }
}

/// Whether `sign` still proves the reader alive at `now`.
pub fn proves_life(sign: Sign, now: Instant, grace: Duration) -> bool {
    match sign {
        Sign::At(t) => now.saturating_duration_since(t) <= grace,
        Sign::Waiting => true,
    }
}

#[derive(Debug)]
struct State {
    sign: Sign,
    /// The failure that keeps the reader from reading while Redis is reachable.
    failing: Option<String>,
}

/// The queue reader's latest sign, shared with the loop that pings the watchdog.
#[derive(Debug)]
pub struct Pulse {
    state: Mutex<State>,
}

impl Default for Pulse {
    fn default() -> Self {
        Pulse {
            state: Mutex::new(State {
                sign: Sign::At(Instant::now()),
                failing: None,
            }),
        }
    }
}

impl Pulse {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what a read or recovery pass came to; `redis_down` is the daemon's health and
    /// `connected` the reader's connection state after a failure. Logs the beginning and the end
    /// of a failure while Redis is reachable.
    pub fn record(
        &self,
        result: Result<(), &StoreError>,
        redis_down: bool,
        connected: bool,
    ) -> Outcome {
        let outcome = Outcome::of(result, redis_down, connected);
        let mut st = self.lock();
        if let Some(s) = sign(outcome, Instant::now()) {
            st.sign = s;
        }
        match (outcome, result) {
            (Outcome::Failed, Err(e)) => {
                if st.failing.is_none() {
                    tracing::warn!(error = %e, "reading the queue failed although Redis is reachable; retrying \
                        (the watchdog is no longer pinged if this lasts)");
                }
                st.failing = Some(e.to_string());
            }
            (Outcome::Done, _) if st.failing.take().is_some() => {
                tracing::info!("reading the queue works again");
            }
            _ => {}
        }
        outcome
    }

    /// The reader starts waiting for capacity.
    pub fn waiting(&self) {
        self.lock().sign = Sign::Waiting;
    }

    /// The reader stops waiting for capacity.
    pub fn resumed(&self) {
        let mut st = self.lock();
        if st.sign == Sign::Waiting {
            st.sign = Sign::At(Instant::now());
        }
    }

    /// True while the reader's latest sign proves it alive.
    pub fn alive(&self) -> bool {
        proves_life(self.lock().sign, Instant::now(), GRACE)
    }

    /// The error of a read failing while Redis is reachable.
    pub fn failing(&self) -> Option<String> {
        self.lock().failing.clone()
    }

    /// `", queue reader failing: <error>"` while reads fail with Redis reachable, else empty: the
    /// end of a `STATUS=` line.
    pub fn status_note(&self) -> String {
        self.failing()
            .map(|e| format!(", queue reader failing: {e}"))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        // (outcome, age of the sign when the loop looks, pings?)
        let table = [
            (Outcome::Done, s, true),
            (Outcome::Done, GRACE, true),
            (Outcome::Done, GRACE + s, false),
            (Outcome::RedisDown, s, true),
            (Outcome::RedisDown, GRACE + s, false),
        ];
        for (outcome, age, pings) in table {
            let sign = sign(outcome, t).expect("a sign");
            assert_eq!(
                proves_life(sign, t + age, GRACE),
                pings,
                "{outcome:?} {age:?}"
            );
        }
        assert_eq!(
            sign(Outcome::Failed, t),
            None,
            "a failure while Redis answers proves nothing"
        );
        assert_eq!(
            sign(Outcome::Reconnecting, t),
            None,
            "the next attempt decides"
        );
        let e = "e";
        assert_eq!(Outcome::of(Ok::<(), &str>(()), true, false), Outcome::Done);
        assert_eq!(Outcome::of(Err(e), true, true), Outcome::RedisDown);
        assert_eq!(Outcome::of(Err(e), false, false), Outcome::Reconnecting);
        assert_eq!(Outcome::of(Err(e), false, true), Outcome::Failed);
        assert!(proves_life(Sign::Waiting, t + GRACE * 100, GRACE));
        let ms = Duration::from_millis;
        assert_eq!(pause_after(Outcome::Done, ms(500)), Duration::ZERO);
        assert_eq!(pause_after(Outcome::RedisDown, ms(0)), DOWN_PAUSE);
        assert_eq!(pause_after(Outcome::RedisDown, ms(800)), ms(800));
        assert_eq!(pause_after(Outcome::Failed, ms(0)), FAILED_PAUSE);
    }

    #[test]
    fn failures_while_redis_answers_age_the_sign_and_show() {
        let p = Pulse::default();
        let err = StoreError::Corrupt("NOPERM".into());
        assert_eq!(p.record(Err(&err), false, true), Outcome::Failed);
        assert!(p.alive(), "the earlier sign still counts within the grace");
        assert_eq!(
            p.failing().as_deref(),
            Some("unexpected data in Redis: NOPERM")
        );
        assert_eq!(p.record(Err(&err), true, false), Outcome::RedisDown);
        assert_eq!(p.record(Ok(()), false, true), Outcome::Done);
        assert_eq!(p.failing(), None);
        p.waiting();
        assert!(p.alive());
        p.resumed();
        assert!(p.alive());
    }
}

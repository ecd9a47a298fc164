//! The four measurements. Each opens `--connections` keep-alive connections, one tokio task per
//! connection; work is handed out by a [`Schedule`] (an atomic ticket counter, so no channel or
//! lock sits between the connections). CPU is snapshot right around each measured window.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::{sleep_until, Instant};
use uuid::Uuid;

use crate::cli::{ClosedArgs, CollectOpts, DrainArgs, Go, ReadArgs, SubmitArgs};
use crate::collect::{self, Collect, CollectInfo};
use crate::cpu::{self, Component};
use crate::error::Error;
use crate::http::{Conn, Gateway, TaskStatus};
use crate::report::{round, DrainDetail, Phase, Tally};
use crate::sweep;

/// What every measurement needs: the gateway, the prepared task body, the CPU components.
pub struct Ctx {
    pub gw: Arc<Gateway>,
    pub body: Bytes,
    pub components: Arc<Vec<Component>>,
    pub connections: usize,
}

/// Tickets for the connections: index and intended send time. Open loop at a rate: ticket `i`
/// is due at `start + i / rate`, whether or not a connection is free then (a late send counts
/// its wait as latency, so coordinated omission is corrected). Otherwise: due when claimed.
pub struct Schedule {
    start: Instant,
    interval_ns: Option<f64>,
    limit: Option<u64>,
    end: Option<Instant>,
    next: AtomicU64,
}

impl Schedule {
    pub fn new(rate: Option<f64>, limit: Option<u64>, duration: Option<Duration>) -> Self {
        let start = Instant::now();
        Schedule {
            start,
            interval_ns: rate.map(|r| 1e9 / r),
            limit,
            end: duration.map(|d| start + d),
            next: AtomicU64::new(0),
        }
    }

    /// The next ticket, or `None` when the count or the time is used up.
    pub fn claim(&self) -> Option<(u64, Instant)> {
        let now = Instant::now();
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if self.limit.is_some_and(|l| i >= l) {
            return None;
        }
        let at = match self.interval_ns {
            Some(ns) => self.start + Duration::from_nanos((i as f64 * ns) as u64),
            None => now,
        };
        if self.end.is_some_and(|e| at >= e || now >= e) {
            return None;
        }
        Some((i, at))
    }

    fn open_loop(&self) -> bool {
        self.interval_ns.is_some()
    }
}

/// Runs `f(i)` for every connection index at once and gathers the results.
async fn fan_out<T, F, Fut>(n: usize, f: F) -> Result<Vec<T>, Error>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(
            h.await
                .map_err(|e| Error::Task(format!("a connection task failed: {e}")))?,
        );
    }
    Ok(out)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Submitted task ids in the order the gateway accepted them.
type Ids = Vec<(u64, Uuid)>;

/// Submits tasks as the schedule hands them out; optionally awaits each one's result.
async fn submit_phase(
    ctx: &Ctx,
    sched: Schedule,
    keep_ids: bool,
    collect: Option<(Collect, Duration)>,
) -> Result<(Phase, Vec<Uuid>), Error> {
    let sched = Arc::new(sched);
    let order = Arc::new(AtomicU64::new(0));
    let c0 = cpu::snapshot(&ctx.components);
    let t0 = Instant::now();
    let outs = fan_out(ctx.connections, |_| {
        let (sched, order) = (sched.clone(), order.clone());
        let (body, mut conn) = (ctx.body.clone(), Conn::new(ctx.gw.clone()));
        async move {
            let mut t = Tally::default();
            let mut ids: Ids = Vec::new();
            while let Some((_, at)) = sched.claim() {
                if sched.open_loop() {
                    sleep_until(at).await;
                }
                let sent = Instant::now();
                let id = match conn.execute(&body).await {
                    Ok(id) => id,
                    Err(e) => {
                        t.error(e);
                        continue;
                    }
                };
                if let Some((how, timeout)) = collect {
                    match collect::until_terminal(&mut conn, &id, how, Instant::now() + timeout)
                        .await
                    {
                        Ok(end) if end.status == TaskStatus::Completed => {
                            t.result_requests += u64::from(end.requests)
                        }
                        Ok(end) => {
                            t.error(format!("task {id} {:?}", end.status));
                            continue;
                        }
                        Err(e) => {
                            t.error(e);
                            continue;
                        }
                    }
                }
                let done = Instant::now();
                t.ops += 1;
                t.latency.record(done - at);
                if sched.open_loop() {
                    t.service.record(done - sent);
                }
                if keep_ids {
                    ids.push((order.fetch_add(1, Ordering::Relaxed), id));
                }
            }
            t.connects = conn.connects;
            (t, ids)
        }
    })
    .await?;
    let seconds = t0.elapsed().as_secs_f64();
    let c1 = cpu::snapshot(&ctx.components);
    let mut tally = Tally::default();
    let mut ids: Ids = Vec::new();
    for (t, i) in outs {
        tally.merge(t);
        ids.extend(i);
    }
    ids.sort_unstable_by_key(|(seq, _)| *seq);
    let phase = tally.into_phase("submit", seconds, cpu::between(&c0, &c1));
    Ok((phase, ids.into_iter().map(|(_, id)| id).collect()))
}

/// `submit`: the gateway's accept rate (open loop at --rate, or as fast as possible).
pub async fn submit(
    ctx: &Ctx,
    a: &SubmitArgs,
    collect: Option<Collect>,
) -> Result<Vec<Phase>, Error> {
    let limit = a.tasks.or(if a.duration.is_some() {
        None
    } else {
        Some(10_000)
    });
    let sched = Schedule::new(a.rate, limit, a.duration.map(secs));
    let timeout = secs(a.collect_opts.task_timeout_s);
    let (phase, _) = submit_phase(ctx, sched, false, collect.map(|c| (c, timeout))).await?;
    Ok(vec![phase])
}

/// Submits `n` tasks as fast as possible and keeps their ids; an error when none was accepted.
async fn fill(ctx: &Ctx, n: u64) -> Result<(Phase, Vec<Uuid>), Error> {
    let (phase, ids) = submit_phase(ctx, Schedule::new(None, Some(n), None), true, None).await?;
    if ids.is_empty() {
        return Err(Error::Usage(format!(
            "no task was accepted: {}",
            phase.first_error.unwrap_or_default()
        )));
    }
    Ok((phase, ids))
}

/// Awaits every task of `ids` (polling every 5 ms), spread over the connections.
async fn await_all(ctx: &Ctx, ids: &Arc<Vec<Uuid>>, timeout: Duration) -> Result<(), Error> {
    let how = Collect::Poll {
        interval: Duration::from_millis(5),
    };
    let deadline = Instant::now() + timeout;
    let n = ctx.connections;
    let errors = fan_out(n, |k| {
        let (ids, mut conn) = (ids.clone(), Conn::new(ctx.gw.clone()));
        async move {
            for id in ids.iter().skip(k).step_by(n) {
                collect::until_terminal(&mut conn, id, how, deadline).await?;
            }
            Ok::<(), Error>(())
        }
    })
    .await?;
    errors.into_iter().collect()
}

/// `read`: GET /result as fast as possible over completed tasks.
pub async fn read(ctx: &Ctx, a: &ReadArgs) -> Result<Vec<Phase>, Error> {
    let (prep, ids) = fill(ctx, a.tasks).await?;
    let ids = Arc::new(ids);
    await_all(ctx, &ids, Duration::from_secs(300)).await?;
    let limit = a.requests.or(if a.duration.is_some() {
        None
    } else {
        Some(50_000)
    });
    let sched = Arc::new(Schedule::new(None, limit, a.duration.map(secs)));
    let c0 = cpu::snapshot(&ctx.components);
    let t0 = Instant::now();
    let outs = fan_out(ctx.connections, |_| {
        let (sched, ids, mut conn) = (sched.clone(), ids.clone(), Conn::new(ctx.gw.clone()));
        async move {
            let mut t = Tally::default();
            while let Some((i, at)) = sched.claim() {
                let id = &ids[(i % ids.len() as u64) as usize];
                match conn.status_of(id, None).await {
                    Ok(_) => {
                        t.ops += 1;
                        t.latency.record(at.elapsed());
                    }
                    Err(e) => t.error(e),
                }
            }
            t.connects = conn.connects;
            t
        }
    })
    .await?;
    let seconds = t0.elapsed().as_secs_f64();
    let c1 = cpu::snapshot(&ctx.components);
    let mut tally = Tally::default();
    outs.into_iter().for_each(|t| tally.merge(t));
    Ok(vec![
        prep,
        tally.into_phase("read", seconds, cpu::between(&c0, &c1)),
    ])
}

/// `closed`: every connection submits a task, awaits its result, and repeats; counted are the
/// tasks whose result was seen inside the measured window (after the warm-up).
pub async fn closed(ctx: &Ctx, a: &ClosedArgs, how: Collect) -> Result<Vec<Phase>, Error> {
    let from = Instant::now() + secs(a.warmup);
    let end = from + secs(a.duration);
    let timeout = secs(a.collect_opts.task_timeout_s);
    let run = fan_out(ctx.connections, |_| {
        let (body, mut conn) = (ctx.body.clone(), Conn::new(ctx.gw.clone()));
        async move {
            let mut t = Tally::default();
            while Instant::now() < end {
                let t0 = Instant::now();
                let r = match conn.execute(&body).await {
                    Ok(id) => {
                        collect::until_terminal(&mut conn, &id, how, Instant::now() + timeout).await
                    }
                    Err(e) => Err(e),
                };
                let done = Instant::now();
                if done < from || done > end {
                    continue;
                }
                match r {
                    Ok(e) if e.status == TaskStatus::Completed => {
                        t.ops += 1;
                        t.latency.record(done - t0);
                        t.result_requests += u64::from(e.requests);
                    }
                    Ok(e) => t.error(format!("task {:?}", e.status)),
                    Err(e) => t.error(e),
                }
            }
            t.connects = conn.connects;
            t
        }
    });
    let components = ctx.components.clone();
    let window = tokio::spawn(async move {
        sleep_until(from).await;
        let c0 = cpu::snapshot(&components);
        sleep_until(end).await;
        (c0, cpu::snapshot(&components))
    });
    let outs = run.await?;
    let (c0, c1) = window
        .await
        .map_err(|e| Error::Task(format!("the CPU window task failed: {e}")))?;
    let mut tally = Tally::default();
    outs.into_iter().for_each(|t| tally.merge(t));
    Ok(vec![tally.into_phase(
        "closed",
        a.duration,
        cpu::between(&c0, &c1),
    )])
}

/// `drain`: fills the queue, waits for the go line, then times the queue's drain from Redis.
pub async fn drain(ctx: &Ctx, a: &DrainArgs) -> Result<Vec<Phase>, Error> {
    let (submit, ids) = fill(ctx, a.tasks).await?;
    let mut con = sweep::connect(&a.redis).await?;
    sweep::check_schema(&mut con, &ids, a.go == Go::Stdin).await?;
    if a.go == Go::Stdin {
        let mut out = tokio::io::stdout();
        out.write_all(format!("READY {}\n", ids.len()).as_bytes())
            .await
            .and(out.flush().await)
            .map_err(|e| Error::io("writing READY", e))?;
        let mut line = String::new();
        let n = BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await
            .map_err(|e| Error::io("reading the go line", e))?;
        if n == 0 {
            return Err(Error::Usage(
                "standard input closed before the go line".into(),
            ));
        }
    }
    let go = Instant::now();
    let go_ms = unix_ms();
    let c0 = cpu::snapshot(&ctx.components);
    let (interval, deadline) = (secs(a.sweep_interval_ms / 1000.0), go + secs(a.timeout_s));
    let queue_polls = sweep::until_queue_empty(&mut con, interval, deadline).await?;
    let detected = go.elapsed().as_secs_f64();
    // The window ends with the queue empty: the records' read below is not the server's work.
    let c1 = cpu::snapshot(&ctx.components);
    let s = sweep::until_all_terminal(&mut con, &ids, interval, deadline).await?;
    let completed = s.ends.iter().filter(|e| e.completed).count() as u64;
    let failed = s.ends.len() as u64 - completed;
    let last = s.ends.iter().map(|e| e.finished_ms).max().unwrap_or(go_ms);
    let first = s
        .ends
        .iter()
        .filter_map(|e| e.started_ms)
        .min()
        .unwrap_or(go_ms);
    let n = s.ends.len() as u64;
    let rate = |ms: i64| {
        if ms > 0 {
            round(n as f64 * 1000.0 / ms as f64, 1)
        } else {
            0.0
        }
    };
    let mut t = Tally {
        ops: n,
        ..Tally::default()
    };
    for _ in 0..failed {
        t.error("a task FAILED");
    }
    let seconds = (last - go_ms).max(0) as f64 / 1000.0;
    let mut phase = t.into_phase("drain", seconds, cpu::between(&c0, &c1));
    phase.drain = Some(DrainDetail {
        tasks: n,
        completed,
        failed,
        go_unix_ms: go_ms,
        first_started_after_go_ms: first - go_ms,
        last_finished_after_go_ms: last - go_ms,
        per_s_from_go: rate(last - go_ms),
        per_s_running: rate(last - first),
        detected_s: round(detected, 3),
        queue_polls,
        sweeps: s.sweeps,
        records_read: s.reads,
    });
    Ok(vec![submit, phase])
}

/// Finds the collection method on one task, which it also awaits (a warm-up).
pub async fn prepare_collect(
    ctx: &Ctx,
    mode: crate::cli::CollectMode,
    opts: &CollectOpts,
) -> Result<(Collect, CollectInfo), Error> {
    let mut conn = Conn::new(ctx.gw.clone());
    let id = conn.execute(&ctx.body).await?;
    let (how, info) = collect::detect(&mut conn, &id, mode, opts).await?;
    let end = collect::until_terminal(
        &mut conn,
        &id,
        how,
        Instant::now() + secs(opts.task_timeout_s),
    )
    .await?;
    if end.status != TaskStatus::Completed {
        return Err(Error::Response {
            what: "warm-up task",
            detail: format!("ended {:?}", end.status),
        });
    }
    Ok((how, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn schedule_counts_and_spaces_tickets() {
        let s = Schedule::new(Some(1000.0), Some(3), None);
        let a = s.claim().unwrap();
        let b = s.claim().unwrap();
        let c = s.claim().unwrap();
        assert_eq!((a.0, b.0, c.0), (0, 1, 2));
        assert_eq!(b.1 - a.1, Duration::from_millis(1));
        assert_eq!(c.1 - a.1, Duration::from_millis(2));
        assert!(s.claim().is_none());
    }

    #[tokio::test]
    async fn schedule_ends_at_its_duration() {
        let s = Schedule::new(Some(10.0), None, Some(Duration::from_millis(250)));
        // Tickets due at 0, 100 and 200 ms fall inside 250 ms; the one due at 300 does not.
        let n = std::iter::from_fn(|| s.claim()).count();
        assert_eq!(n, 3);
        let asap = Schedule::new(None, None, Some(Duration::ZERO));
        assert!(asap.claim().is_none());
    }
}

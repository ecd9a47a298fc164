//! Table-driven tests of the remote state machine: every case is a script of events at given
//! times and the actions each must (or must not) produce.

use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use super::*;
use crate::executor::TaskSpec;

const HB: Duration = Duration::from_millis(100);
const MISSES: u32 = 4;
/// Liveness threshold of the tests: 400 ms (the times in the scripts below rely on it).
const _THRESHOLD: () = assert!(HB.as_millis() as u64 * MISSES as u64 == 400);
const GRACE_MS: u64 = 5_000;
const DEADLINE_MS: u64 = 3_000;

fn timing(deadline: bool) -> Timing {
    Timing {
        interval: HB,
        misses: MISSES,
        deadline: deadline.then_some(Duration::from_millis(DEADLINE_MS)),
        orphan_grace: Duration::from_millis(GRACE_MS),
    }
}

fn tid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn r(n: u128, attempt: u32) -> TaskRef {
    TaskRef {
        task_id: tid(n),
        attempt,
    }
}

fn env(worker: &str) -> Vec<Bytes> {
    vec![Bytes::from(format!("peer-{worker}"))]
}

/// A pull worker's fetch socket has its own identity.
fn fetch_env(worker: &str) -> Vec<Bytes> {
    vec![Bytes::from(format!("fetch-{worker}")), Bytes::new()]
}

fn info(worker: &str, pid: u32, protocol: u32) -> WorkerInfo {
    WorkerInfo {
        id: worker.into(),
        slots: 2,
        capacity: None,
        host: "h".into(),
        pid,
        version: "test".into(),
        protocol,
        runtime: Runtime::default(),
    }
}

fn inbound(to: Vec<Bytes>, header: Header, blobs: Vec<Bytes>) -> Event {
    Event::Inbound {
        envelope: to,
        msg: Decoded { header, blobs },
    }
}

fn hello(worker: &str, pid: u32, running: Vec<TaskRef>) -> Event {
    inbound(
        env(worker),
        Header::Hello {
            worker: info(worker, pid, VERSION),
            running,
        },
        vec![],
    )
}

fn heartbeat(worker: &str, running: Vec<TaskRef>) -> Event {
    inbound(
        env(worker),
        Header::Heartbeat {
            worker_id: worker.into(),
            free: 0,
            running,
        },
        vec![],
    )
}

fn fetch(worker: &str, free: u32, running: Vec<TaskRef>) -> Event {
    inbound(
        fetch_env(worker),
        Header::Fetch {
            worker_id: worker.into(),
            free,
            results: vec![],
            running,
        },
        vec![],
    )
}

fn report(worker: &str, t: TaskRef) -> Event {
    inbound(
        env(worker),
        Header::Report {
            worker_id: worker.into(),
            results: vec![ResultMeta {
                task: t,
                ok: true,
                cause: String::new(),
            }],
        },
        vec![Bytes::from_static(b"result")],
    )
}

fn entry(n: u128) -> QueueEntry {
    QueueEntry {
        entry_id: format!("{n}-0"),
        task_id: Some(tid(n)),
    }
}

fn owned(n: u128, attempt: u32) -> Owned {
    Owned {
        task_id: tid(n),
        attempt,
        entry_id: format!("{n}-0"),
    }
}

fn claimed(worker: &str, n: u128) -> Event {
    let o = owned(n, 1);
    Event::Claimed {
        worker_id: worker.into(),
        count: 1,
        prepared: vec![Prepared::Run(Running {
            function_id: tid(999),
            spec: TaskSpec {
                task_id: o.task_id.to_string(),
                function_id: tid(999).to_string(),
                fn_payload: Bytes::from_static(b"f"),
                args_payload: Bytes::from_static(b"a"),
                timeout: None,
            },
            owned: o,
        })],
    }
}

fn stored(worker: &str, t: TaskRef) -> Event {
    Event::Stored {
        worker_id: worker.into(),
        acks: vec![t],
        reply_to: None,
    }
}

fn orphan(n: u128) -> Event {
    Event::Orphan {
        task_id: tid(n),
        attempt: Some(1),
        entry_id: format!("{n}-0"),
    }
}

/// What one step's actions must show.
#[derive(Debug, Clone)]
enum Expect {
    /// A message of this kind went to this envelope.
    Sent(Vec<Bytes>, &'static str),
    /// No message of this kind went out.
    NotSent(&'static str),
    /// `cancel` listing this run.
    Cancels(TaskRef),
    /// Entries claimed for this worker.
    Claims(&'static str, usize),
    /// Results stored: for each, whether our record of the run came with it.
    Stores(Vec<bool>),
    NoStore,
    /// Settled runs: (lost, undelivered, released).
    Settles(usize, usize, usize),
    /// A run settled as cancelled by a user.
    SettlesCancelled(TaskRef),
    NoSettle,
    /// The demand published last.
    Demand(usize),
    /// Entries handed back to the queue, in all.
    Releases(usize),
}

fn check(case: &str, step: usize, actions: &[Action], e: &Expect) {
    let sent = |kind: &'static str| {
        actions.iter().filter_map(move |a| match a {
            Action::Send { to, header, .. } if header.kind() == kind => Some((to, header)),
            _ => None,
        })
    };
    let settled = || {
        let (mut lost, mut undelivered, mut released) = (0, 0, 0);
        for a in actions {
            if let Action::Settle { losses, .. } = a {
                for l in losses {
                    match l {
                        Loss::Lost { .. } => lost += 1,
                        Loss::Undelivered(_) => undelivered += 1,
                        Loss::Released(_) => released += 1,
                        Loss::Cancelled(_) => {}
                    }
                }
            }
        }
        (lost, undelivered, released)
    };
    let ok = match e {
        Expect::Sent(to, kind) => sent(kind).any(|(t, _)| t == to),
        Expect::NotSent(kind) => sent(kind).next().is_none(),
        Expect::Cancels(t) => sent("cancel")
            .any(|(_, h)| matches!(h, Header::Cancel { tasks } if tasks.contains(t))),
        Expect::Claims(worker, n) => actions.iter().any(|a| {
            matches!(a, Action::Claim { worker_id, entries } if worker_id == worker && entries.len() == *n)
        }),
        Expect::Stores(owned) => actions.iter().any(|a| {
            matches!(a, Action::Store { results, .. }
                if results.iter().map(|r| r.owned.is_some()).collect::<Vec<_>>() == *owned)
        }),
        Expect::NoStore => !actions.iter().any(|a| matches!(a, Action::Store { .. })),
        Expect::Settles(l, u, r) => settled() == (*l, *u, *r),
        Expect::NoSettle => {
            settled() == (0, 0, 0)
                && !actions.iter().any(|a| matches!(a, Action::Settle { .. }))
        }
        Expect::SettlesCancelled(t) => actions.iter().any(|a| {
            matches!(a, Action::Settle { losses, .. }
                if losses.contains(&Loss::Cancelled(Owned { task_id: t.task_id, attempt: t.attempt, entry_id: format!("{}-0", t.task_id.as_u128()) })))
        }),
        Expect::Releases(n) => {
            actions
                .iter()
                .map(|a| match a {
                    Action::Release(entries) => entries.len(),
                    _ => 0,
                })
                .sum::<usize>()
                == *n
        }
        Expect::Demand(n) => {
            actions
                .iter()
                .rev()
                .find_map(|a| match a {
                    Action::Demand(d) => Some(*d),
                    _ => None,
                })
                == Some(*n)
        }
    };
    assert!(ok, "{case}, step {step}: expected {e:?} in {actions:#?}");
}

struct Case {
    name: &'static str,
    pull: bool,
    deadline: bool,
    /// (milliseconds since the start, event, expectations)
    steps: Vec<(u64, Event, Vec<Expect>)>,
}

fn run(case: Case) {
    let t0 = Instant::now();
    let mut remote = Remote::new(case.pull, "d".into(), timing(case.deadline));
    for (i, (at, ev, expects)) in case.steps.into_iter().enumerate() {
        let actions = remote.handle(t0 + Duration::from_millis(at), ev);
        for e in &expects {
            check(case.name, i, &actions, e);
        }
    }
}

/// Push worker `w` registered at 0 ms, then run `n` claimed and sent to it at 10 ms.
fn push_with_run(worker: &'static str, n: u128) -> Vec<(u64, Event, Vec<Expect>)> {
    vec![
        (
            0,
            hello(worker, 1, vec![]),
            vec![Expect::Sent(env(worker), "welcome")],
        ),
        (1, Event::Recovered, vec![]),
        (
            5,
            Event::Entries(vec![entry(n)]),
            vec![Expect::Claims(worker, 1)],
        ),
        (
            10,
            claimed(worker, n),
            vec![Expect::Sent(env(worker), "tasks")],
        ),
    ]
}

fn with(
    mut a: Vec<(u64, Event, Vec<Expect>)>,
    b: Vec<(u64, Event, Vec<Expect>)>,
) -> Vec<(u64, Event, Vec<Expect>)> {
    a.extend(b);
    a
}

#[test]
fn transitions() {
    let cases = vec![
        Case {
            name: "hello registers and opens credit; a wrong protocol is refused",
            pull: false,
            deadline: false,
            steps: vec![
                (
                    0,
                    hello("a", 1, vec![]),
                    vec![Expect::Sent(env("a"), "welcome"), Expect::Demand(2)],
                ),
                (
                    1,
                    inbound(
                        env("b"),
                        Header::Hello {
                            worker: info("b", 2, VERSION + 7),
                            running: vec![],
                        },
                        vec![],
                    ),
                    vec![Expect::Sent(env("b"), "refused")],
                ),
            ],
        },
        Case {
            name: "re-hello listing its run keeps it",
            pull: false,
            deadline: false,
            steps: with(
                push_with_run("a", 1),
                vec![
                    (
                        900,
                        hello("a", 1, vec![r(1, 1)]),
                        vec![
                            Expect::Sent(env("a"), "welcome"),
                            Expect::NoSettle,
                            Expect::NotSent("cancel"),
                        ],
                    ),
                    (950, report("a", r(1, 1)), vec![Expect::Stores(vec![true])]),
                ],
            ),
        },
        Case {
            name: "re-hello with an empty running list loses the run sent to it",
            pull: false,
            deadline: false,
            steps: with(
                push_with_run("a", 1),
                vec![(900, hello("a", 1, vec![]), vec![Expect::Settles(1, 0, 0)])],
            ),
        },
        Case {
            name: "a restarted worker (new pid) loses its old runs and they are cancelled",
            pull: false,
            deadline: false,
            steps: with(
                push_with_run("a", 1),
                vec![(
                    100,
                    hello("a", 2, vec![r(1, 1)]),
                    vec![Expect::Settles(1, 0, 0), Expect::Cancels(r(1, 1))],
                )],
            ),
        },
        Case {
            name:
                "heartbeat with the run keeps it; without it, a threshold after sending, loses it",
            pull: false,
            deadline: false,
            steps: with(
                push_with_run("a", 1),
                vec![
                    // Sent 40 ms ago: the tasks message may still be on its way.
                    (50, heartbeat("a", vec![]), vec![Expect::NoSettle]),
                    (300, heartbeat("a", vec![r(1, 1)]), vec![Expect::NoSettle]),
                    (600, heartbeat("a", vec![]), vec![Expect::Settles(1, 0, 0)]),
                    // The run is gone here: its late result is refused.
                    (
                        650,
                        report("a", r(1, 1)),
                        vec![Expect::NoStore, Expect::Sent(env("a"), "ack")],
                    ),
                ],
            ),
        },
        Case {
            name: "result from the assigned worker is stored and acknowledged",
            pull: false,
            deadline: false,
            steps: with(
                push_with_run("a", 1),
                vec![
                    (100, report("a", r(1, 1)), vec![Expect::Stores(vec![true])]),
                    // A duplicate while it is being stored is ignored.
                    (110, report("a", r(1, 1)), vec![Expect::NoStore]),
                    (
                        120,
                        heartbeat("a", vec![r(1, 1)]),
                        vec![Expect::NoSettle, Expect::NotSent("cancel")],
                    ),
                    (
                        150,
                        stored("a", r(1, 1)),
                        vec![Expect::Sent(env("a"), "ack")],
                    ),
                ],
            ),
        },
        Case {
            name: "result from another worker is refused (acknowledged, not stored)",
            pull: false,
            deadline: false,
            steps: with(
                push_with_run("a", 1),
                vec![
                    (
                        20,
                        hello("b", 2, vec![]),
                        vec![Expect::Sent(env("b"), "welcome")],
                    ),
                    (
                        100,
                        report("b", r(1, 1)),
                        vec![Expect::NoStore, Expect::Sent(env("b"), "ack")],
                    ),
                    (120, report("a", r(1, 1)), vec![Expect::Stores(vec![true])]),
                ],
            ),
        },
        Case {
            name: "a silent worker is lost: sent runs re-run or FAILED",
            pull: false,
            deadline: false,
            steps: with(
                push_with_run("a", 1),
                vec![
                    (
                        300,
                        Event::Tick,
                        vec![Expect::NoSettle, Expect::Sent(env("a"), "ping")],
                    ),
                    (
                        401,
                        Event::Tick,
                        vec![Expect::Settles(1, 0, 0), Expect::Demand(0)],
                    ),
                    (
                        450,
                        heartbeat("a", vec![r(1, 1)]),
                        vec![Expect::Sent(env("a"), "unknown")],
                    ),
                ],
            ),
        },
        Case {
            name: "a run past its deadline is lost and cancelled on the worker",
            pull: false,
            deadline: true,
            steps: with(
                push_with_run("a", 1),
                vec![
                    (2_900, heartbeat("a", vec![r(1, 1)]), vec![Expect::NoSettle]),
                    (
                        3_011,
                        Event::Tick,
                        vec![Expect::Settles(1, 0, 0), Expect::Cancels(r(1, 1))],
                    ),
                    // Until the worker stops listing it, it holds a slot.
                    (
                        3_050,
                        heartbeat("a", vec![r(1, 1)]),
                        vec![Expect::Demand(1)],
                    ),
                    (3_100, heartbeat("a", vec![]), vec![Expect::Demand(2)]),
                ],
            ),
        },
        Case {
            name: "a run the worker holds that is not ours is cancelled once recovery is done",
            pull: false,
            deadline: false,
            steps: vec![
                (
                    0,
                    hello("a", 1, vec![r(7, 2)]),
                    vec![Expect::NotSent("cancel"), Expect::Demand(1)],
                ),
                (10, Event::Recovered, vec![]),
                (
                    100,
                    heartbeat("a", vec![r(7, 2)]),
                    vec![Expect::Cancels(r(7, 2)), Expect::Demand(1)],
                ),
                (
                    200,
                    heartbeat("a", vec![]),
                    vec![Expect::NotSent("cancel"), Expect::Demand(2)],
                ),
            ],
        },
        Case {
            name: "an orphan is adopted by the worker that lists it, and its result stored",
            pull: false,
            deadline: false,
            steps: vec![
                (0, orphan(3), vec![Expect::NoSettle]),
                (10, Event::Recovered, vec![]),
                (
                    20,
                    hello("a", 1, vec![r(3, 1)]),
                    vec![Expect::NotSent("cancel"), Expect::Demand(1)],
                ),
                (6_000, heartbeat("a", vec![r(3, 1)]), vec![Expect::NoSettle]),
                (6_001, Event::Tick, vec![Expect::NoSettle]),
                (
                    6_010,
                    report("a", r(3, 1)),
                    vec![Expect::Stores(vec![true])],
                ),
            ],
        },
        Case {
            name: "a worker that listed a run before its orphan was read adopts it then",
            pull: false,
            deadline: false,
            steps: vec![
                (
                    0,
                    hello("a", 1, vec![r(3, 1)]),
                    vec![Expect::NotSent("cancel")],
                ),
                (10, orphan(3), vec![]),
                (20, Event::Recovered, vec![]),
                (
                    100,
                    heartbeat("a", vec![r(3, 1)]),
                    vec![Expect::NotSent("cancel"), Expect::NoSettle],
                ),
                (6_000, heartbeat("a", vec![r(3, 1)]), vec![Expect::NoSettle]),
                (6_001, Event::Tick, vec![Expect::NoSettle]),
            ],
        },
        Case {
            name: "an orphan nobody claims is lost after the grace",
            pull: false,
            deadline: false,
            steps: vec![
                (0, orphan(3), vec![]),
                (4_900, Event::Tick, vec![Expect::NoSettle]),
                (5_001, Event::Tick, vec![Expect::Settles(1, 0, 0)]),
            ],
        },
        Case {
            name: "a user cancel of a running task cancels it on its worker and settles it",
            pull: false,
            deadline: false,
            steps: with(
                push_with_run("a", 1),
                vec![
                    (
                        100,
                        Event::Cancel { task_id: tid(1) },
                        vec![
                            Expect::SettlesCancelled(r(1, 1)),
                            Expect::Cancels(r(1, 1)),
                            Expect::Demand(1),
                        ],
                    ),
                    // Its late result is refused; once the worker stops listing it, the slot is free.
                    (150, report("a", r(1, 1)), vec![Expect::NoStore]),
                    (
                        200,
                        heartbeat("a", vec![]),
                        vec![Expect::NoSettle, Expect::Demand(2)],
                    ),
                    (
                        210,
                        Event::Cancel { task_id: tid(1) },
                        vec![Expect::NoSettle, Expect::NotSent("cancel")],
                    ),
                ],
            ),
        },
        Case {
            name: "release hands runs back; bye closes the credit",
            pull: false,
            deadline: false,
            steps: with(
                push_with_run("a", 1),
                vec![
                    (
                        100,
                        inbound(
                            env("a"),
                            Header::Bye {
                                worker_id: "a".into(),
                            },
                            vec![],
                        ),
                        vec![Expect::Sent(env("a"), "ack"), Expect::Demand(0)],
                    ),
                    (
                        200,
                        inbound(
                            env("a"),
                            Header::Release {
                                worker_id: "a".into(),
                                tasks: vec![r(1, 1)],
                            },
                            vec![],
                        ),
                        vec![Expect::Settles(0, 0, 1), Expect::Sent(env("a"), "ack")],
                    ),
                ],
            ),
        },
        Case {
            name: "pull: a fetch is parked, answered with the claimed run, then with nothing",
            pull: true,
            deadline: false,
            steps: vec![
                (
                    0,
                    hello("p", 1, vec![]),
                    vec![Expect::Sent(env("p"), "welcome"), Expect::Demand(2)],
                ),
                (
                    10,
                    fetch("p", 2, vec![]),
                    vec![Expect::NotSent("nothing"), Expect::Demand(2)],
                ),
                (
                    20,
                    Event::Entries(vec![entry(1)]),
                    vec![Expect::Claims("p", 1)],
                ),
                (
                    30,
                    claimed("p", 1),
                    vec![Expect::Sent(fetch_env("p"), "tasks")],
                ),
                (
                    40,
                    fetch("p", 0, vec![r(1, 1)]),
                    vec![Expect::Sent(fetch_env("p"), "nothing")],
                ),
                (
                    50,
                    fetch("p", 1, vec![r(1, 1)]),
                    vec![Expect::NotSent("nothing")],
                ),
                (
                    151,
                    Event::Tick,
                    vec![Expect::Sent(fetch_env("p"), "nothing")],
                ),
                // Parked fetches keep a pull worker alive; without one it is lost.
                (700, Event::Tick, vec![Expect::Settles(1, 0, 0)]),
            ],
        },
        Case {
            name: "pull: a cancel answers the parked fetch before new tasks",
            pull: true,
            deadline: false,
            steps: vec![
                (0, hello("p", 1, vec![]), vec![]),
                (5, Event::Recovered, vec![]),
                (
                    10,
                    fetch("p", 1, vec![r(9, 4)]),
                    vec![Expect::Cancels(r(9, 4)), Expect::NotSent("tasks")],
                ),
            ],
        },
        Case {
            name: "drain: unsent runs go back, parked fetches are answered, no more demand",
            pull: true,
            deadline: false,
            steps: vec![
                (0, hello("p", 1, vec![]), vec![]),
                (10, fetch("p", 2, vec![]), vec![]),
                (
                    20,
                    Event::Entries(vec![entry(1), entry(2)]),
                    vec![Expect::Claims("p", 2)],
                ),
                (25, fetch("p", 2, vec![]), vec![]),
                (
                    30,
                    Event::Drain,
                    vec![Expect::Sent(fetch_env("p"), "nothing"), Expect::Demand(0)],
                ),
                (
                    40,
                    claimed("p", 1),
                    vec![
                        Expect::NotSent("tasks"),
                        Expect::Settles(0, 1, 0),
                        Expect::Demand(0),
                        Expect::Releases(0),
                    ],
                ),
            ],
        },
        Case {
            name: "drain: unassigned entries, and entries arriving later, go back",
            pull: false,
            deadline: false,
            steps: vec![
                (0, hello("a", 1, vec![]), vec![]),
                (1, Event::Recovered, vec![]),
                // Two processes: two claimed, two left for later.
                (
                    5,
                    Event::Entries(vec![entry(1), entry(2), entry(3), entry(4)]),
                    vec![Expect::Claims("a", 2), Expect::Releases(0)],
                ),
                (
                    10,
                    Event::Drain,
                    vec![Expect::Releases(2), Expect::Demand(0)],
                ),
                (
                    20,
                    Event::Entries(vec![entry(5)]),
                    vec![Expect::Releases(1), Expect::NoSettle],
                ),
                (30, Event::Drain, vec![Expect::Releases(0)]),
            ],
        },
    ];
    for case in cases {
        run(case);
    }
}

#[test]
fn busy_counts_assigned_claiming_and_storing_runs() {
    let t0 = Instant::now();
    let mut remote = Remote::new(false, "d".into(), timing(false));
    for (at, ev, _) in push_with_run("a", 1) {
        remote.handle(t0 + Duration::from_millis(at), ev);
    }
    assert_eq!(remote.busy(), 1);
    remote.handle(t0 + Duration::from_millis(20), report("a", r(1, 1)));
    assert_eq!(remote.busy(), 1, "being stored");
    remote.handle(t0 + Duration::from_millis(30), stored("a", r(1, 1)));
    assert_eq!(remote.busy(), 0);
    assert!(remote.summary().starts_with("1 workers, 2 slots, 2 free"));
}

// ---- capacity (processes plus prefetch) ----

/// A worker with 2 processes advertising `capacity` (None: an older worker).
fn hello_cap(worker: &str, pid: u32, capacity: Option<u32>, running: Vec<TaskRef>) -> Event {
    let mut worker_info = info(worker, pid, VERSION);
    worker_info.capacity = capacity;
    let to = env(worker);
    inbound(
        to,
        Header::Hello {
            worker: worker_info,
            running,
        },
        vec![],
    )
}

/// Runs `ns` claimed for `worker` in one claim.
fn claimed_all(worker: &str, ns: std::ops::RangeInclusive<u128>) -> Event {
    let prepared: Vec<Prepared> = ns
        .map(|n| match claimed(worker, n) {
            Event::Claimed { mut prepared, .. } => prepared.remove(0),
            _ => unreachable!("claimed() makes a Claimed event"),
        })
        .collect();
    Event::Claimed {
        worker_id: worker.into(),
        count: prepared.len(),
        prepared,
    }
}

/// The `tasks` messages sent, by number of tasks.
fn tasks_sent(actions: &[Action]) -> Vec<usize> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                header: Header::Tasks { tasks, .. },
                ..
            } => Some(tasks.len()),
            _ => None,
        })
        .collect()
}

#[test]
fn capacity_sizes_claims_and_batches() {
    // (advertised capacity, pull, tasks claimed and sent in one message, demand after 10 entries)
    let cases = [
        (None, false, 2, 0),
        (Some(2), false, 2, 0),
        (Some(1), false, 2, 0), // below the processes: the processes
        (Some(5), false, 5, 0),
        (Some(5), true, 5, 0),
        (Some(16), false, 10, 6),
    ];
    for (capacity, pull, n, demand) in cases {
        let name = format!("capacity {capacity:?}, pull {pull}");
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut remote = Remote::new(pull, "d".into(), timing(false));
        let mut h = hello_cap("a", 1, capacity, vec![]);
        if pull {
            if let Event::Inbound { envelope, .. } = &mut h {
                *envelope = fetch_env("a");
            }
        }
        remote.handle(at(0), h);
        remote.handle(at(1), Event::Recovered);
        if pull {
            remote.handle(at(2), fetch("a", n as u32, vec![]));
        }
        let actions = remote.handle(at(5), Event::Entries((1..=10).map(entry).collect()));
        check(&name, 0, &actions, &Expect::Claims("a", n));
        check(&name, 0, &actions, &Expect::Demand(demand));
        let actions = remote.handle(at(10), claimed_all("a", 1..=n as u128));
        assert_eq!(tasks_sent(&actions), vec![n], "{name}: one tasks message");
        // /info and /metrics show processes: 2 slots, none free once it holds 2 or more.
        let p = remote.presence();
        assert_eq!((p[0].slots, p[0].free), (2, 0), "{name}");
        assert!(
            remote.summary().starts_with("1 workers, 2 slots, 0 free"),
            "{name}: {}",
            remote.summary()
        );
    }
}

#[test]
fn capacity_refills_as_results_come() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut remote = Remote::new(false, "d".into(), timing(false));
    remote.handle(at(0), hello_cap("a", 1, Some(4), vec![]));
    remote.handle(at(1), Event::Recovered);
    remote.handle(at(2), Event::Entries((1..=10).map(entry).collect()));
    remote.handle(at(3), claimed_all("a", 1..=4));
    // Two results in one report: two more tasks are claimed, in one claim.
    let two = inbound(
        env("a"),
        Header::Report {
            worker_id: "a".into(),
            results: [r(1, 1), r(2, 1)]
                .into_iter()
                .map(|task| ResultMeta {
                    task,
                    ok: true,
                    cause: String::new(),
                })
                .collect(),
        },
        vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")],
    );
    let actions = remote.handle(at(20), two);
    check("refill", 0, &actions, &Expect::Stores(vec![true, true]));
    check("refill", 0, &actions, &Expect::Claims("a", 2));
    // Free processes by our count: 4 held (2 running, 2 being stored), none free.
    assert_eq!(remote.presence()[0].free, 0);
}

#[test]
fn prefetched_runs_fail_cancel_and_reconcile_like_running_ones() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let held: Vec<TaskRef> = (1..=5).map(|n| r(n, 1)).collect();
    let start = |remote: &mut Remote| {
        remote.handle(at(0), hello_cap("a", 1, Some(5), vec![]));
        remote.handle(at(1), Event::Recovered);
        remote.handle(at(2), Event::Entries((1..=5).map(entry).collect()));
        let actions = remote.handle(at(3), claimed_all("a", 1..=5));
        assert_eq!(tasks_sent(&actions), vec![5]);
    };

    // A worker killed (-9) holding 2 running and 3 prefetched runs: all 5 are lost (re-queued
    // or FAILED per max_retries, by the settle), none only re-queued as if never sent.
    let mut remote = Remote::new(false, "d".into(), timing(false));
    start(&mut remote);
    remote.handle(at(300), heartbeat("a", held.clone()));
    let actions = remote.handle(at(800), Event::Tick);
    check("killed", 0, &actions, &Expect::Settles(5, 0, 0));

    // A user cancel of a prefetched run: cancel sent to the worker, the task settled as
    // cancelled; its place stays taken until the worker stops listing it.
    let mut remote = Remote::new(false, "d".into(), timing(false));
    start(&mut remote);
    remote.handle(at(50), Event::Entries(vec![entry(6)]));
    let actions = remote.handle(at(100), Event::Cancel { task_id: tid(5) });
    check("cancel", 0, &actions, &Expect::Cancels(r(5, 1)));
    check("cancel", 0, &actions, &Expect::SettlesCancelled(r(5, 1)));
    check("cancel", 0, &actions, &Expect::NotSent("tasks"));
    assert!(!actions.iter().any(|a| matches!(a, Action::Claim { .. })));
    let actions = remote.handle(at(150), heartbeat("a", held.clone()));
    assert!(!actions.iter().any(|a| matches!(a, Action::Claim { .. })));
    let actions = remote.handle(at(200), heartbeat("a", held[..4].to_vec()));
    check("cancel", 1, &actions, &Expect::Claims("a", 1));

    // A dispatcher restart: the new one finds all 5 RUNNING (orphans); the worker's hello
    // lists them, so it keeps every one, prefetched or running, and gets no more.
    let mut remote = Remote::new(false, "d2".into(), timing(false));
    for n in 1..=5 {
        remote.handle(at(0), orphan(n));
    }
    remote.handle(at(1), Event::Recovered);
    let actions = remote.handle(at(10), hello_cap("a", 1, Some(5), held.clone()));
    check("restart", 0, &actions, &Expect::NoSettle);
    check("restart", 0, &actions, &Expect::NotSent("cancel"));
    check("restart", 0, &actions, &Expect::Demand(0));
    let actions = remote.handle(at(2000), heartbeat("a", held.clone()));
    check("restart", 1, &actions, &Expect::NoSettle);
    let actions = remote.handle(at(2100), report("a", r(3, 1)));
    check("restart", 2, &actions, &Expect::Stores(vec![true]));
}

#[test]
fn free_processes_on_every_worker_come_before_prefetch() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    // a: 2 processes + 2 prefetched; b: 2 processes, no prefetch. 4 tasks: 2 each, not 4 to a.
    let mut remote = Remote::new(false, "d".into(), timing(false));
    remote.handle(at(0), hello_cap("a", 1, Some(4), vec![]));
    remote.handle(at(0), hello_cap("b", 1, None, vec![]));
    remote.handle(at(1), Event::Recovered);
    let actions = remote.handle(at(2), Event::Entries((1..=4).map(entry).collect()));
    check("spread", 0, &actions, &Expect::Claims("a", 2));
    check("spread", 0, &actions, &Expect::Claims("b", 2));
    // Two more: only a has room left (prefetch).
    let actions = remote.handle(at(3), Event::Entries((5..=7).map(entry).collect()));
    check("spread", 1, &actions, &Expect::Claims("a", 2));
    check("spread", 1, &actions, &Expect::Demand(0));
}

#[test]
fn acks_ride_on_the_tasks_being_claimed() {
    for pull in [true, false] {
        let name = if pull { "pull" } else { "push" };
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let to = if pull { fetch_env("a") } else { env("a") };
        let mut remote = Remote::new(pull, "d".into(), timing(false));
        let mut h = hello_cap("a", 1, Some(2), vec![]);
        if let Event::Inbound { envelope, .. } = &mut h {
            envelope.clone_from(&to);
        }
        remote.handle(at(0), h);
        remote.handle(at(1), Event::Recovered);
        if pull {
            remote.handle(at(2), fetch("a", 2, vec![]));
        }
        remote.handle(at(3), Event::Entries((1..=3).map(entry).collect()));
        remote.handle(at(4), claimed_all("a", 1..=2));
        // One result comes back (pull: on a fetch); a new claim starts for the freed room.
        let result = Header::Fetch {
            worker_id: "a".into(),
            free: 1,
            results: vec![ResultMeta {
                task: r(1, 1),
                ok: true,
                cause: String::new(),
            }],
            running: vec![r(1, 1), r(2, 1)],
        };
        let ev = if pull {
            inbound(to.clone(), result, vec![Bytes::from_static(b"x")])
        } else {
            report("a", r(1, 1))
        };
        let actions = remote.handle(at(20), ev);
        check(name, 0, &actions, &Expect::Claims("a", 1));
        // Stored before the claim is done: no message of its own ...
        let actions = remote.handle(at(25), stored("a", r(1, 1)));
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Send { .. })),
            "{name}: {actions:#?}"
        );
        // ... the acks go with the tasks.
        let actions = remote.handle(at(30), claimed("a", 3));
        let acked = actions.iter().any(|a| {
            matches!(a, Action::Send { to: t, header: Header::Tasks { tasks, acks }, .. }
                if *t == to && tasks.len() == 1 && acks == &vec![r(1, 1)])
        });
        assert!(acked, "{name}: {actions:#?}");
        // Without a claim under way (the queue is empty), a stored result is acknowledged at
        // once (push: `ack`).
        if !pull {
            remote.handle(at(40), report("a", r(2, 1)));
            let actions = remote.handle(at(45), stored("a", r(2, 1)));
            check(name, 1, &actions, &Expect::Sent(env("a"), "ack"));
        }
    }
}

#[test]
fn the_queue_is_read_ahead_at_the_pace_of_recent_runs() {
    // (ms from claim to result, demand once the result came: 1 free process plus the
    // read-ahead for 2 processes, 5 ms of work each, at most 8 entries each)
    let cases = [(1, 1 + 10), (0, 1 + 16), (2, 1 + 4), (6, 1), (3_000, 1)];
    for (took, demand) in cases {
        let name = format!("a run of {took} ms");
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut remote = Remote::new(false, "d".into(), timing(false));
        let actions = remote.handle(at(0), hello("a", 1, vec![]));
        check(&name, 0, &actions, &Expect::Demand(2)); // no run ended yet: none ahead
        remote.handle(at(1), Event::Recovered);
        remote.handle(at(2), Event::Entries((1..=2).map(entry).collect()));
        remote.handle(at(10), claimed_all("a", 1..=2));
        let actions = remote.handle(at(10 + took), report("a", r(1, 1)));
        check(&name, 1, &actions, &Expect::Stores(vec![true]));
        check(&name, 1, &actions, &Expect::Demand(demand));
        // What was read ahead waits in the backlog: one claim for the free process, and the
        // demand shrinks by what was read.
        let ahead = demand - 1;
        let actions = remote.handle(
            at(11 + took),
            Event::Entries((3..=demand as u128 + 2).map(entry).collect()),
        );
        check(&name, 2, &actions, &Expect::Claims("a", 1));
        check(&name, 2, &actions, &Expect::Demand(0));
        assert!(
            remote.summary().ends_with(&format!("backlog {ahead}")),
            "{name}: {}",
            remote.summary()
        );
        // A stop hands the backlog back.
        let actions = remote.handle(at(12 + took), Event::Drain);
        check(&name, 3, &actions, &Expect::Releases(ahead));
        check(&name, 3, &actions, &Expect::Demand(0));
    }
}

#[test]
fn a_leaving_worker_reads_nothing_ahead_and_the_last_one_hands_the_backlog_back() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut remote = Remote::new(false, "d".into(), timing(false));
    remote.handle(at(0), hello("a", 1, vec![]));
    remote.handle(at(1), Event::Recovered);
    remote.handle(at(2), Event::Entries((1..=2).map(entry).collect()));
    remote.handle(at(10), claimed_all("a", 1..=2));
    let actions = remote.handle(at(11), report("a", r(1, 1)));
    check("leaving", 0, &actions, &Expect::Demand(11));
    // 1 for the free process, 10 read ahead.
    let actions = remote.handle(at(11), Event::Entries((3..=13).map(entry).collect()));
    check("leaving", 0, &actions, &Expect::Claims("a", 1));
    // Its last worker leaving, the dispatcher hands what it read ahead back to the queue.
    let bye = inbound(
        env("a"),
        Header::Bye {
            worker_id: "a".into(),
        },
        vec![],
    );
    let actions = remote.handle(at(12), bye);
    check("leaving", 1, &actions, &Expect::Releases(10));
    check("leaving", 1, &actions, &Expect::Demand(0));
}

#[test]
fn a_run_acknowledged_but_still_listed_is_neither_foreign_nor_cancelled() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut remote = Remote::new(false, "d".into(), timing(false));
    for (ms, ev, _) in push_with_run("a", 1) {
        remote.handle(at(ms), ev);
    }
    remote.handle(at(20), report("a", r(1, 1)));
    // Stored: the ack goes out (no claim under way).
    let actions = remote.handle(at(21), stored("a", r(1, 1)));
    check("acked", 0, &actions, &Expect::Sent(env("a"), "ack"));
    // A heartbeat the worker sent before the ack arrived still lists the run: no cancel, and
    // both processes stay free.
    let actions = remote.handle(at(25), heartbeat("a", vec![r(1, 1)]));
    check("acked", 1, &actions, &Expect::NotSent("cancel"));
    assert_eq!(remote.presence()[0].free, 2);
    // The next one does not list it: forgotten. A worker listing it a liveness threshold after
    // the ack (it never got it, or lies) is told to cancel it, as before.
    remote.handle(at(125), heartbeat("a", vec![]));
    let actions = remote.handle(at(130), heartbeat("a", vec![r(1, 1)]));
    check("acked", 2, &actions, &Expect::Cancels(r(1, 1)));
    let mut remote = Remote::new(false, "d".into(), timing(false));
    for (ms, ev, _) in push_with_run("a", 1) {
        remote.handle(at(ms), ev);
    }
    remote.handle(at(20), report("a", r(1, 1)));
    remote.handle(at(21), stored("a", r(1, 1)));
    let actions = remote.handle(at(21 + 400), heartbeat("a", vec![r(1, 1)]));
    check("acked long ago", 0, &actions, &Expect::Cancels(r(1, 1)));
}

//! A dispatcher running in the test process, and waiting on the tasks it handles.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use faas::config::DispatcherConfig;
use faas::dispatcher::DispatchError;
use faas::shutdown::ShutdownTrigger;
use faas::store::{Store, TaskStatus};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::python;

/// A dispatcher's shutdown trigger and its task.
pub type Running = (ShutdownTrigger, JoinHandle<Result<(), DispatchError>>);

/// Starts `faas::dispatcher::run(cfg)` on the test runtime.
pub fn spawn(cfg: DispatcherConfig) -> Running {
    let (trigger, shutdown) = faas::shutdown::channel();
    (trigger, tokio::spawn(faas::dispatcher::run(cfg, shutdown)))
}

/// Starts `faas::dispatcher::run(cfg)` on a runtime of its own with one thread, as the daemon
/// runs it (see [`super::on_one_thread`]).
pub fn spawn_on_one_thread(cfg: DispatcherConfig) -> Running {
    let (trigger, shutdown) = faas::shutdown::channel();
    (
        trigger,
        super::on_one_thread(move || faas::dispatcher::run(cfg, shutdown)),
    )
}

/// Stops a dispatcher and checks that it stopped cleanly.
pub async fn stop((trigger, handle): Running) {
    trigger.trigger();
    handle.await.expect("join").expect("clean stop");
}

/// Registers a function with `fn_pickle` and queues one task with `args_pickle`.
pub async fn submit(store: &Store, fn_pickle: &[u8], args_pickle: &[u8]) -> Uuid {
    let f = store
        .register_function("f", fn_pickle)
        .await
        .expect("register");
    store
        .create_task(&f, args_pickle)
        .await
        .expect("create")
        .expect("function exists")
}

/// Waits until task `t` is `want`; returns how long that took.
pub async fn wait_status(store: &Store, t: &Uuid, want: TaskStatus, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let s = store.task_status(t).await.expect("status");
        if s == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "task {t} is {s:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until task `t` ends; its status and its result as `python::describe` shows it.
pub async fn wait_done(store: &Store, t: &Uuid, timeout: Duration) -> (TaskStatus, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let v = store.task_view(t).await.expect("view").expect("task");
        if v.status.is_terminal() {
            let r = v.result.expect("terminal tasks have a result");
            return (v.status, python::describe(&r));
        }
        assert!(Instant::now() < deadline, "task {t} still {:?}", v.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

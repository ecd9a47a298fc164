//! Shared helpers of the integration tests: a private redis-server per test, Python pickles.
#![allow(dead_code)]

pub mod dispatch;
pub mod monitor;
pub mod python;
pub mod redis;
pub mod remote;
pub mod worker;
pub mod zmq;

/// Runs the future `make` returns on a runtime of its own with one thread, as the daemons run
/// (`daemon::Threads::One`): the order of its steps is then its own, not the multi-threaded test
/// runtime's. The handle yields its output.
///
/// The daemon lives no longer than the test's runtime: when that runtime shuts down (the test
/// ended, or failed with the daemon still running) the daemon's future is dropped on its thread.
/// The thread is not joined, so a failed test fails instead of waiting for a daemon that nothing
/// will stop (a runtime's shutdown waits for its blocking tasks without limit).
pub fn on_one_thread<T, F, Fut>(make: F) -> tokio::task::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (alive_tx, alive_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                tokio::select! {
                    out = make() => {
                        let _ = done_tx.send(out);
                    }
                    // The handle's task was dropped with the test's runtime.
                    _ = alive_rx => {}
                }
            })
    });
    tokio::spawn(async move {
        let _alive = alive_tx;
        done_rx
            .await
            .unwrap_or_else(|_| panic!("the daemon's thread panicked"))
    })
}

/// Test log output (`RUST_LOG` or faas at debug), captured per test; once per process.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "faas=debug".into()),
        )
        .try_init();
}

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
/// runtime's. The handle joins that thread.
pub fn on_one_thread<T, F, Fut>(make: F) -> tokio::task::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(make())
    });
    tokio::task::spawn_blocking(move || {
        thread
            .join()
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

//! A dispatcher in pull or push mode for tests that play its workers over real ZeroMQ: a private
//! Redis, a free port, and pickles made once (a Python start-up takes longer than a heartbeat).
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use faas::config::{DispatcherConfig, Mode};
use faas::protocol::{encode, Header, ResultMeta, TaskRef};
use faas::store::{Store, TaskStatus};
use uuid::Uuid;
use zeromq::{DealerSocket, Socket, SocketSend};

use super::python;
use super::redis::{free_port, RedisServer};

pub struct Env {
    pub redis: RedisServer,
    pub store: Store,
    pub port: u16,
    /// Pickles made once: a Python start-up takes longer than a heartbeat interval.
    pub fn_pickle: Vec<u8>,
    pub args_pickle: Vec<u8>,
    pub result_pickle: Bytes,
}

impl Env {
    pub async fn new() -> Self {
        let redis = RedisServer::start();
        let store = redis.store(Duration::from_secs(3600)).await;
        let mut p = python::pickles("", &["lambda: 41 + 1", "((), {})", "'done'"], None);
        let result_pickle = Bytes::from(p.remove(2));
        let args_pickle = p.remove(1);
        let fn_pickle = p.remove(0);
        Env {
            redis,
            store,
            port: free_port(),
            fn_pickle,
            args_pickle,
            result_pickle,
        }
    }

    /// Fake workers send no heartbeats: `misses` bounds how long they may stay silent.
    pub fn config(&self, mode: Mode, misses: u32) -> DispatcherConfig {
        DispatcherConfig {
            mode,
            redis: self.redis.url(),
            name: format!("test-{}", self.redis.port),
            port: self.port,
            heartbeat_interval_ms: 100,
            heartbeat_misses: misses,
            drain_timeout_secs: 2.0,
            ..DispatcherConfig::default()
        }
    }

    pub fn spawn(&self, cfg: DispatcherConfig) -> super::dispatch::Running {
        super::dispatch::spawn(cfg)
    }

    pub fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub async fn submit(&self) -> Uuid {
        super::dispatch::submit(&self.store, &self.fn_pickle, &self.args_pickle).await
    }

    pub async fn wait_status(&self, t: &Uuid, want: TaskStatus, timeout: Duration) -> Duration {
        super::dispatch::wait_status(&self.store, t, want, timeout).await
    }

    /// A `report` from `worker` that `t` COMPLETED with the shared result pickle.
    pub fn ok_report(&self, worker: &str, t: TaskRef) -> (Header, Vec<Bytes>) {
        let meta = ResultMeta {
            task: t,
            ok: true,
            cause: String::new(),
        };
        let h = Header::Report {
            worker_id: worker.into(),
            results: vec![meta],
        };
        (h, vec![self.result_pickle.clone()])
    }
}

/// A DEALER connected to the dispatcher of `env` (a push worker's socket).
pub async fn connect_dealer(env: &Env) -> DealerSocket {
    let mut s = DealerSocket::new();
    tokio::time::timeout(Duration::from_secs(5), s.connect(&env.endpoint()))
        .await
        .expect("connect in time")
        .expect("connect");
    s
}

/// Sends `h` with `blobs` on a DEALER.
pub async fn send(s: &mut DealerSocket, h: &Header, blobs: Vec<Bytes>) {
    s.send(encode(&[], h, blobs)).await.expect("send");
}

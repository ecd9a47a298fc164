//! Shared helpers of the integration tests: a private redis-server per test, Python pickles.
#![allow(dead_code)]

pub mod dispatch;
pub mod python;
pub mod redis;
pub mod remote;
pub mod worker;
pub mod zmq;

//! The JSON report (schema 1, documented in docs/performance.md, "Server throughput"): one
//! object per run with the settings, how results were collected, and one entry per phase.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::collect::CollectInfo;
use crate::cpu::{CpuReport, SELF_NAME};
use crate::hist::{Latency, Summary};

pub const SCHEMA: u32 = 1;

/// One run of the generator.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    pub tool: &'static str,
    pub version: &'static str,
    /// submit, read, closed or drain.
    pub mode: &'static str,
    /// The command line, parsed.
    pub settings: serde_json::Value,
    pub function_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collect: Option<CollectInfo>,
    pub phases: Vec<Phase>,
    pub meta: Meta,
}

/// When and where the run happened.
#[derive(Debug, Serialize)]
pub struct Meta {
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    /// /proc/loadavg at the start and the end (the machine is shared: read numbers with these).
    pub loadavg_start: [f64; 3],
    pub loadavg_end: [f64; 3],
    pub cpus: usize,
    pub threads: usize,
    pub connections: usize,
    pub pinned: Vec<usize>,
}

/// One measured phase: submit, read, closed or drain.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub name: &'static str,
    /// Successful operations: tasks accepted (submit), results read (read), tasks completed and
    /// collected (closed), tasks terminal (drain).
    pub ops: u64,
    /// Failed operations (HTTP errors, connection errors, timeouts, FAILED tasks in closed loop).
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub seconds: f64,
    pub ops_per_s: f64,
    /// Per operation: from the intended send time (open loop: coordinated omission corrected)
    /// to the answer; in closed loop and with --collect, to the result seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Summary>,
    /// From the moment the request was actually sent (open loop only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_us: Option<Summary>,
    /// GET /result requests per collected task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_requests_per_task: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainDetail>,
    /// TCP connections opened (more than --connections means reconnects).
    pub connects: u64,
    pub cpu: CpuReport,
    /// CPU milliseconds per operation: each component, "server" (all but the generator).
    pub cpu_ms_per_op: BTreeMap<String, f64>,
    /// Generator CPU / server CPU in this phase.
    pub loadgen_vs_server: f64,
}

/// Timings of a drain, from the task records in Redis (millisecond resolution).
#[derive(Debug, Serialize)]
pub struct DrainDetail {
    pub tasks: u64,
    pub completed: u64,
    pub failed: u64,
    /// Wall clock when the dispatcher was started (the go line arrived).
    pub go_unix_ms: i64,
    /// First task's start of its run, after go: dispatcher (and worker) start-up.
    pub first_started_after_go_ms: i64,
    /// Last task's finish, after go: the drain time.
    pub last_finished_after_go_ms: i64,
    /// tasks / (last finish − go): the headline number.
    pub per_s_from_go: f64,
    /// tasks / (last finish − first start): the rate once running.
    pub per_s_running: f64,
    /// Seconds from go until the generator saw the queue empty (the CPU window's end).
    pub detected_s: f64,
    /// XLEN polls while draining.
    pub queue_polls: u64,
    /// Sweeps over the task records afterwards (1 unless a task was still unfinished).
    pub sweeps: u64,
    pub records_read: u64,
}

/// Counters one phase collects (summed over its connections).
#[derive(Debug, Default)]
pub struct Tally {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Latency,
    pub service: Latency,
    pub result_requests: u64,
    pub connects: u64,
}

impl Tally {
    pub fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    pub fn merge(&mut self, o: Tally) {
        self.ops += o.ops;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.latency.merge(&o.latency);
        self.service.merge(&o.service);
        self.result_requests += o.result_requests;
        self.connects += o.connects;
    }

    /// The phase report; `ops` default to the tally's and `seconds` is the phase's length.
    pub fn into_phase(self, name: &'static str, seconds: f64, cpu: CpuReport) -> Phase {
        let ops = self.ops;
        let per = |x: f64| {
            if ops > 0 {
                round(x * 1000.0 / ops as f64, 4)
            } else {
                0.0
            }
        };
        let mut cpu_ms_per_op: BTreeMap<String, f64> = cpu
            .components
            .iter()
            .map(|(n, c)| (n.clone(), per(c.total_s)))
            .collect();
        cpu_ms_per_op.insert("server".into(), per(cpu.server_s));
        let mine = cpu.components.get(SELF_NAME).map_or(0.0, |c| c.total_s);
        Phase {
            name,
            ops,
            errors: self.errors,
            first_error: self.first_error,
            seconds: round(seconds, 4),
            ops_per_s: if seconds > 0.0 {
                round(ops as f64 / seconds, 1)
            } else {
                0.0
            },
            latency_us: self.latency.summary(),
            service_us: self.service.summary(),
            result_requests_per_task: (self.result_requests > 0 && ops > 0)
                .then(|| round(self.result_requests as f64 / ops as f64, 2)),
            drain: None,
            connects: self.connects,
            loadgen_vs_server: if cpu.server_s > 0.0 {
                round(mine / cpu.server_s, 4)
            } else {
                0.0
            },
            cpu,
            cpu_ms_per_op,
        }
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

//! Turns how a task ended (result message, wait status, timeout) into an [`Outcome`].

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::protocol::{ProtocolError, ResultHeader, TaskResult};
use super::Outcome;
use crate::pickle::{exception::exception_pickle, platform_exception, PlatformError};

/// A failure the platform reports as the task's result.
pub fn platform(kind: PlatformError, detail: &str) -> Outcome {
    Outcome::Failed {
        result: platform_exception(kind, detail),
        cause: first_line(&kind.message(detail)),
    }
}

/// The detail of a `ResultTooLarge` failure.
pub fn too_large(len: usize, max: usize) -> String {
    format!("the result is {len} bytes; the limit is {max} bytes (max_result_bytes)")
}

/// `"exited with code 3"` or `"killed by signal 11 (SIGSEGV)"`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    if let Some(sig) = status.signal() {
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        return format!("killed by signal {sig} ({}{core})", signal_name(sig));
    }
    format!("ended with wait status {:#x}", status.into_raw())
}

/// `SIGSEGV` for 11; `signal N` for numbers nix does not know.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned())
}

/// Everything known about a task once its process is gone (or the wait was abandoned).
#[derive(Debug)]
pub struct TaskEnd {
    /// What was read from the task's result channel: `Ok(None)` if it closed without a result.
    pub result: Result<Option<TaskResult>, ProtocolError>,
    /// The process's wait status, if it was reaped.
    pub exit: Option<ExitStatus>,
    /// Set when the task was killed because it ran past this timeout.
    pub timed_out: Option<Duration>,
    /// Why the process's fate is unknown (its zygote died), if it is.
    pub lost: Option<String>,
    /// The pool was shut down while the task ran (it was killed on purpose).
    pub pool_closed: bool,
    /// The run was stopped on request (a `cancel`): its process was killed.
    pub stopped: bool,
    /// "task process" (fork mode) or "executor process" (reuse mode), for messages.
    pub what: &'static str,
    /// The memory limit in MiB (0 = none), mentioned when a crash may have been caused by it.
    pub memory_limit_mb: u64,
}

impl TaskEnd {
    /// Nothing known yet about a task running in `what` under `memory_limit_mb`.
    pub fn new(what: &'static str, memory_limit_mb: u64) -> Self {
        TaskEnd {
            result: Ok(None),
            exit: None,
            timed_out: None,
            lost: None,
            pool_closed: false,
            stopped: false,
            what,
            memory_limit_mb,
        }
    }

    /// Classifies the end of a task; a complete result always wins over how the process exited.
    pub fn outcome(self) -> Outcome {
        let protocol_error = match self.result {
            Ok(Some(result)) => return from_result(result),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        };
        if self.stopped {
            return platform(
                PlatformError::TaskCancelled,
                "the run was cancelled while it was running",
            );
        }
        if self.pool_closed {
            return platform(
                PlatformError::WorkerFailure,
                "the executor pool was shut down while the task was running",
            );
        }
        if let Some(limit) = self.timed_out {
            return platform(
                PlatformError::TaskTimeout,
                &format!(
                    "task exceeded its timeout of {} s and was killed",
                    secs(limit)
                ),
            );
        }
        let mut detail = match (self.exit, &self.lost) {
            (Some(status), _) => format!(
                "{} {} before returning a result",
                self.what,
                describe_exit(status)
            ),
            (None, Some(why)) => format!("{} was lost: {why}", self.what),
            (None, None) => format!("{} ended without a result", self.what),
        };
        if let Some(e) = protocol_error {
            detail.push_str(&format!(" (protocol error: {e})"));
        }
        let by_signal = self.exit.and_then(|s| s.signal()).is_some();
        if by_signal && self.memory_limit_mb > 0 {
            detail.push_str(&format!(
                " (the task had a memory limit of {} MiB)",
                self.memory_limit_mb
            ));
        }
        platform(PlatformError::ExecutorCrashed, &detail)
    }
}

/// The outcome carried by a complete result message.
pub fn from_result(result: TaskResult) -> Outcome {
    match result.header {
        ResultHeader::Ok => Outcome::Completed {
            result: result.payload,
        },
        ResultHeader::Error { cause } => Outcome::Failed {
            result: result.payload,
            cause: first_line(&cause),
        },
        ResultHeader::ForeignError {
            type_name,
            message,
            cause,
            detail,
        } => {
            let text =
                format!("{message}\n(the original exception could not be pickled: {detail})");
            Outcome::Failed {
                result: exception_pickle(&type_name, &text),
                cause: first_line(&cause),
            }
        }
        ResultHeader::Platform { kind, detail } => match PlatformError::from_class_name(&kind) {
            Some(kind) => platform(kind, &detail),
            None => platform(
                PlatformError::ExecutorCrashed,
                &format!("executor reported an unknown failure {kind}: {detail}"),
            ),
        },
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(exit: Option<ExitStatus>) -> TaskEnd {
        TaskEnd {
            result: Ok(None),
            exit,
            timed_out: None,
            lost: None,
            pool_closed: false,
            stopped: false,
            what: "task process",
            memory_limit_mb: 0,
        }
    }

    fn cause(o: Outcome) -> String {
        match o {
            Outcome::Failed { cause, .. } => cause,
            Outcome::Completed { .. } => panic!("expected a failure"),
        }
    }

    #[test]
    fn exit_codes_and_signals() {
        assert_eq!(
            cause(end(Some(ExitStatus::from_raw(3 << 8))).outcome()),
            "ExecutorCrashed: task process exited with code 3 before returning a result"
        );
        assert_eq!(
            cause(end(Some(ExitStatus::from_raw(11))).outcome()),
            "ExecutorCrashed: task process killed by signal 11 (SIGSEGV) before returning a result"
        );
        assert!(describe_exit(ExitStatus::from_raw(0x80 | 6)).contains("SIGABRT, core dumped"));
        let mut limited = end(Some(ExitStatus::from_raw(9)));
        limited.memory_limit_mb = 64;
        assert!(cause(limited.outcome()).contains("memory limit of 64 MiB"));
    }

    #[test]
    fn timeout_and_result_precedence() {
        let mut e = end(Some(ExitStatus::from_raw(9)));
        e.timed_out = Some(Duration::from_millis(1500));
        assert_eq!(
            cause(e.outcome()),
            "TaskTimeout: task exceeded its timeout of 1.5 s and was killed"
        );
        let mut e = end(Some(ExitStatus::from_raw(9)));
        e.result = Ok(Some(TaskResult {
            header: ResultHeader::Ok,
            payload: b"x".to_vec(),
        }));
        assert_eq!(
            e.outcome(),
            Outcome::Completed {
                result: b"x".to_vec()
            }
        );
    }

    #[test]
    fn platform_and_foreign_results() {
        let o = from_result(TaskResult {
            header: ResultHeader::Platform {
                kind: "InvalidTask".into(),
                detail: "bad".into(),
            },
            payload: vec![],
        });
        assert_eq!(cause(o), "InvalidTask: bad");
        let o = from_result(TaskResult {
            header: ResultHeader::ForeignError {
                type_name: "Weird".into(),
                message: "Weird: boom\n\nRemote traceback:\n...".into(),
                cause: "Weird: boom".into(),
                detail: "TypeError: no".into(),
            },
            payload: vec![],
        });
        assert_eq!(cause(o), "Weird: boom");
    }
}

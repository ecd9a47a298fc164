//! Conversions between protocol messages and the executor pool: `TaskMeta` + blobs → `TaskSpec`,
//! `Outcome` → `ResultMeta` + result blob.

use bytes::Bytes;

use crate::executor::{Outcome, TaskSpec};
use crate::protocol::{ResultMeta, TaskMeta, TaskRef};

/// The executor task for `meta` with its function and arguments pickles.
pub(crate) fn task_spec(meta: &TaskMeta, fn_payload: Bytes, args_payload: Bytes) -> TaskSpec {
    TaskSpec {
        task_id: meta.task.task_id.to_string(),
        function_id: meta.function_id.to_string(),
        fn_payload,
        args_payload,
        timeout: meta.timeout_ms.map(std::time::Duration::from_millis),
    }
}

/// The result header and blob reporting how `task` ended.
pub(crate) fn result(task: TaskRef, outcome: Outcome) -> (ResultMeta, Bytes) {
    match outcome {
        Outcome::Completed { result } => (
            ResultMeta {
                task,
                ok: true,
                cause: String::new(),
            },
            Bytes::from(result),
        ),
        Outcome::Failed { result, cause } => {
            let line = cause.lines().next().unwrap_or("").trim();
            let cause = if line.is_empty() { "failed" } else { line };
            (
                ResultMeta {
                    task,
                    ok: false,
                    cause: cause.to_owned(),
                },
                Bytes::from(result),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn task() -> TaskRef {
        TaskRef {
            task_id: Uuid::new_v4(),
            attempt: 1,
        }
    }

    #[test]
    fn spec_carries_ids_and_payloads() {
        let mut meta = TaskMeta {
            task: task(),
            function_id: Uuid::new_v4(),
            timeout_ms: None,
        };
        let s = task_spec(&meta, Bytes::from_static(b"f"), Bytes::from_static(b"a"));
        assert_eq!(s.task_id, meta.task.task_id.to_string());
        assert_eq!(s.function_id, meta.function_id.to_string());
        assert_eq!(
            (&s.fn_payload[..], &s.args_payload[..]),
            (&b"f"[..], &b"a"[..])
        );
        assert!(s.timeout.is_none());
        meta.timeout_ms = Some(2500);
        let s = task_spec(&meta, Bytes::new(), Bytes::new());
        assert_eq!(s.timeout, Some(std::time::Duration::from_millis(2500)));
    }

    #[test]
    fn outcomes_map_to_results() {
        let t = task();
        let (m, b) = result(
            t,
            Outcome::Completed {
                result: b"r".to_vec(),
            },
        );
        assert!(m.ok && m.cause.is_empty() && m.task == t && &b[..] == b"r");
        let failed = Outcome::Failed {
            result: b"e".to_vec(),
            cause: "ZeroDivisionError: division by zero\nmore".into(),
        };
        let (m, b) = result(t, failed);
        assert!(!m.ok && &b[..] == b"e");
        assert_eq!(m.cause, "ZeroDivisionError: division by zero");
        let (m, _) = result(
            t,
            Outcome::Failed {
                result: vec![],
                cause: String::new(),
            },
        );
        assert_eq!(m.cause, "failed");
    }
}

//! The four task states and their wire strings.

use std::fmt;
use std::str::FromStr;

/// Lifecycle of a task: QUEUED → RUNNING → COMPLETED | FAILED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskStatus {
    Queued,
    Running,
    Completed,
    Failed,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "QUEUED",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::Failed => "FAILED",
        }
    }

    /// COMPLETED and FAILED are terminal: never overwritten.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "QUEUED" => Ok(TaskStatus::Queued),
            "RUNNING" => Ok(TaskStatus::Running),
            "COMPLETED" => Ok(TaskStatus::Completed),
            "FAILED" => Ok(TaskStatus::Failed),
            other => Err(format!("unknown task status {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for s in [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Completed,
            TaskStatus::Failed,
        ] {
            assert_eq!(s.as_str().parse::<TaskStatus>(), Ok(s));
        }
        assert!("COMPLETE".parse::<TaskStatus>().is_err());
        assert!(TaskStatus::Failed.is_terminal() && !TaskStatus::Running.is_terminal());
    }
}

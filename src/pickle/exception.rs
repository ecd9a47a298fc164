//! Builds pickles of the platform's own exceptions (WorkerFailure, TaskTimeout, ...) in pure Rust.
//!
//! The pickle only uses `builtins.type` and `builtins.Exception`, so plain `pickle.loads` or
//! `dill.loads` on a client that has nothing but dill installed yields an `Exception` subclass named
//! after the cause, whose `str()` starts with that name, e.g. `WorkerFailure: worker w1 was lost`.

/// The failures the platform itself detects and reports as a task's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformError {
    /// The worker (or dispatcher) running the task was lost: died, hung, or missed its deadline.
    WorkerFailure,
    /// The task ran longer than its configured timeout and was killed.
    TaskTimeout,
    /// The executor process running the task died: exit code or signal.
    ExecutorCrashed,
    /// The task exceeded a resource limit (memory).
    ResourceLimitExceeded,
    /// The function or its arguments could not be deserialized on the executor.
    DeserializationError,
    /// The function's return value (or exception) could not be serialized.
    SerializationError,
    /// The arguments payload was not an `(args, kwargs)` pair, or the function record was missing.
    InvalidTask,
    /// A user cancelled the task (`POST /cancel/{task_id}`) before it ran.
    TaskCancelled,
    /// The task's function was deleted (`DELETE /functions/{id}`) before the task ran.
    FunctionDeleted,
    /// The task's arguments are larger than the dispatcher's `max_payload_bytes`.
    PayloadTooLarge,
    /// The function's result is larger than `max_result_bytes`, or than Redis accepts.
    ResultTooLarge,
}

impl PlatformError {
    /// Every platform failure, for lookups by name.
    pub const ALL: [PlatformError; 11] = [
        PlatformError::WorkerFailure,
        PlatformError::TaskTimeout,
        PlatformError::ExecutorCrashed,
        PlatformError::ResourceLimitExceeded,
        PlatformError::DeserializationError,
        PlatformError::SerializationError,
        PlatformError::InvalidTask,
        PlatformError::TaskCancelled,
        PlatformError::FunctionDeleted,
        PlatformError::PayloadTooLarge,
        PlatformError::ResultTooLarge,
    ];

    /// The Python class name of this failure, also the first word of its message.
    pub fn class_name(self) -> &'static str {
        match self {
            PlatformError::WorkerFailure => "WorkerFailure",
            PlatformError::TaskTimeout => "TaskTimeout",
            PlatformError::ExecutorCrashed => "ExecutorCrashed",
            PlatformError::ResourceLimitExceeded => "ResourceLimitExceeded",
            PlatformError::DeserializationError => "DeserializationError",
            PlatformError::SerializationError => "SerializationError",
            PlatformError::InvalidTask => "InvalidTask",
            PlatformError::TaskCancelled => "TaskCancelled",
            PlatformError::FunctionDeleted => "FunctionDeleted",
            PlatformError::PayloadTooLarge => "PayloadTooLarge",
            PlatformError::ResultTooLarge => "ResultTooLarge",
        }
    }

    /// The built-in Python class the exception derives from: `TimeoutError` for a timeout (so
    /// `except TimeoutError` catches it), `Exception` otherwise.
    pub fn base_class(self) -> &'static str {
        match self {
            PlatformError::TaskTimeout => "TimeoutError",
            _ => "Exception",
        }
    }

    /// Parses a class name as sent by the executor; unknown names yield `None`.
    pub fn from_class_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.class_name() == name)
    }

    /// The full message stored with the task: `"<ClassName>: <detail>"`.
    pub fn message(self, detail: &str) -> String {
        format!("{}: {}", self.class_name(), detail)
    }
}

// Pickle opcodes used below (protocol 4).
const PROTO: u8 = 0x80;
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE: u8 = b'X';
const BINUNICODE8: u8 = 0x8d;
const STACK_GLOBAL: u8 = 0x93;
const TUPLE1: u8 = 0x85;
const TUPLE3: u8 = 0x87;
const EMPTY_DICT: u8 = b'}';
const SETITEM: u8 = b's';
const REDUCE: u8 = b'R';
const STOP: u8 = b'.';

fn push_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if let Ok(n) = u8::try_from(b.len()) {
        out.push(SHORT_BINUNICODE);
        out.push(n);
    } else if let Ok(n) = u32::try_from(b.len()) {
        out.push(BINUNICODE);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(BINUNICODE8);
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(b);
}

fn push_global(out: &mut Vec<u8>, module: &str, name: &str) {
    push_str(out, module);
    push_str(out, name);
    out.push(STACK_GLOBAL);
}

/// Pickles `type(class_name, (base,), {"__module__": "builtins"})(message)` where `base` is
/// [`PlatformError::base_class`] and `message` is `"<class_name>: <detail>"`.
pub fn platform_exception(kind: PlatformError, detail: &str) -> Vec<u8> {
    subclass_pickle(kind.class_name(), kind.base_class(), &kind.message(detail))
}

/// Pickles an instance of a fresh `Exception` subclass named `class_name` carrying `message`.
pub fn exception_pickle(class_name: &str, message: &str) -> Vec<u8> {
    subclass_pickle(class_name, "Exception", message)
}

/// Pickles an instance of a fresh subclass of the built-in exception `base`.
fn subclass_pickle(class_name: &str, base: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + class_name.len() + message.len());
    out.extend_from_slice(&[PROTO, 4]);
    // type(name, (base,), {"__module__": "builtins"})
    push_global(&mut out, "builtins", "type");
    push_str(&mut out, class_name);
    push_global(&mut out, "builtins", base);
    out.push(TUPLE1);
    out.push(EMPTY_DICT);
    push_str(&mut out, "__module__");
    push_str(&mut out, "builtins");
    out.push(SETITEM);
    out.push(TUPLE3);
    out.push(REDUCE);
    // cls(message)
    push_str(&mut out, message);
    out.push(TUPLE1);
    out.push(REDUCE);
    out.push(STOP);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        for k in PlatformError::ALL {
            assert_eq!(PlatformError::from_class_name(k.class_name()), Some(k));
        }
        assert_eq!(PlatformError::from_class_name("Nope"), None);
    }

    #[test]
    fn pickle_is_framed_and_long_messages_use_binunicode() {
        let p = platform_exception(PlatformError::TaskTimeout, &"x".repeat(300));
        assert_eq!(&p[..2], &[PROTO, 4]);
        assert_eq!(p.last(), Some(&STOP));
        assert!(p.contains(&BINUNICODE));
        let short = platform_exception(PlatformError::TaskTimeout, "1 s");
        assert!(!short.contains(&BINUNICODE));
    }
}

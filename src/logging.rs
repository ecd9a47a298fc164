//! Log set-up shared by the daemons: journald when stderr is the journal, readable stderr otherwise.
//!
//! The level comes from the config's `log_level` (which `-v` raises); `RUST_LOG` overrides both.
//! Under systemd, stderr is connected to the journal and `JOURNAL_STREAM` names it
//! (`<st_dev>:<st_ino>` of that stream, see systemd.exec(5)): then events go to journald natively
//! via tracing-journald, with their fields as journal fields — upper-cased and without a prefix, so
//! `journalctl -u faas-dispatcher@push TASK_ID=<uuid>` finds every line about a task (fields of
//! enclosing spans are included). Levels become syslog priorities as every other daemon logs them
//! (error 3, warn 4, info 6, debug and trace 7), not tracing-journald's default, which shifts
//! info to 5 (notice) and floods `journalctl -p notice`. Lines written to stderr before this
//! set-up (configuration errors) get a `<3>` prefix ([`stderr_prefix`]) so they are errors there
//! too. Anything else (a terminal, a pipe, a file, or stderr redirected by a child of the service)
//! gets the plain fmt layer, with ANSI colours only on a terminal.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::fd::AsFd;

pub use tracing_journald::Priority;
use tracing_journald::PriorityMappings;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where log events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journald,
    Stderr,
}

/// Installs the global subscriber. `RUST_LOG` wins over `default_level` (e.g. "info").
/// Returns where events go.
pub fn init(default_level: &str) -> Sink {
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},h2=warn,hyper=warn")))
    };
    let journal = std::env::var_os("JOURNAL_STREAM");
    if is_journal(journal.as_deref(), std::io::stderr()) {
        match tracing_journald::layer() {
            Ok(layer) => {
                // No `F_` prefix: fields are queried as TASK_ID=…, WORKER=…, FUNCTION_ID=….
                let layer = layer
                    .with_field_prefix(None)
                    .with_priority_mappings(priorities());
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .try_init();
                return Sink::Journald;
            }
            Err(e) => eprintln!("journald is not reachable ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Sink::Stderr
}

/// journald `PRIORITY` of each tracing level: the syslog convention (info is 6, not 5).
pub fn priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// What to put before a line written straight to stderr (e.g. a configuration error, reported
/// before logging is set up) so that journald stores it at `priority` rather than at the stream's
/// default, info: the `<N>` prefix of sd-daemon(3), which systemd strips (SyslogLevelPrefix=yes,
/// the default). Empty when stderr is not the journal, where the prefix would only be noise.
pub fn stderr_prefix(priority: Priority) -> &'static str {
    let journal = std::env::var_os("JOURNAL_STREAM");
    priority_prefix(is_journal(journal.as_deref(), std::io::stderr()), priority)
}

/// The `<N>` prefix of `priority` when `to_journal`, else nothing.
pub fn priority_prefix(to_journal: bool, priority: Priority) -> &'static str {
    if !to_journal {
        return "";
    }
    match priority {
        Priority::Emergency => "<0>",
        Priority::Alert => "<1>",
        Priority::Critical => "<2>",
        Priority::Error => "<3>",
        Priority::Warning => "<4>",
        Priority::Notice => "<5>",
        Priority::Informational => "<6>",
        Priority::Debug => "<7>",
    }
}

/// True when `fd` is the journal stream named by `journal_stream` (the value of
/// `JOURNAL_STREAM`), i.e. its device and inode numbers match (systemd's rule: the variable is
/// inherited by children whose stderr may point elsewhere).
pub fn is_journal(journal_stream: Option<&OsStr>, fd: impl AsFd) -> bool {
    let Some(value) = journal_stream.and_then(OsStr::to_str) else {
        return false;
    };
    match nix::sys::stat::fstat(fd) {
        // dev_t and ino_t are not u64 on every platform.
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => journal_stream_matches(value, st.st_dev as u64, st.st_ino as u64),
        Err(_) => false,
    }
}

/// Parses `JOURNAL_STREAM` (`"<dev>:<ino>"`, decimal) and compares it with `dev` and `ino`.
pub fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().is_ok_and(|d| d == dev) && i.parse::<u64>().is_ok_and(|i| i == ino)
}

/// Maps a `-v` count onto a level name, starting from `base`.
pub fn level_from_verbosity(base: &str, verbose: u8) -> String {
    match verbose {
        0 => base.to_string(),
        1 => "debug".into(),
        _ => "trace".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn parses_journal_stream() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(journal_stream_matches(" 8:12345\n", 8, 12345));
        assert!(!journal_stream_matches("8:12346", 8, 12345));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("8", 8, 12345));
        assert!(!journal_stream_matches("", 8, 12345));
        assert!(!journal_stream_matches("x:y", 8, 12345));
        assert!(!journal_stream_matches("-8:12345", 8, 12345));
    }

    #[test]
    fn journal_only_when_the_stream_matches_the_fd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = std::fs::File::create(dir.path().join("a")).expect("file a");
        let b = std::fs::File::create(dir.path().join("b")).expect("file b");
        let ma = a.metadata().expect("metadata");
        let stream = format!("{}:{}", ma.dev(), ma.ino());
        assert!(is_journal(Some(OsStr::new(&stream)), &a));
        // Same variable, another stream (e.g. a child whose stderr was redirected).
        assert!(!is_journal(Some(OsStr::new(&stream)), &b));
        assert!(!is_journal(None, &a));
        assert!(!is_journal(Some(OsStr::new("garbage")), &a));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        let p = priorities();
        // (level, priority digit journald stores): `journalctl -p info` shows info and above.
        let table = [
            ("error", p.error, b'3'),
            ("warn", p.warn, b'4'),
            ("info", p.info, b'6'),
            ("debug", p.debug, b'7'),
            ("trace", p.trace, b'7'),
        ];
        for (level, got, want) in table {
            assert_eq!(got as u8, want, "{level}");
        }
    }

    #[test]
    fn stderr_lines_carry_their_priority_only_into_the_journal() {
        assert_eq!(priority_prefix(true, Priority::Error), "<3>");
        assert_eq!(priority_prefix(true, Priority::Warning), "<4>");
        assert_eq!(priority_prefix(true, Priority::Informational), "<6>");
        assert_eq!(priority_prefix(false, Priority::Error), "");
        // The prefix is the digit journald stores as PRIORITY.
        for p in [Priority::Error, Priority::Warning, Priority::Debug] {
            assert_eq!(priority_prefix(true, p).as_bytes()[1], p as u8);
        }
    }

    #[test]
    fn verbosity_raises_the_level() {
        assert_eq!(level_from_verbosity("warn", 0), "warn");
        assert_eq!(level_from_verbosity("warn", 1), "debug");
        assert_eq!(level_from_verbosity("warn", 3), "trace");
    }
}

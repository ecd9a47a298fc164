//! Log set-up shared by the daemons: journald when stderr is the journal, readable stderr otherwise.
//!
//! The level comes from the config's `log_level` (which `-v` raises); `RUST_LOG` overrides both.
//! Under systemd, stderr is connected to the journal and `JOURNAL_STREAM` names it
//! (`<st_dev>:<st_ino>` of that stream, see systemd.exec(5)): then events go to journald natively
//! via tracing-journald, with their fields as journal fields — upper-cased and without a prefix, so
//! `journalctl -u faas-dispatcher@push TASK_ID=<uuid>` finds every line about a task (fields of
//! enclosing spans are included). Anything else (a terminal, a pipe, a file, or stderr redirected
//! by a child of the service) gets the plain fmt layer, with ANSI colours only on a terminal.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::fd::AsFd;

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
                let layer = layer.with_field_prefix(None);
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
    fn verbosity_raises_the_level() {
        assert_eq!(level_from_verbosity("warn", 0), "warn");
        assert_eq!(level_from_verbosity("warn", 1), "debug");
        assert_eq!(level_from_verbosity("warn", 3), "trace");
    }
}

//! Log set-up shared by the daemons: tracing to stderr, level from `-v`, config or `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` wins over `default_level` (e.g. "info").
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},h2=warn,hyper=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Maps a `-v` count onto a level name, starting from `base`.
pub fn level_from_verbosity(base: &str, verbose: u8) -> String {
    match verbose {
        0 => base.to_string(),
        1 => "debug".into(),
        _ => "trace".into(),
    }
}

//! Daemon configuration: typed settings loaded from TOML files and overridden by flags.

//! Config layers: one file or the environment as a TOML table, checked on its own against the
//! settings struct (so errors name the layer and the key), then deep-merged in order.

use std::path::Path;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::error::{ConfigError, Line, Origin};

/// Deep-merges `over` into `base`: tables merge key by key, any other value replaces.
pub fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Parses the text of config file `path` into a table, checking every key and value against `T`.
pub fn parse_file<T: DeserializeOwned>(path: &Path, text: &str) -> Result<Table, ConfigError> {
    let syntax = |e: toml::de::Error| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: line_of(text, &e),
        message: e.message().trim_end().to_string(),
    };
    let table: Table = toml::from_str(text).map_err(syntax)?;
    let de = toml::Deserializer::parse(text).map_err(syntax)?;
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
        let key = e.path().to_string();
        let err = e.into_inner();
        classify(
            Origin::File(path.to_path_buf()),
            line_of(text, &err),
            key,
            &err,
        )
    })?;
    Ok(table)
}

/// Checks a table built from elsewhere (the environment) against `T`; `origin` maps the dotted
/// key of a failure to where it came from.
pub fn check_table<T: DeserializeOwned>(
    table: &Table,
    origin: impl Fn(&str) -> Origin,
) -> Result<(), ConfigError> {
    serde_path_to_error::deserialize::<_, T>(Value::Table(table.clone())).map_err(|e| {
        let key = e.path().to_string();
        let err = e.into_inner();
        classify(origin(&key), Line::default(), key, &err)
    })?;
    Ok(())
}

/// Deserializes the merged table into the settings struct.
pub fn finish<T: DeserializeOwned>(table: Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize::<_, T>(Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::invalid(key, e.into_inner().message().trim_end().to_string())
    })
}

/// Turns a deserialization error at `key` into an unknown-key or bad-value error.
fn classify(origin: Origin, line: Line, key: String, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim_end();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let hint = rest
            .split_once(", ")
            .map(|(_, expected)| format!("; {expected}"))
            .unwrap_or_default();
        return ConfigError::UnknownKey {
            origin,
            line,
            key,
            hint,
        };
    }
    ConfigError::BadValue {
        origin,
        line,
        key,
        message: message.to_string(),
    }
}

/// The 1-based line of an error's span in `text`, if it has one.
fn line_of(text: &str, err: &toml::de::Error) -> Line {
    Line(err.span().map(|span| {
        let end = span.start.min(text.len());
        text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DispatcherConfig;

    fn table(text: &str) -> Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn merge_is_deep() {
        let mut base = table("a = 1\n[t]\nx = 1\ny = 2\n");
        merge(&mut base, table("b = 2\n[t]\ny = 3\n"));
        assert_eq!(base, table("a = 1\nb = 2\n[t]\nx = 1\ny = 3\n"));
    }

    #[test]
    fn unknown_nested_key_is_named_with_line() {
        let err =
            parse_file::<DispatcherConfig>(Path::new("d.toml"), "port = 1\n[local]\nporrt = 2\n")
                .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("d.toml, line 3: unknown key `local.porrt`"),
            "{msg}"
        );
    }

    #[test]
    fn bad_type_is_named() {
        let err = parse_file::<DispatcherConfig>(Path::new("d.toml"), "\nport = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("d.toml, line 2: bad value for `port`"),
            "{err}"
        );
    }
}

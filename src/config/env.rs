//! The environment layer: `FAAS_<DAEMON>_<KEY>` variables, `__` between nested keys.
//!
//! `FAAS_DISPATCHER_MAX_RETRIES=2` sets `max_retries`, `FAAS_WORKER_EXECUTOR__PYTHON=/usr/bin/python3`
//! sets `executor.python`. A value is taken verbatim where the setting is a string; elsewhere it
//! is parsed as a TOML value (`4`, `1.5`, `true`, `["a", "b"]`) and kept as a string when it does
//! not parse. Unknown keys under the daemon's prefix are errors, like unknown keys in files.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::error::{ConfigError, Line, Origin};
use super::layer::check_table;

/// Separator between nested keys in a variable name.
pub const NEST: &str = "__";

/// Variable prefix of a daemon, e.g. `FAAS_DISPATCHER_` for `dispatcher`.
pub fn prefix(daemon: &str) -> String {
    format!("FAAS_{}_", daemon.to_ascii_uppercase())
}

/// Variable name that sets the dotted `key` of `daemon` (e.g. `executor.python`).
pub fn var_name(daemon: &str, key: &str) -> String {
    let parts: Vec<String> = key.split('.').map(|p| p.to_ascii_uppercase()).collect();
    format!("{}{}", prefix(daemon), parts.join(NEST))
}

/// Builds the layer of `daemon` from `vars`, typed by the serialized defaults, checked against `T`.
pub fn layer<T: DeserializeOwned>(
    daemon: &str,
    vars: &[(String, String)],
    defaults: &Table,
) -> Result<Table, ConfigError> {
    let prefix = prefix(daemon);
    let mut table = Table::new();
    let mut origins: BTreeMap<String, String> = BTreeMap::new();
    let mut ours: Vec<&(String, String)> = vars
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    ours.sort();
    for (var, raw) in ours {
        let path: Vec<String> = var[prefix.len()..]
            .split(NEST)
            .map(|p| p.to_ascii_lowercase())
            .collect();
        let key = path.join(".");
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::UnknownKey {
                origin: Origin::Env(var.clone()),
                line: Line::default(),
                key,
                hint: format!("; use {prefix}KEY, with {NEST} between nested keys"),
            });
        }
        let value = match lookup(defaults, &path) {
            Some(Value::String(_)) => Value::String(raw.clone()),
            _ => parse_value(raw),
        };
        insert(&mut table, &path, value).map_err(|message| ConfigError::BadValue {
            origin: Origin::Env(var.clone()),
            line: Line::default(),
            key: key.clone(),
            message,
        })?;
        origins.insert(key, var.clone());
    }
    check_table::<T>(&table, |key| {
        let var = origins
            .get(key)
            .or_else(|| {
                origins
                    .iter()
                    .find(|(k, _)| k.starts_with(&format!("{key}.")))
                    .map(|(_, v)| v)
            })
            .cloned()
            .unwrap_or_else(|| format!("{prefix}*"));
        Origin::Env(var)
    })?;
    Ok(table)
}

/// `raw` as a TOML value if it is one (number, bool, array, quoted string), else as a string.
pub fn parse_value(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(p)?.as_table()?;
    }
    t.get(last)
}

fn insert(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is set as a value and as a table"))?;
    }
    if t.get(last).is_some_and(Value::is_table) {
        return Err(format!("`{last}` is a table, set its keys instead"));
    }
    t.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_toml_or_stay_strings() {
        assert_eq!(parse_value("4"), Value::Integer(4));
        assert_eq!(parse_value("1.5"), Value::Float(1.5));
        assert_eq!(parse_value("true"), Value::Boolean(true));
        assert_eq!(parse_value("\"x\""), Value::String("x".into()));
        assert_eq!(parse_value("tcp://h:1"), Value::String("tcp://h:1".into()));
        assert_eq!(parse_value("1\nx = 2"), Value::String("1\nx = 2".into()));
        assert!(parse_value("[\"a\", \"b\"]").is_array());
    }

    #[test]
    fn names_map_to_keys() {
        assert_eq!(
            var_name("dispatcher", "executor.python"),
            "FAAS_DISPATCHER_EXECUTOR__PYTHON"
        );
        assert_eq!(var_name("worker", "max_retries"), "FAAS_WORKER_MAX_RETRIES");
    }
}

//! Config tests: shipped files vs defaults, layering (file < drop-in < env < flag), error messages
//! naming file and key, the env scheme, `--check-config` and exit 78 of the real binaries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::Parser;
use faas::cli::{DispatcherArgs, GatewayArgs, WorkerArgs};
use faas::config::doc;
use faas::config::load::defaults_table;
use faas::config::{
    DispatcherConfig, GatewayConfig, Mode, Settings, Sources, WorkerConfig, WorkerMode,
};
use tempfile::TempDir;
use toml::{Table, Value};

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/faas")
}

/// A config directory with the given files (relative path, content).
fn config_dir(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn sources(dir: &Path, env: &[(&str, &str)]) -> Sources {
    Sources {
        dir: dir.to_path_buf(),
        file: None,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Runs a daemon binary with only `FAAS_CONFIG_DIR=dir` and `env` in its environment.
fn run(daemon: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let bin = match daemon {
        "gateway" => env!("CARGO_BIN_EXE_faas-gateway"),
        "dispatcher" => env!("CARGO_BIN_EXE_faas-dispatcher"),
        _ => env!("CARGO_BIN_EXE_faas-worker"),
    };
    Command::new(bin)
        .env_clear()
        .env("FAAS_CONFIG_DIR", dir)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run daemon")
}

/// `--check-config` output as a table (asserting exit 0).
fn check_config(daemon: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Table {
    let mut all = args.to_vec();
    all.push("--check-config");
    let out = run(daemon, dir, env, &all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("stdout is TOML")
}

/// Stderr of a `--check-config` run that must fail with 78.
fn check_config_fails(daemon: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--check-config");
    let out = run(daemon, dir, env, &all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    stderr
}

/// Dotted paths of every key in `table`, tables included.
fn key_paths(table: &Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        if let Value::Table(t) = value {
            key_paths(t, &format!("{path}."), out);
        }
        out.insert(path);
    }
}

fn shipped_matches_defaults<T: Settings>() {
    let path = shipped_dir().join(format!("{}.toml", T::NAME));
    let text = std::fs::read_to_string(&path).expect("shipped file");
    let shipped: Table = toml::from_str(&text).expect("shipped file is TOML");
    let defaults = defaults_table::<T>();
    let (mut have, mut want) = (BTreeSet::new(), BTreeSet::new());
    key_paths(&shipped, "", &mut have);
    key_paths(&defaults, "", &mut want);
    assert_eq!(
        have,
        want,
        "keys of {} vs {}::default()",
        path.display(),
        T::NAME
    );
    // Values are the defaults (normalized through the struct: 30 and 30.0 are the same).
    let typed: T = shipped.try_into().expect("shipped file deserializes");
    assert_eq!(
        defaults_table::<T>(),
        Table::try_from(typed).expect("serialize"),
        "values in {} must be the defaults",
        path.display()
    );
    // Every setting and table carries a comment; commented-out settings are real keys that are
    // unset by default.
    let parsed = doc::parse(&text).expect("shipped file follows the doc layout");
    assert!(!parsed.intro.is_empty());
    for entry in &parsed.entries {
        assert!(!entry.doc.is_empty(), "{}: no comment", entry.path());
        if entry.unset {
            assert!(
                !want.contains(&entry.path()),
                "{} is set by default",
                entry.path()
            );
            let snippet = match &entry.table {
                Some(t) => format!(
                    "[{t}]\n{} = {}",
                    entry.key.as_deref().unwrap_or(""),
                    entry.value
                ),
                None => format!("{} = {}", entry.path(), entry.value),
            };
            toml::from_str::<T>(&snippet)
                .unwrap_or_else(|e| panic!("example of {}: {e}", entry.path()));
        }
    }
}

#[test]
fn shipped_files_contain_exactly_the_default_keys() {
    shipped_matches_defaults::<GatewayConfig>();
    shipped_matches_defaults::<DispatcherConfig>();
    shipped_matches_defaults::<WorkerConfig>();
}

#[test]
fn shipped_files_pass_check_config_and_change_nothing() {
    for daemon in ["gateway", "dispatcher", "worker"] {
        let got = check_config(daemon, &shipped_dir(), &[], &[]);
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            got,
            check_config(daemon, empty.path(), &[], &[]),
            "{daemon}"
        );
    }
}

#[test]
fn dispatcher_layers_file_dropin_env_flag() {
    let dir = config_dir(&[
        (
            "dispatcher.toml",
            "port = 1001\nmax_retries = 1\nname = \"file\"\n[local]\nprocesses = 1\n\
             [executor]\npython = \"file-py\"\n",
        ),
        (
            "dispatcher.d/10-site.toml",
            "port = 1002\nmax_retries = 2\nname = \"dropin\"\n[executor]\npreload = [\"os\"]\n",
        ),
    ]);
    let env = [
        ("FAAS_DISPATCHER_PORT", "1003"),
        ("FAAS_DISPATCHER_NAME", "env"),
    ];
    let args = DispatcherArgs::try_parse_from(["faas-dispatcher", "-p", "1004"]).expect("args");
    let cfg = args
        .into_config_from(&sources(dir.path(), &env))
        .expect("config");
    assert_eq!(cfg.local.processes, 1); // file
    assert_eq!(cfg.executor.python, "file-py"); // file, table merged with the drop-in's
    assert_eq!(cfg.executor.preload, vec!["os".to_string()]); // drop-in
    assert_eq!(cfg.max_retries, 2); // drop-in over file
    assert_eq!(cfg.name, "env"); // env over drop-in
    assert_eq!(cfg.port, 1004); // flag over env
}

#[test]
fn gateway_layers_file_dropin_env_flag() {
    let dir = config_dir(&[
        (
            "gateway.toml",
            "listen = \"127.0.0.1:1001\"\nmax_body_bytes = 1\nlog_level = \"warn\"\n\
             redis = \"redis://file:6379\"\n",
        ),
        (
            "gateway.d/10-site.toml",
            "listen = \"127.0.0.1:1002\"\nmax_body_bytes = 2\nredis = \"redis://dropin:6379\"\n",
        ),
    ]);
    let env = [
        ("FAAS_GATEWAY_LISTEN", "127.0.0.1:1003"),
        ("FAAS_GATEWAY_REDIS", "redis://env:6379"),
    ];
    let args =
        GatewayArgs::try_parse_from(["faas-gateway", "--listen", "127.0.0.1:1004"]).expect("args");
    let cfg = args
        .into_config_from(&sources(dir.path(), &env))
        .expect("config");
    assert_eq!(cfg.log_level, "warn");
    assert_eq!(cfg.max_body_bytes, 2);
    assert_eq!(cfg.redis, "redis://env:6379");
    assert_eq!(cfg.listen, "127.0.0.1:1004");
}

#[test]
fn worker_layers_file_dropin_env_args() {
    let dir = config_dir(&[
        (
            "worker.toml",
            "mode = \"push\"\nprocesses = 1\nid = \"file\"\nheartbeat_misses = 7\n\
             dispatcher = \"tcp://file:1\"\n",
        ),
        (
            "worker.d/50-site.toml",
            "processes = 2\nid = \"dropin\"\ndispatcher = \"tcp://dropin:2\"\n",
        ),
    ]);
    let env = [
        ("FAAS_WORKER_ID", "123"), // a string setting: taken verbatim, not as a number
        ("FAAS_WORKER_DISPATCHER", "tcp://env:3"),
    ];
    let args = WorkerArgs::try_parse_from(["faas-worker", "pull", "4"]).expect("args");
    let cfg = args
        .into_config_from(&sources(dir.path(), &env))
        .expect("config");
    assert_eq!(cfg.heartbeat_misses, 7);
    assert_eq!(cfg.id, "123");
    assert_eq!(cfg.dispatcher, "tcp://env:3");
    assert_eq!(cfg.processes, 4);
    assert_eq!(cfg.mode, WorkerMode::Pull);
}

#[test]
fn dropins_apply_in_lexical_order() {
    let dir = config_dir(&[
        ("dispatcher.d/10-a.toml", "name = \"a\"\nmax_retries = 1\n"),
        ("dispatcher.d/20-b.toml", "name = \"b\"\n"),
        ("dispatcher.d/9-c.toml", "name = \"c\"\n"),
        ("dispatcher.d/99-ignored.conf", "name = \"not toml\"\n"),
        ("dispatcher.d/.99-hidden.toml", "name = \"hidden\"\n"),
    ]);
    let files = sources(dir.path(), &[]).files("dispatcher").expect("files");
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["10-a.toml", "20-b.toml", "9-c.toml"]);
    let cfg: DispatcherConfig = faas::config::load(&sources(dir.path(), &[])).expect("config");
    assert_eq!(cfg.name, "c");
    assert_eq!(cfg.max_retries, 1);
}

#[test]
fn unknown_key_in_dropin_names_file_and_key_and_exits_78() {
    let dir = config_dir(&[("dispatcher.d/10-local.toml", "[local]\nporrt = 3\n")]);
    let stderr = check_config_fails("dispatcher", dir.path(), &[], &[]);
    let file = dir.path().join("dispatcher.d/10-local.toml");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("unknown key `local.porrt`"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
    // The same at a normal start (no --check-config): exit 78 before anything connects.
    let out = run("dispatcher", dir.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn bad_value_type_names_file_and_key() {
    let dir = config_dir(&[(
        "worker.toml",
        "# c\n[executor]\nmemory_limit_mb = \"lots\"\n",
    )]);
    let err = WorkerArgs::try_parse_from(["faas-worker"])
        .expect("args")
        .into_config_from(&sources(dir.path(), &[]))
        .expect_err("bad type")
        .to_string();
    let file = dir.path().join("worker.toml").display().to_string();
    assert!(
        err.starts_with(&format!(
            "{file}, line 3: bad value for `executor.memory_limit_mb`"
        )),
        "{err}"
    );
    let stderr = check_config_fails("worker", dir.path(), &[], &[]);
    assert!(stderr.contains("executor.memory_limit_mb"), "{stderr}");
}

#[test]
fn syntax_error_names_file_and_line() {
    let dir = config_dir(&[("gateway.toml", "listen = \"127.0.0.1:1\"\nredis = \n")]);
    let stderr = check_config_fails("gateway", dir.path(), &[], &[]);
    assert!(
        stderr.contains("gateway.toml, line 2: TOML syntax error"),
        "{stderr}"
    );
}

#[test]
fn env_scheme_nested_keys_and_toml_values() {
    let empty = tempfile::tempdir().expect("tempdir");
    let env = [
        ("FAAS_DISPATCHER_EXECUTOR__PYTHON", "/usr/bin/python3"),
        (
            "FAAS_DISPATCHER_EXECUTOR__PRELOAD",
            "[\"json\", \"os.path\"]",
        ),
        ("FAAS_DISPATCHER_EXECUTOR__ISOLATION", "reuse"),
        // A table is given whole; names keep their case.
        (
            "FAAS_DISPATCHER_EXECUTOR__ENV",
            "{HTTP_PROXY = \"http://p:3128\"}",
        ),
        ("FAAS_DISPATCHER_EXECUTOR__USER", ""),
        ("FAAS_DISPATCHER_LOCAL__PROCESSES", "3"),
        ("FAAS_DISPATCHER_DRAIN_TIMEOUT_SECS", "5"),
        ("FAAS_DISPATCHER_MAX_RETRIES", "2"),
        ("FAAS_DISPATCHER_MODE", "push"),
        ("FAAS_WORKER_ID", "ignored-by-the-dispatcher"),
    ];
    let cfg = check_config("dispatcher", empty.path(), &env, &[]);
    let exec = cfg["executor"].as_table().expect("executor");
    assert_eq!(exec["python"].as_str(), Some("/usr/bin/python3"));
    assert_eq!(exec["isolation"].as_str(), Some("reuse"));
    assert_eq!(exec["env"]["HTTP_PROXY"].as_str(), Some("http://p:3128"));
    assert_eq!(exec["user"].as_str(), Some(""));
    assert_eq!(
        exec["preload"],
        Value::Array(vec!["json".into(), "os.path".into()])
    );
    assert_eq!(cfg["local"]["processes"].as_integer(), Some(3));
    assert_eq!(cfg["drain_timeout_secs"].as_float(), Some(5.0));
    assert_eq!(cfg["max_retries"].as_integer(), Some(2));
    assert_eq!(cfg["mode"].as_str(), Some("push"));
}

#[test]
fn unknown_or_bad_env_vars_are_errors_naming_the_variable() {
    let empty = tempfile::tempdir().expect("tempdir");
    let stderr = check_config_fails(
        "dispatcher",
        empty.path(),
        &[("FAAS_DISPATCHER_EXECUTOR__PYTON", "x")],
        &[],
    );
    assert!(
        stderr.contains("environment variable FAAS_DISPATCHER_EXECUTOR__PYTON"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown key `executor.pyton`"), "{stderr}");
    let stderr = check_config_fails(
        "worker",
        empty.path(),
        &[("FAAS_WORKER_PROCESSES", "many")],
        &[],
    );
    assert!(
        stderr.contains("FAAS_WORKER_PROCESSES: bad value for `processes`"),
        "{stderr}"
    );
    let stderr = check_config_fails("gateway", empty.path(), &[("FAAS_GATEWAY_", "1")], &[]);
    assert!(stderr.contains("FAAS_GATEWAY_"), "{stderr}");
}

#[test]
fn check_config_prints_effective_settings() {
    let dir = config_dir(&[("gateway.d/10.toml", "max_body_bytes = 1234\n")]);
    let cfg = check_config(
        "gateway",
        dir.path(),
        &[("FAAS_GATEWAY_LOG_LEVEL", "debug")],
        &["--redis", "redis://10.0.0.7:6380/1"],
    );
    let want: Table = toml::from_str(
        "listen = \"127.0.0.1:8000\"\nredis = \"redis://10.0.0.7:6380/1\"\n\
         wait_replicas = 0\nwait_timeout_ms = 1000\n\
         max_body_bytes = 1234\nlog_level = \"debug\"\nmax_wait_secs = 60.0\n\
         max_waiters = 100000\nmax_batch = 1000\nmax_task_timeout_secs = 86400.0\n\
         result_ttl_secs = 604800\nheader_read_timeout_secs = 10.0\n\
         body_read_timeout_secs = 60.0\nmax_connections = 4096\nmax_name_bytes = 256\n",
    )
    .expect("toml");
    assert_eq!(cfg, want);
}

#[test]
fn spec_command_lines_still_work() {
    let empty = tempfile::tempdir().expect("tempdir");
    let d = check_config(
        "dispatcher",
        empty.path(),
        &[],
        &[
            "-m",
            "push",
            "-p",
            "5556",
            "-w",
            "4",
            "--redis",
            "redis://10.0.0.7:6379",
        ],
    );
    assert_eq!(d["mode"].as_str(), Some("push"));
    assert_eq!(d["port"].as_integer(), Some(5556));
    assert_eq!(d["local"]["processes"].as_integer(), Some(4));
    assert_eq!(d["redis"].as_str(), Some("redis://10.0.0.7:6379"));

    let w = check_config(
        "worker",
        empty.path(),
        &[],
        &["push", "4", "tcp://10.0.0.5:5555"],
    );
    assert_eq!(w["mode"].as_str(), Some("push"));
    assert_eq!(w["processes"].as_integer(), Some(4));
    assert_eq!(w["dispatcher"].as_str(), Some("tcp://10.0.0.5:5555"));

    let g = check_config(
        "gateway",
        empty.path(),
        &[],
        &[
            "--listen",
            "0.0.0.0:8080",
            "--redis",
            "redis://10.0.0.7:6379",
        ],
    );
    assert_eq!(g["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(g["redis"].as_str(), Some("redis://10.0.0.7:6379"));

    // Typed parse of the same command lines (no files at all).
    let cfg = DispatcherArgs::try_parse_from(["faas-dispatcher", "-m", "pull"])
        .expect("args")
        .into_config_from(&sources(empty.path(), &[]))
        .expect("config");
    assert_eq!((cfg.mode, cfg.port), (Mode::Pull, 5555));
}

#[test]
fn explicit_config_file_replaces_main_file_and_must_exist() {
    let dir = config_dir(&[
        ("dispatcher.toml", "name = \"main\"\nmax_retries = 1\n"),
        ("dispatcher.d/10.toml", "port = 6000\n"),
        ("other.toml", "name = \"other\"\n"),
    ]);
    let other = dir.path().join("other.toml");
    let d = check_config(
        "dispatcher",
        dir.path(),
        &[],
        &["--config", &other.to_string_lossy()],
    );
    assert_eq!(d["name"].as_str(), Some("other"));
    assert_eq!(d["max_retries"].as_integer(), Some(0)); // main file not read
    assert_eq!(d["port"].as_integer(), Some(6000)); // drop-ins still are
    let missing = dir.path().join("missing.toml");
    let stderr = check_config_fails(
        "dispatcher",
        dir.path(),
        &[],
        &["--config", &missing.to_string_lossy()],
    );
    assert!(
        stderr.contains("cannot read") && stderr.contains("missing.toml"),
        "{stderr}"
    );
}

#[test]
fn semantic_errors_name_the_key() {
    let dir = config_dir(&[
        ("dispatcher.toml", "heartbeat_interval_ms = 5\n"),
        ("worker.toml", "dispatcher = \"127.0.0.1:5555\"\n"),
        ("gateway.toml", "listen = \"nowhere\"\n"),
    ]);
    let stderr = check_config_fails("dispatcher", dir.path(), &[], &[]);
    assert!(
        stderr.contains("`heartbeat_interval_ms`: must be at least 10"),
        "{stderr}"
    );
    let stderr = check_config_fails("worker", dir.path(), &[], &[]);
    assert!(
        stderr.contains("`dispatcher`") && stderr.contains("tcp://"),
        "{stderr}"
    );
    let stderr = check_config_fails("gateway", dir.path(), &[], &[]);
    assert!(stderr.contains("`listen`"), "{stderr}");
    let stderr = check_config_fails(
        "gateway",
        dir.path(),
        &[],
        &["--listen", "127.0.0.1:1", "--redis", "http://x"],
    );
    assert!(stderr.contains("`redis`"), "{stderr}");
    let stderr = check_config_fails("dispatcher", dir.path(), &[], &["-w", "0"]);
    assert!(stderr.contains("`-w`"), "{stderr}");
}

#[test]
fn token_files_slot_caps_and_size_limits_are_checked() {
    let dir = config_dir(&[]);
    let token = dir.path().join("worker.token");
    std::fs::write(&token, "  a-token-of-enough-bytes\n").expect("token");
    let short = dir.path().join("short.token");
    std::fs::write(&short, "tiny\n").expect("token");
    let tok = token.to_str().expect("utf-8");
    for daemon in ["dispatcher", "worker"] {
        let fails =
            |env: &[(&str, &str)], args: &[&str]| check_config_fails(daemon, dir.path(), env, args);
        let stderr = fails(&[], &["--token-file", "relative.token"]);
        assert!(
            stderr.contains("`token_file`") && stderr.contains("absolute"),
            "{stderr}"
        );
        let missing = dir.path().join("missing");
        let stderr = fails(&[], &["--token-file", missing.to_str().expect("utf-8")]);
        assert!(
            stderr.contains("`token_file`") && stderr.contains("cannot read"),
            "{stderr}"
        );
        let stderr = fails(&[], &["--token-file", short.to_str().expect("utf-8")]);
        assert!(
            stderr.contains("16-4096 bytes") && !stderr.contains("tiny"),
            "{stderr}"
        );
        let var = format!("FAAS_{}_MAX_RESULT_BYTES", daemon.to_uppercase());
        let stderr = fails(&[(&var, "0")], &[]);
        assert!(stderr.contains("`max_result_bytes`"), "{stderr}");
        let stderr = fails(&[(&var, "600000000")], &[]);
        assert!(
            stderr.contains("`max_result_bytes`") && stderr.contains("512 MiB"),
            "{stderr}"
        );
        // Limits a frame of max_message_bytes could not carry.
        let msg = format!("FAAS_{}_MAX_MESSAGE_BYTES", daemon.to_uppercase());
        let stderr = fails(&[(&msg, "1000000"), (&var, "2000000")], &[]);
        assert!(stderr.contains("raise max_message_bytes"), "{stderr}");
        // A good token file passes, and the effective settings name it.
        let out = run(
            daemon,
            dir.path(),
            &[],
            &["--token-file", tok, "--check-config"],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(tok));
    }
    let stderr = check_config_fails(
        "dispatcher",
        dir.path(),
        &[("FAAS_DISPATCHER_MAX_WORKER_SLOTS", "0")],
        &[],
    );
    assert!(stderr.contains("`max_worker_slots`"), "{stderr}");
}

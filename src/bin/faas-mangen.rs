//! faas-mangen: writes the man pages into a directory (default `man/`), from their one source each:
//! faas-gateway(8), faas-dispatcher(8) and faas-worker(8) from the clap definitions in
//! `faas::cli`, faas.toml(5) from the commented config files in etc/faas/.
//!
//! Usage: `cargo run --quiet --bin faas-mangen -- [OUT_DIR]` (scripts/gen-man.sh wraps it).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_mangen::Man;
use faas::config::doc::{self, Doc};
use faas::config::{env, CONFIG_DIR_ENV, DEFAULT_CONFIG_DIR};
use roff::{bold, italic, roman, Inline, Roff};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const MANUAL: &str = "faas manual";

/// The shipped config files, embedded so the pages follow them exactly.
const FILES: [(&str, &str); 3] = [
    ("gateway", include_str!("../../etc/faas/gateway.toml")),
    ("dispatcher", include_str!("../../etc/faas/dispatcher.toml")),
    ("worker", include_str!("../../etc/faas/worker.toml")),
];

fn main() -> ExitCode {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "man".into()));
    match generate(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faas-mangen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut docs = Vec::new();
    for (name, text) in FILES {
        let parsed = doc::parse(text).map_err(|e| format!("etc/faas/{name}.toml: {e}"))?;
        docs.push((name, parsed));
    }
    let pages = [
        (
            "faas-gateway.8",
            daemon_page(faas::cli::GatewayArgs::command(), "gateway"),
        ),
        (
            "faas-dispatcher.8",
            daemon_page(faas::cli::DispatcherArgs::command(), "dispatcher"),
        ),
        (
            "faas-worker.8",
            daemon_page(faas::cli::WorkerArgs::command(), "worker"),
        ),
        ("faas.toml.5", Ok(config_page(&docs))),
    ];
    for (file, page) in pages {
        let path = out.join(file);
        std::fs::write(&path, page?).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Renders with roff's apostrophe preamble removed (the page starts with one already).
fn body(roff: &Roff) -> String {
    let preamble = Roff::new().render();
    let text = roff.render();
    text.strip_prefix(&preamble).unwrap_or(&text).to_string()
}

/// Strips the preamble from all but the first of clap_mangen's section renderings.
fn strip(buf: Vec<u8>) -> Result<String, String> {
    let text = String::from_utf8(buf).map_err(|e| e.to_string())?;
    let preamble = Roff::new().render();
    Ok(text.strip_prefix(&preamble).unwrap_or(&text).to_string())
}

fn daemon_page(cmd: clap::Command, daemon: &str) -> Result<String, String> {
    let after = cmd
        .get_after_long_help()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let man = Man::new(cmd)
        .section("8")
        .source(format!("faas {VERSION}"))
        .manual(MANUAL);
    let io = |e: std::io::Error| e.to_string();
    let mut page = Vec::new();
    man.render_title(&mut page).map_err(io)?;
    let mut text = String::from_utf8(page).map_err(|e| e.to_string())?;
    type Part = fn(&Man, &mut dyn std::io::Write) -> std::io::Result<()>;
    let parts: [Part; 4] = [
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ];
    for part in parts {
        let mut buf = Vec::new();
        part(&man, &mut buf).map_err(io)?;
        text.push_str(&strip(buf)?);
    }
    let mut roff = Roff::new();
    after_help_sections(&mut roff, &after);
    files_section(&mut roff, daemon);
    environment_section(&mut roff, daemon);
    see_also(&mut roff, &format!("faas-{daemon}"));
    text.push_str(&body(&roff));
    Ok(text)
}

/// `HEADING\n  text\n  text\n\nHEADING ...` (the after_long_help layout) as man sections.
fn after_help_sections(roff: &mut Roff, after: &str) {
    for line in after.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with(' ') {
            let text = line.trim();
            match text.split_once(": ") {
                Some((tag, rest)) if tag.starts_with("SIG") => {
                    roff.control("TP", []).text([bold(tag)]).text([roman(rest)]);
                }
                _ => {
                    roff.control("PP", []).text([roman(text)]);
                }
            }
        } else {
            roff.control("SH", [line.trim()]);
        }
    }
}

fn files_section(roff: &mut Roff, daemon: &str) {
    roff.control("SH", ["FILES"]);
    roff.control("TP", [])
        .text([bold(format!("{DEFAULT_CONFIG_DIR}/{daemon}.toml"))])
        .text([
            roman(format!(
            "Settings of faas-{daemon}; may be absent. Replaced by the file given with --config. \
             The shipped file lists every setting with its default value and a comment; see "
        )),
            bold("faas.toml"),
            roman("(5)."),
        ]);
    roff.control("TP", [])
        .text([bold(format!("{DEFAULT_CONFIG_DIR}/{daemon}.d/*.toml"))])
        .text([roman(
            "Drop-in files, read after the main file in lexical order of their names; each \
             needs only the settings it changes. Later files win, tables are merged key by key.",
        )]);
}

fn environment_section(roff: &mut Roff, daemon: &str) {
    let prefix = env::prefix(daemon);
    roff.control("SH", ["ENVIRONMENT"]);
    roff.control("TP", [])
        .text([bold(CONFIG_DIR_ENV)])
        .text([roman(format!(
            "Directory of the config files instead of {DEFAULT_CONFIG_DIR}."
        ))]);
    roff.control("TP", [])
        .text([bold(format!("{prefix}KEY"))])
        .text([
            roman(format!(
                "Sets setting KEY (upper case); nested keys are joined with two underscores, e.g. \
             {} or {}. Beats the files, loses to flags. Unknown keys are errors. See ",
                env::var_name(daemon, "log_level"),
                env::var_name(daemon, "executor.python"),
            )),
            bold("faas.toml"),
            roman("(5)."),
        ]);
    roff.control("TP", [])
        .text([bold("RUST_LOG")])
        .text([roman("Log filter; overrides the log_level setting.")]);
    if daemon != "gateway" {
        roff.control("TP", [])
            .text([bold("PYTHONPATH")])
            .text([roman(
                "Inherited by the executor processes, after the entries of executor.pythonpath.",
            )]);
    }
}

fn see_also(roff: &mut Roff, me: &str) {
    let mut refs: Vec<(&str, &str)> = vec![
        ("faas-gateway", "8"),
        ("faas-dispatcher", "8"),
        ("faas-worker", "8"),
        ("faas.toml", "5"),
        ("systemctl", "1"),
        ("journalctl", "1"),
    ];
    refs.retain(|(name, _)| *name != me);
    roff.control("SH", ["SEE ALSO"]);
    let mut inlines: Vec<Inline> = Vec::new();
    for (i, (name, section)) in refs.iter().enumerate() {
        let sep = if i + 1 < refs.len() { ", " } else { "" };
        inlines.push(bold(*name));
        inlines.push(roman(format!("({section}){sep}")));
    }
    roff.text(inlines);
}

fn config_page(docs: &[(&str, Doc)]) -> String {
    let mut roff = Roff::new();
    roff.control(
        "TH",
        ["FAAS.TOML", "5", "", &format!("faas {VERSION}"), MANUAL],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman("faas.toml - configuration files of the faas daemons")]);
    roff.control("SH", ["SYNOPSIS"]);
    for (name, _) in docs {
        roff.text([bold(format!("{DEFAULT_CONFIG_DIR}/{name}.toml"))]);
        roff.control("br", []);
        roff.text([
            bold(format!("{DEFAULT_CONFIG_DIR}/{name}.d/")),
            italic("*"),
            bold(".toml"),
        ]);
        roff.control("br", []);
    }
    roff.control("SH", ["DESCRIPTION"]);
    for para in DESCRIPTION {
        roff.control("PP", []).text([roman(*para)]);
    }
    for (name, parsed) in docs {
        settings_section(&mut roff, name, parsed);
    }
    roff.control("SH", ["EXAMPLES"]);
    roff.text([roman(
        "A drop-in that runs the push dispatcher with a virtualenv's interpreter, \
         /etc/faas/dispatcher.d/10-site.toml:",
    )]);
    roff.control("PP", [])
        .control("nf", [])
        .control("RS", ["4"]);
    for line in ["mode = \"push\"", "max_retries = 2", "", "[executor]"] {
        roff.text([roman(line)]);
    }
    roff.text([roman("python = \"/opt/faas/venv/bin/python\"")]);
    roff.control("RE", []).control("fi", []);
    roff.control("PP", []).text([roman(
        "The same from the environment, e.g. in a systemd drop-in (Environment=): \
         FAAS_DISPATCHER_MODE=push FAAS_DISPATCHER_MAX_RETRIES=2 \
         FAAS_DISPATCHER_EXECUTOR__PYTHON=/opt/faas/venv/bin/python. \
         Check the result with faas-dispatcher --check-config.",
    )]);
    see_also(&mut roff, "faas.toml");
    roff.render()
}

const DESCRIPTION: &[&str] = &[
    "Each faas daemon reads its settings from a TOML file named after it: gateway.toml, \
     dispatcher.toml or worker.toml. Every setting is optional; the shipped files list all of \
     them with their default values, so they change nothing until edited. Unknown keys and \
     values of the wrong type are errors that name the file, the line and the key.",
    "Settings are layered, lowest precedence first: built-in defaults; the main file \
     /etc/faas/NAME.toml (may be absent; --config FILE replaces it, and then FILE must exist); \
     the drop-ins /etc/faas/NAME.d/*.toml in lexical order of their names (names starting with a \
     dot are skipped); environment variables; command-line flags. Tables such as [executor] are \
     merged key by key, so a drop-in needs only the keys it changes. The directory /etc/faas can \
     be moved with the environment variable FAAS_CONFIG_DIR.",
    "Environment variables are named FAAS_ followed by the daemon (GATEWAY, DISPATCHER, WORKER), \
     an underscore and the key in upper case; nested keys are joined with two underscores: \
     FAAS_DISPATCHER_MAX_RETRIES=2, FAAS_WORKER_EXECUTOR__PYTHON=/usr/bin/python3. Values of \
     string settings are taken verbatim; other values are read as TOML (4, 1.5, true, \
     [\"a\", \"b\"]). Unknown variables under a daemon's prefix are errors.",
    "Run the daemon with --check-config to load and validate everything and print the \
     effective settings as TOML. A daemon whose configuration is invalid exits with status 78 \
     (EX_CONFIG), at start and with --check-config.",
];

/// One file's settings, with their comments as descriptions.
fn settings_section(roff: &mut Roff, name: &str, parsed: &Doc) {
    roff.control("SH", [format!("{}.TOML", name.to_uppercase()).as_str()]);
    for para in &parsed.intro {
        roff.control("PP", []).text([roman(para.as_str())]);
    }
    for entry in &parsed.entries {
        match &entry.key {
            None => {
                roff.control("SS", [format!("[{}]", entry.path()).as_str()]);
                for para in &entry.doc {
                    roff.control("PP", []).text([roman(para.as_str())]);
                }
            }
            Some(key) => {
                let head = if entry.unset {
                    vec![
                        bold(key.as_str()),
                        roman(" (unset; e.g. "),
                        roman(entry.value.as_str()),
                        roman(")"),
                    ]
                } else {
                    vec![
                        bold(key.as_str()),
                        roman(" = "),
                        roman(entry.value.as_str()),
                    ]
                };
                roff.control("TP", []).text(head);
                for (i, para) in entry.doc.iter().enumerate() {
                    if i > 0 {
                        roff.control("IP", []);
                    }
                    roff.text([roman(para.as_str())]);
                }
                roff.control("IP", []).text([
                    roman("Environment: "),
                    roman(env::var_name(name, &entry.path())),
                ]);
            }
        }
    }
}

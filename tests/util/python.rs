//! Test helpers that run the test Python interpreter (with dill) to make and inspect pickles.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;

/// The interpreter for tests: `$FAAS_TEST_PYTHON`, else `<crate>/.venv/bin/python`, else `python3`.
pub fn python() -> String {
    if let Some(p) = std::env::var_os("FAAS_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return p.to_string_lossy().into_owned();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv.to_string_lossy().into_owned();
    }
    "python3".into()
}

/// Runs `code` with `stdin` and returns stdout; panics with stderr if it fails.
pub fn run_python(code: &str, stdin: &[u8], extra_path: Option<&Path>) -> Vec<u8> {
    let mut cmd = Command::new(python());
    cmd.arg("-c")
        .arg(code)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = extra_path {
        cmd.env("PYTHONPATH", p);
    }
    let mut child = cmd.spawn().expect("spawn test python");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed ({}):\n--- code ---\n{code}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `setup` (Python statements) then prints base64 dill pickles of each of `exprs`
/// (with `recurse=True`, so functions carry the globals they use, as careful clients do).
pub fn pickles(setup: &str, exprs: &[&str], extra_path: Option<&Path>) -> Vec<Vec<u8>> {
    let mut code = String::from("import base64, dill, sys\n");
    code.push_str(setup);
    code.push('\n');
    for e in exprs {
        code.push_str(&format!(
            "print(base64.b64encode(dill.dumps({e}, recurse=True)).decode())\n"
        ));
    }
    let out = run_python(&code, b"", extra_path);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            base64::engine::general_purpose::STANDARD
                .decode(l.trim())
                .unwrap()
        })
        .collect()
}

/// Loads `pickle` with plain `dill.loads` as `v` and runs `assertions` (Python statements).
pub fn check(pickle: &[u8], assertions: &str) {
    let code = format!("import dill, sys\nv = dill.loads(sys.stdin.buffer.read())\n{assertions}\n");
    run_python(&code, pickle, None);
}

/// `dill.loads(pickle)` evaluated with `expr` (using `v`) and printed with `repr`.
pub fn eval(pickle: &[u8], expr: &str) -> String {
    let code =
        format!("import dill, sys\nv = dill.loads(sys.stdin.buffer.read())\nprint(repr({expr}))\n");
    String::from_utf8(run_python(&code, pickle, None))
        .unwrap()
        .trim()
        .to_owned()
}

/// A directory with `name.py` containing `source`, for functions pickled by reference.
pub fn module_dir(name: &str, source: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(format!("{name}.py")), source).unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

/// `dill.dumps(<expr>, recurse=True)`; `expr` may use `lambda`, `time`, `os`.
pub fn dill(expr: &str) -> Vec<u8> {
    pickles("import os, time", &[expr], None).remove(0)
}

/// `repr(dill.loads(pickle))`, or for exceptions `"<TypeName>: <str>"`.
pub fn describe(pickle: &[u8]) -> String {
    let code = "import dill, sys\n\
        o = dill.loads(sys.stdin.buffer.read())\n\
        print(f'{type(o).__name__}: {o}' if isinstance(o, BaseException) else repr(o))";
    String::from_utf8_lossy(&run_python(code, pickle, None))
        .trim_end()
        .to_string()
}

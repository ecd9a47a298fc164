//! Runs the test Python interpreter (with dill) to make and inspect pickles.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;

/// The interpreter with dill: `FAAS_TEST_PYTHON`, else `.venv/bin/python`, else `python3`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("FAAS_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs `code` with `input` on stdin and returns stdout; panics with stderr on failure.
pub fn run(code: &str, input: &str) -> String {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(code)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// `dill.dumps(eval(expr))` — `expr` may use `lambda`, `time`, `os`.
pub fn dill(expr: &str) -> Vec<u8> {
    let code = format!(
        "import dill, base64, os, sys, time\nprint(base64.b64encode(dill.dumps({expr})).decode())"
    );
    base64::engine::general_purpose::STANDARD
        .decode(run(&code, "").trim())
        .expect("base64 from python")
}

/// `repr(dill.loads(pickle))`, or for exceptions `"<TypeName>: <str>"`.
pub fn describe(pickle: &[u8]) -> String {
    let code = "import dill, base64, sys\n\
        o = dill.loads(base64.b64decode(sys.stdin.read()))\n\
        print(f'{type(o).__name__}: {o}' if isinstance(o, BaseException) else repr(o))";
    run(
        code,
        &base64::engine::general_purpose::STANDARD.encode(pickle),
    )
    .trim_end()
    .to_string()
}

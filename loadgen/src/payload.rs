//! The function and argument payloads: base64 dill pickles, read from files or generated once
//! per run by the executors' Python (a no-op function pickled by value, and `((), {})`).

use std::path::Path;
use std::process::Command;

use crate::error::Error;

/// Generates the built-in payloads: prints the function's pickle, then the arguments' pickle,
/// each base64 on one line.
const NOOP_SCRIPT: &str = "\
import base64, dill
def noop(*args, **kwargs):
    return None
print(base64.b64encode(dill.dumps(noop, recurse=True)).decode())
print(base64.b64encode(dill.dumps(((), {}))).decode())
";

/// Base64 text of the function to register and of the arguments every task carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payloads {
    pub function_b64: String,
    pub args_b64: String,
}

/// Reads the payload files given (base64 text, as `codecs.encode(dill.dumps(x), "base64")`
/// writes it) and generates the others with `python` (which must import dill).
pub fn load(
    python: &str,
    function_file: Option<&Path>,
    args_file: Option<&Path>,
) -> Result<Payloads, Error> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .map_err(|e| Error::Payload(format!("{}: {e}", p.display())))
    };
    let (generated_fn, generated_args) = if function_file.is_none() || args_file.is_none() {
        generate(python)?
    } else {
        (String::new(), String::new())
    };
    Ok(Payloads {
        function_b64: function_file.map(read).transpose()?.unwrap_or(generated_fn),
        args_b64: args_file.map(read).transpose()?.unwrap_or(generated_args),
    })
}

fn generate(python: &str) -> Result<(String, String), Error> {
    let out = Command::new(python)
        .args(["-c", NOOP_SCRIPT])
        .output()
        .map_err(|e| Error::Payload(format!("running {python}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Payload(format!(
            "{python} could not pickle the no-op function ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next()) {
        (Some(f), Some(a)) => Ok((f.to_owned(), a.to_owned())),
        _ => Err(Error::Payload(format!(
            "{python} printed no payloads: {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_win_and_are_trimmed() {
        let dir = std::env::temp_dir().join(format!("faas-loadgen-payload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (f, a) = (dir.join("f.b64"), dir.join("a.b64"));
        std::fs::write(&f, "Zm9v\nYmFy\n").unwrap();
        std::fs::write(&a, "YQ==\n").unwrap();
        // Both files given: python is never run (the name does not exist).
        let p = load("/nonexistent/python", Some(&f), Some(&a)).unwrap();
        assert_eq!(p.function_b64, "Zm9v\nYmFy");
        assert_eq!(p.args_b64, "YQ==");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_interpreter_is_named() {
        let e = load("/nonexistent/python", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/python"), "{e}");
    }
}

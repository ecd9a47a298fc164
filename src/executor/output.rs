//! Forwards an executor's stdout/stderr (users' `print()` output) to tracing, line by line:
//! stdout at debug level, stderr (warnings, tracebacks of the executor itself) at info.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Lines longer than this are split.
const MAX_LINE: usize = 8 * 1024;

/// Spawns a task that logs each line read from `stream` until end of stream.
pub fn forward<R: AsyncRead + Unpin + Send + 'static>(stream: R, pid: u32, name: &'static str) {
    tokio::spawn(async move {
        let mut stream = stream;
        let mut buf = vec![0u8; MAX_LINE];
        let mut line: Vec<u8> = Vec::new();
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                if b == b'\n' || line.len() >= MAX_LINE {
                    emit(pid, name, &line);
                    line.clear();
                }
                if b != b'\n' {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            emit(pid, name, &line);
        }
    });
}

fn emit(pid: u32, stream: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    if stream == "stderr" {
        tracing::info!(target: "faas::executor::output", pid, stream, "{text}");
    } else {
        tracing::debug!(target: "faas::executor::output", pid, stream, "{text}");
    }
}

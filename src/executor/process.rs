//! Spawns an executor process (zygote or reuse worker) and waits until it is warm.
//!
//! Between fork and exec (`pre_exec`, async-signal-safe syscalls only) the child clears
//! close-on-exec on its end of the control socket, asks for SIGKILL when its parent (thread)
//! dies, checks the parent did not die already, and (reuse mode) applies RLIMIT_AS. It is also
//! made leader of its own process group so a timeout can kill whatever it spawned.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so spawn only from async
//! tasks (tokio worker threads live as long as the runtime), never from `spawn_blocking`; the
//! executor also exits when its control socket reaches EOF, which covers every other case.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpid, getppid, Pid};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::classify::describe_exit;
use super::config::ExecutorConfig;
use super::frame;
use super::output;
use super::protocol::{parse_event, ControlEvent};
use super::script::{self, Mode, FD_ENV};
use super::ExecutorError;
use crate::runtime::Runtime;

/// A running, warm executor process.
#[derive(Debug)]
pub struct Executor {
    pub child: Child,
    pub pid: u32,
    /// Our end of the control socket.
    pub ctrl: UnixStream,
}

/// Starts an executor in `mode` and waits for its `ready` message.
pub async fn spawn(cfg: &ExecutorConfig, mode: Mode) -> Result<Executor, ExecutorError> {
    let (ours, theirs) = StdUnixStream::pair().map_err(|e| startup(format!("socketpair: {e}")))?;
    let theirs = fd_above_stdio(theirs.into())?;
    let child_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(&cfg.python);
    cmd.args(script::args(cfg, mode).map_err(|e| startup(e.to_string()))?)
        .env(FD_ENV, child_fd.to_string())
        .env(script::SOURCE_ENV, script::SCRIPT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(path) = cfg.python_path_env() {
        cmd.env("PYTHONPATH", path);
    }
    if let Some(dir) = &cfg.workdir {
        cmd.current_dir(dir);
    }
    let parent = getpid();
    let memory_limit = if mode == Mode::Reuse {
        cfg.memory_limit_bytes()
    } else {
        None
    };
    // SAFETY: the closure only makes async-signal-safe syscalls (fcntl, prctl, getppid,
    // setrlimit) and does not allocate.
    unsafe {
        cmd.pre_exec(move || prepare_child(child_fd, parent, memory_limit));
    }
    let mut child = cmd.spawn().map_err(|source| ExecutorError::Spawn {
        python: cfg.python.clone(),
        source,
    })?;
    drop(theirs);
    let pid = child
        .id()
        .ok_or_else(|| startup("executor exited immediately".into()))?;
    if let Some(out) = child.stdout.take() {
        output::forward(out, pid, "stdout");
    }
    if let Some(err) = child.stderr.take() {
        output::forward(err, pid, "stderr");
    }
    ours.set_nonblocking(true)
        .map_err(|e| startup(e.to_string()))?;
    let mut ctrl = UnixStream::from_std(ours).map_err(|e| startup(e.to_string()))?;
    match tokio::time::timeout(cfg.start_timeout(), handshake(&mut ctrl)).await {
        Ok(Ok(runtime)) => {
            tracing::debug!(pid, mode = mode.as_str(), python = %runtime.python, dill = %runtime.dill, "executor ready");
            record_runtime(&cfg.python, runtime);
            Ok(Executor { child, pid, ctrl })
        }
        Ok(Err(why)) => {
            let status = reap_after_failure(&mut child, pid).await;
            Err(startup(format!(
                "{} executor {why} ({status})",
                mode.as_str()
            )))
        }
        Err(_) => {
            let status = reap_after_failure(&mut child, pid).await;
            Err(startup(format!(
                "{} executor did not become ready within {:?} ({status})",
                mode.as_str(),
                cfg.start_timeout()
            )))
        }
    }
}

/// Runtime last reported by an executor of each interpreter (`executor.python`).
static RUNTIMES: Mutex<BTreeMap<String, Runtime>> = Mutex::new(BTreeMap::new());

fn record_runtime(python: &str, runtime: Runtime) {
    let mut m = RUNTIMES.lock().unwrap_or_else(|p| p.into_inner());
    m.insert(python.to_string(), runtime);
}

/// The Python and dill versions the executors of interpreter `python` reported when they last
/// started, if any did.
pub fn runtime_of(python: &str) -> Option<Runtime> {
    let m = RUNTIMES.lock().unwrap_or_else(|p| p.into_inner());
    m.get(python).cloned()
}

/// Kills an executor's whole process group with SIGKILL and reaps the executor.
pub async fn kill_and_reap(child: &mut Child, pid: u32) -> Option<ExitStatus> {
    kill_group(pid);
    child.wait().await.ok()
}

/// Sends SIGKILL to process group `pgid`; errors (e.g. already gone) are ignored.
pub fn kill_group(pgid: u32) {
    if let Ok(raw) = i32::try_from(pgid) {
        if raw > 1 {
            let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
}

fn startup(msg: String) -> ExecutorError {
    ExecutorError::Startup(msg)
}

async fn reap_after_failure(child: &mut Child, pid: u32) -> String {
    match kill_and_reap(child, pid).await {
        Some(status) => describe_exit(status),
        None => "exit status unknown".into(),
    }
}

async fn handshake(ctrl: &mut UnixStream) -> Result<Runtime, String> {
    let frame = match frame::read_frame(ctrl).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err("exited before becoming ready (see its stderr in the logs)".into()),
        Err(e) => return Err(format!("broke the protocol: {e}")),
    };
    match parse_event(&frame) {
        Ok(ControlEvent::Ready { python, dill, .. }) => Ok(Runtime { python, dill }),
        Ok(ControlEvent::Fatal { error }) => Err(format!("failed to start: {error}")),
        Ok(other) => Err(format!("sent {other:?} instead of ready")),
        Err(e) => Err(format!("broke the protocol: {e}")),
    }
}

/// Moves `fd` to a number >= 3 so the child's stdio setup cannot clobber it.
fn fd_above_stdio(fd: OwnedFd) -> Result<OwnedFd, ExecutorError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let raw = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(3))
        .map_err(|e| startup(format!("dup: {e}")))?;
    // SAFETY: fcntl just returned this new descriptor, which nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// Runs in the forked child before exec: only async-signal-safe calls, no allocation.
fn prepare_child(ctrl_fd: RawFd, parent: Pid, memory_limit: Option<u64>) -> io::Result<()> {
    // SAFETY: the fd was inherited across fork and stays open until exec.
    let fd = unsafe { BorrowedFd::borrow_raw(ctrl_fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if getppid() != parent {
        return Err(io::Error::from_raw_os_error(libc_esrch()));
    }
    if let Some(bytes) = memory_limit {
        setrlimit(Resource::RLIMIT_AS, bytes, bytes)?;
    }
    Ok(())
}

fn libc_esrch() -> i32 {
    nix::errno::Errno::ESRCH as i32
}

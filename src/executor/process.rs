//! Spawns an executor process (zygote or reuse worker) and waits until it is warm.
//!
//! The interpreter starts isolated (`python -I -c LOADER FD`, see [`script`]) with the
//! [`Sandbox`]'s environment in `/`; between fork and exec [`ChildSetup::apply`] clears
//! close-on-exec on its end of the control socket, asks for SIGKILL when its parent (thread)
//! dies, and confines the process (user, network namespace, capabilities, no core dumps). It is
//! also made leader of its own process group so a timeout can kill whatever it spawned. Then the
//! script and its options travel over the control socket, and the executor answers `ready`.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so spawn only from async
//! tasks (tokio worker threads live as long as the runtime), never from `spawn_blocking`; the
//! executor also exits when its control socket reaches EOF, which covers every other case.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpid, Pid};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::classify::describe_exit;
use super::frame;
use super::output;
use super::protocol::{parse_event, ControlEvent};
use super::sandbox::Sandbox;
use super::script::{self, Mode, Options};
use super::{ExecutorConfig, ExecutorError};
use crate::runtime::Runtime;

/// A running, warm executor process.
#[derive(Debug)]
pub struct Executor {
    pub child: Child,
    pub pid: u32,
    /// Our end of the control socket.
    pub ctrl: UnixStream,
    /// Its private working directory (reuse mode), to be removed by a replacement if it dies.
    pub workdir: Option<PathBuf>,
}

/// Starts executors: the pool's settings and its resolved sandbox.
#[derive(Debug)]
pub struct Launcher {
    pub cfg: ExecutorConfig,
    pub sandbox: Sandbox,
    /// Largest result payload kept (`max_result_bytes`); larger ones become `ResultTooLarge`.
    max_result: std::sync::atomic::AtomicUsize,
}

impl Launcher {
    /// Resolves the sandbox of `cfg` (logging once what cannot be enforced).
    pub fn new(cfg: ExecutorConfig) -> Result<Self, ExecutorError> {
        let sandbox = Sandbox::resolve(&cfg)?;
        tracing::info!(
            user = %sandbox.describe_user(),
            network = ?sandbox.network,
            workdir = %sandbox.workdir.display(),
            "executor sandbox"
        );
        Ok(Launcher {
            cfg,
            sandbox,
            max_result: super::frame::MAX_FRAME.into(),
        })
    }

    /// The largest result payload kept.
    pub fn max_result(&self) -> usize {
        self.max_result.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the largest result payload kept.
    pub fn set_max_result(&self, max: usize) {
        self.max_result
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts an executor in `mode` and waits for its `ready` message; `cleanup` lists private
    /// directories of lost executors for it to remove.
    pub async fn spawn(&self, mode: Mode, cleanup: &[PathBuf]) -> Result<Executor, ExecutorError> {
        let cfg = &self.cfg;
        let (ours, theirs) =
            StdUnixStream::pair().map_err(|e| startup(format!("socketpair: {e}")))?;
        let theirs = fd_above_stdio(theirs.into())?;
        let child_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&cfg.python);
        cmd.args(script::args(child_fd))
            .env_clear()
            .envs(&self.sandbox.env)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let setup = self.sandbox.child_setup(child_fd, getpid());
        // SAFETY: `apply` only makes async-signal-safe system calls and does not allocate.
        unsafe {
            cmd.pre_exec(move || setup.apply());
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
        let options = Options::new(
            cfg,
            mode,
            &self.sandbox.workdir,
            self.sandbox.process_limit,
            cleanup,
        );
        let start = async {
            let options = serde_json::to_vec(&options).map_err(|e| e.to_string())?;
            frame::write_frames(&mut ctrl, &[script::SCRIPT.as_bytes(), &options])
                .await
                .map_err(|e| format!("could not be sent its script: {e}"))?;
            handshake(&mut ctrl).await
        };
        match tokio::time::timeout(cfg.start_timeout(), start).await {
            Ok(Ok((runtime, workdir))) => {
                tracing::debug!(pid, mode = mode.as_str(), python = %runtime.python, dill = %runtime.dill, "executor ready");
                record_runtime(&cfg.python, runtime);
                Ok(Executor {
                    child,
                    pid,
                    ctrl,
                    workdir,
                })
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

/// How long [`kill_and_reap`] waits for a killed executor to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(10);

/// Kills an executor's whole process group with SIGKILL and reaps the executor (`None` if it
/// could not be reaped in time; tokio's orphan reaper then collects it later).
pub async fn kill_and_reap(child: &mut Child, pid: u32) -> Option<ExitStatus> {
    kill_group(pid);
    match tokio::time::timeout(REAP_WAIT, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::error!(pid, "killed executor was not reaped within {REAP_WAIT:?}");
            None
        }
    }
}

/// Sends SIGKILL to process group `pgid`; a group that is already gone is fine, anything else
/// (e.g. EPERM: an executor of another user without CAP_KILL) is logged.
pub fn kill_group(pgid: u32) {
    if let Ok(raw) = i32::try_from(pgid) {
        if raw > 1 {
            match killpg(Pid::from_raw(raw), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => tracing::error!(pgid, error = %e, "cannot kill executor process group"),
            }
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

/// Waits for `ready`: the Python and dill versions and (reuse mode) the private directory.
async fn handshake(ctrl: &mut UnixStream) -> Result<(Runtime, Option<PathBuf>), String> {
    let frame = match frame::read_frame(ctrl).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err("exited before becoming ready (see its stderr in the logs)".into()),
        Err(e) => return Err(format!("broke the protocol: {e}")),
    };
    match parse_event(&frame) {
        Ok(ControlEvent::Ready {
            python,
            dill,
            workdir,
            ..
        }) => Ok((Runtime { python, dill }, workdir.map(PathBuf::from))),
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

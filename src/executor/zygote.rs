//! Fork isolation: one warm zygote forks a child per task; this side hands over task sockets,
//! tracks children by sequence number, enforces timeouts and restarts a lost zygote on demand.
//!
//! Per task: create a socketpair, send `run{seq}` with one end attached (SCM_RIGHTS) on the
//! control socket, write the task on the other end and read the result from it. The zygote
//! reports `started{seq,pid}` and, after reaping, `exited{seq,status}`; a reader task routes
//! those events to the waiting task. A task is done as soon as its complete result has been read
//! (the child then only exits; its `exited` event is dropped), or else when the child was reaped.
//! The zygote is reaped by the reader task when it goes away.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use tokio::io::{AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::classify::{self, describe_exit, TaskEnd};
use super::frame;
use super::process::{self, kill_group, Launcher};
use super::protocol::{self, parse_event, ControlEvent};
use super::script::Mode;
use super::{ExecutorError, Outcome, TaskSpec};
use crate::pickle::PlatformError;

/// How long to wait for the result bytes after the child was reaped.
const RESULT_GRACE: Duration = Duration::from_secs(2);
/// How long shutdown waits for the zygote to exit after its control socket closed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What the reader task tells a waiting task about its child.
#[derive(Debug)]
enum ChildEvent {
    Started(i32),
    Exited(ExitStatus),
    SpawnFailed(String),
    Lost(String),
}

/// Waiting tasks by sequence number; `None` once the zygote is gone.
type Pending = StdMutex<Option<HashMap<u64, mpsc::UnboundedSender<ChildEvent>>>>;

/// One running zygote.
struct Zygote {
    pid: u32,
    writer: Mutex<Option<OwnedWriteHalf>>,
    pending: Arc<Pending>,
    reader: StdMutex<Option<JoinHandle<()>>>,
}

/// A task handed to the zygote: its events and our end of its task socket.
struct Submitted {
    zygote_pid: u32,
    seq: u64,
    events: mpsc::UnboundedReceiver<ChildEvent>,
    stream: UnixStream,
}

/// The fork-mode backend of the pool.
pub struct ForkBackend {
    launcher: Arc<Launcher>,
    /// One permit per child allowed at once; admitted tasks queue here (first come, first
    /// served), not bound to any child.
    running: Semaphore,
    zygote: Mutex<Option<Arc<Zygote>>>,
    next_seq: AtomicU64,
    closed: AtomicBool,
    restarts: AtomicU64,
}

impl ForkBackend {
    /// Starts the zygote, which will run at most `slots` children at once.
    pub async fn start(launcher: Arc<Launcher>, slots: usize) -> Result<Self, ExecutorError> {
        let zygote = Zygote::start(&launcher).await?;
        Ok(ForkBackend {
            launcher,
            running: Semaphore::new(slots),
            zygote: Mutex::new(Some(zygote)),
            next_seq: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
        })
    }

    /// Pid of the current zygote, if one is running.
    pub async fn pids(&self) -> Vec<u32> {
        let guard = self.zygote.lock().await;
        guard
            .iter()
            .filter(|z| z.is_alive())
            .map(|z| z.pid)
            .collect()
    }

    /// Zygotes started to replace a lost one.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Runs one task in a freshly forked child once fewer than `slots` run; `stop` completing
    /// first takes it out of the queue (it never runs) or kills its child (like a timeout).
    pub async fn run(
        &self,
        task: &TaskSpec,
        timeout: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Outcome {
        tokio::pin!(stop);
        let _running = tokio::select! {
            biased;
            permit = self.running.acquire() => match permit {
                Ok(permit) => permit,
                Err(_) => {
                    return classify::platform(PlatformError::WorkerFailure, "executor pool is shut down");
                }
            },
            () = &mut stop => {
                tracing::info!(task_id = %task.task_id, "run cancelled while queued; it never started");
                return classify::platform(
                    PlatformError::TaskCancelled,
                    "the run was cancelled before it started",
                );
            }
        };
        let mut attempts = 0;
        let submitted = loop {
            attempts += 1;
            match self.submit(&task.task_id).await {
                Ok(submitted) => break submitted,
                Err(e) if attempts < 2 && !self.is_closed() => {
                    tracing::warn!(task_id = %task.task_id, error = %e, "handing task to zygote failed, retrying");
                }
                Err(e) => {
                    let kind = PlatformError::WorkerFailure;
                    return classify::platform(kind, &format!("cannot run task: {e}"));
                }
            }
        };
        tracing::debug!(task_id = %task.task_id, seq = submitted.seq, zygote = submitted.zygote_pid, "task submitted");
        self.supervise(task, timeout, stop, submitted.events, submitted.stream)
            .await
            .outcome()
    }

    /// Closes the control socket (the zygote kills its children and exits) and reaps the zygote.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.running.close();
        let zygote = self.zygote.lock().await.take();
        if let Some(z) = zygote {
            z.stop().await;
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Returns the running zygote, starting a new one if it was lost.
    async fn current(&self) -> Result<Arc<Zygote>, ExecutorError> {
        let mut guard = self.zygote.lock().await;
        if self.is_closed() {
            return Err(ExecutorError::Unavailable(
                "executor pool is shut down".into(),
            ));
        }
        if let Some(z) = guard.as_ref().filter(|z| z.is_alive()) {
            return Ok(z.clone());
        }
        if let Some(old) = guard.take() {
            old.stop().await;
        }
        tracing::warn!("executor zygote was lost; starting a new one");
        let z = Zygote::start(&self.launcher).await?;
        self.restarts.fetch_add(1, Ordering::Relaxed);
        *guard = Some(z.clone());
        Ok(z)
    }

    async fn submit(&self, task_id: &str) -> Result<Submitted, ExecutorError> {
        let zygote = self.current().await?;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (ours, theirs) = StdUnixStream::pair().map_err(io_err)?;
        let events = zygote.register(seq)?;
        if let Err(e) = zygote.send_run(seq, task_id, &theirs).await {
            zygote.unregister(seq);
            return Err(e);
        }
        drop(theirs);
        ours.set_nonblocking(true).map_err(io_err)?;
        let ours = UnixStream::from_std(ours).map_err(io_err)?;
        Ok(Submitted {
            zygote_pid: zygote.pid,
            seq,
            events,
            stream: ours,
        })
    }

    /// Feeds the task to the child, collects its result and exit status, enforces the timeout.
    async fn supervise(
        &self,
        task: &TaskSpec,
        timeout: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
        mut events: mpsc::UnboundedReceiver<ChildEvent>,
        mut stream: UnixStream,
    ) -> TaskEnd {
        let mut end = TaskEnd::new("task process", self.launcher.cfg.memory_limit_mb);
        let (mut rd, mut wr) = stream.split();
        let io = async {
            let write = async {
                if let Err(e) = protocol::write_task(&mut wr, task).await {
                    tracing::debug!(task_id = %task.task_id, error = %e, "writing task to child failed");
                }
                let _ = wr.shutdown().await;
            };
            let (_, result) = tokio::join!(
                write,
                protocol::read_result(&mut rd, self.launcher.max_result())
            );
            result
        };
        tokio::pin!(io);
        let deadline = timeout.map(|t| Instant::now() + t);
        let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now));
        tokio::pin!(sleep);
        tokio::pin!(stop);
        let mut have_result = false;
        let mut pid: Option<i32> = None;
        loop {
            tokio::select! {
                result = &mut io, if !have_result => {
                    have_result = true;
                    let complete = matches!(result, Ok(Some(_)));
                    end.result = result;
                    if complete {
                        // The child only has `_exit(0)` left to do; the zygote reaps it (and
                        // kills its process group) without us waiting for that.
                        return end;
                    }
                }
                event = events.recv() => match event {
                    Some(ChildEvent::Started(p)) => {
                        pid = Some(p);
                        if end.timed_out.is_some() || end.stopped {
                            kill_group(p.unsigned_abs());
                        }
                    }
                    Some(ChildEvent::Exited(status)) => {
                        end.exit = Some(status);
                        break;
                    }
                    Some(ChildEvent::SpawnFailed(e)) => {
                        end.lost = Some(e);
                        return end;
                    }
                    Some(ChildEvent::Lost(why)) => {
                        end.lost = Some(why);
                        break;
                    }
                    None => {
                        end.lost = Some("zygote connection closed".into());
                        break;
                    }
                },
                () = &mut stop, if !end.stopped && !have_result => {
                    end.stopped = true;
                    tracing::info!(task_id = %task.task_id, ?pid, "run cancelled; killing its process group");
                    if let Some(p) = pid {
                        kill_group(p.unsigned_abs());
                    }
                }
                () = &mut sleep, if deadline.is_some() && end.timed_out.is_none() && !have_result => {
                    end.timed_out = timeout;
                    tracing::info!(task_id = %task.task_id, ?pid, "task timed out; killing its process group");
                    if let Some(p) = pid {
                        kill_group(p.unsigned_abs());
                    }
                }
            }
        }
        end.pool_closed = self.is_closed();
        if !have_result {
            match tokio::time::timeout(RESULT_GRACE, &mut io).await {
                Ok(result) => end.result = result,
                Err(_) => {
                    tracing::warn!(task_id = %task.task_id, "child exited but its task socket stayed open")
                }
            }
        }
        if let (Some(status), Ok(None)) = (end.exit, &end.result) {
            tracing::info!(task_id = %task.task_id, exit = %describe_exit(status), "task process ended without a result");
        }
        end
    }
}

impl Zygote {
    async fn start(launcher: &Launcher) -> Result<Arc<Zygote>, ExecutorError> {
        let exe = launcher.spawn(Mode::Zygote, &[]).await?;
        let (read, write) = exe.ctrl.into_split();
        let pending: Arc<Pending> = Arc::new(StdMutex::new(Some(HashMap::new())));
        let reader = tokio::spawn(read_events(read, exe.child, exe.pid, pending.clone()));
        tracing::info!(pid = exe.pid, "executor zygote started");
        Ok(Arc::new(Zygote {
            pid: exe.pid,
            writer: Mutex::new(Some(write)),
            pending,
            reader: StdMutex::new(Some(reader)),
        }))
    }

    fn is_alive(&self) -> bool {
        self.pending.lock().is_ok_and(|p| p.is_some())
    }

    fn register(&self, seq: u64) -> Result<mpsc::UnboundedReceiver<ChildEvent>, ExecutorError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut guard = self.pending.lock().map_err(|_| gone())?;
        guard.as_mut().ok_or_else(gone)?.insert(seq, tx);
        Ok(rx)
    }

    fn unregister(&self, seq: u64) {
        if let Ok(mut guard) = self.pending.lock() {
            if let Some(map) = guard.as_mut() {
                map.remove(&seq);
            }
        }
    }

    /// Sends `run{seq, task_id}` with `task_end` attached as SCM_RIGHTS.
    async fn send_run(
        &self,
        seq: u64,
        task_id: &str,
        task_end: &StdUnixStream,
    ) -> Result<(), ExecutorError> {
        let msg = frame::encode(&[&protocol::run_message(seq, task_id)]).map_err(io_err)?;
        let mut guard = self.writer.lock().await;
        let writer = guard.as_mut().ok_or_else(gone)?;
        let fds = [task_end.as_raw_fd()];
        let sent = loop {
            writer.as_ref().writable().await.map_err(io_err)?;
            let attempt = writer.as_ref().try_io(Interest::WRITABLE, || {
                let sock = writer.as_ref().as_raw_fd();
                let cmsg = [ControlMessage::ScmRights(&fds)];
                sendmsg::<()>(
                    sock,
                    &[IoSlice::new(&msg)],
                    &cmsg,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            });
            match attempt {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(io_err(e)),
            }
        };
        if sent < msg.len() {
            writer.write_all(&msg[sent..]).await.map_err(io_err)?;
        }
        Ok(())
    }

    /// Closes the control socket, waits for the zygote to exit (killing it if it does not).
    async fn stop(&self) {
        drop(self.writer.lock().await.take());
        let handle = self.reader.lock().ok().and_then(|mut h| h.take());
        let Some(mut handle) = handle else { return };
        if tokio::time::timeout(STOP_GRACE, &mut handle).await.is_err() {
            tracing::warn!(
                pid = self.pid,
                "zygote did not exit after its control socket closed; killing it"
            );
            kill_group(self.pid);
            let _ = handle.await;
        }
    }
}

/// Routes the zygote's events to waiting tasks; on EOF reaps the zygote and fails the rest.
async fn read_events(read: OwnedReadHalf, mut child: Child, pid: u32, pending: Arc<Pending>) {
    let mut read = BufReader::new(read);
    let why = loop {
        let frame = match frame::read_frame(&mut read).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break "its control socket closed".to_owned(),
            Err(e) => break format!("protocol error: {e}"),
        };
        let (seq, event) = match parse_event(&frame) {
            Ok(ControlEvent::Started { seq, pid }) => (seq, ChildEvent::Started(pid)),
            Ok(ControlEvent::Exited { seq, status, .. }) => {
                (seq, ChildEvent::Exited(ExitStatus::from_raw(status)))
            }
            Ok(ControlEvent::SpawnFailed { seq, error }) => (seq, ChildEvent::SpawnFailed(error)),
            Ok(other) => {
                tracing::warn!(pid, ?other, "unexpected message from zygote");
                continue;
            }
            Err(e) => break format!("protocol error: {e}"),
        };
        let finished = matches!(event, ChildEvent::Exited(_) | ChildEvent::SpawnFailed(_));
        if let Ok(mut guard) = pending.lock() {
            if let Some(map) = guard.as_mut() {
                let tx = if finished {
                    map.remove(&seq)
                } else {
                    map.get(&seq).cloned()
                };
                if let Some(tx) = tx {
                    let _ = tx.send(event);
                }
            }
        }
    };
    let waiting = pending
        .lock()
        .ok()
        .and_then(|mut g| g.take())
        .unwrap_or_default();
    // The zygote is exiting (EOF) or misbehaving (protocol error): make sure it goes away.
    let status = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        _ => process::kill_and_reap(&mut child, pid).await,
    };
    let exit = status.map_or_else(|| "exit status unknown".to_owned(), describe_exit);
    if waiting.is_empty() {
        tracing::info!(pid, exit = %exit, "executor zygote stopped");
    } else {
        tracing::warn!(pid, exit = %exit, tasks = waiting.len(), "executor zygote lost: {why}");
    }
    for tx in waiting.into_values() {
        let _ = tx.send(ChildEvent::Lost(format!("executor zygote {exit} ({why})")));
    }
}

fn gone() -> ExecutorError {
    ExecutorError::Unavailable("executor zygote is gone".into())
}

fn io_err(e: io::Error) -> ExecutorError {
    ExecutorError::Unavailable(format!("executor i/o error: {e}"))
}

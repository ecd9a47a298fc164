//! Redis connections that recover by themselves, used for every Redis call of every daemon.
//!
//! A [`Connector`] knows where Redis is ([`Endpoint`]: one server, or the primary that the
//! Sentinels name at the moment of connecting) and owns the daemon's [`Health`]. A [`Conn`] is one
//! logical connection on top of it: it implements the `redis` crate's `ConnectionLike`, so
//! commands and scripts are sent through it as through any connection, and it replaces its
//! underlying multiplexed connection whenever that breaks:
//!
//! - An I/O error, a timeout, or a reply meaning "wrong node" (`READONLY`, `UNBLOCKED`: a primary
//!   demoted by a failover) drops the connection. A dropped connection is replaced at once and
//!   the command sent once more: every faas command is idempotent (see docs/redis-schema.md), so
//!   a command whose reply was lost may run twice without harm. A connection killed with
//!   `CLIENT KILL` is thus invisible to callers.
//! - Connection attempts are spaced by [`Backoff`]: the first at once, then 100 ms, 200 ms, …
//!   up to [`MAX_BACKOFF`] (1 s) while they fail. Between attempts, calls fail at once with a
//!   "Redis unreachable" error instead of waiting (calls that arrive during an attempt wait for
//!   its outcome): the gateway answers 503 quickly, and a dispatcher that waits for Redis (see
//!   [`Conn::retry_in`]) tries again at most 1 s after Redis answers again. Once one connection
//!   finds Redis back, the others skip the rest of their back-off.
//! - Each attempt is bounded by [`CONNECT_TIMEOUT`]; each reply by the connection's response
//!   timeout (the blocking queue connection allows for its `BLOCK`). A call unanswered after
//!   [`PROBE_AFTER`] checks with a `PING` that its connection is still read: a request handed
//!   over just as Redis died could otherwise wait for the whole response timeout.
//! - Redis refuses a value above its `proto-max-bulk-len` with an error and closes the
//!   connection; which of the two the client sees first is a race. A command of at least
//!   [`REFUSABLE_BYTES`] that broke the connection twice, the second time a new one, is
//!   answered as refused ([`is_value_refused`]), not as an outage to wait out.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Client, Cmd, ErrorKind, RedisError, RedisFuture, Value};
use tokio::time::Instant;

use super::endpoint::Endpoint;
use super::health::Health;
use super::StoreError;

/// Longest wait for a connection (TCP, handshake, and with Sentinel the primary's lookup).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a reply on a shared connection.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before the second connection attempt of an outage; doubled up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a call waits for its answer before it checks that its connection is still read
/// (see [`probed`]).
pub const PROBE_AFTER: Duration = Duration::from_millis(250);
/// Smallest command Redis may refuse by the size of a value: `proto-max-bulk-len` cannot be set
/// below 1 MiB.
pub const REFUSABLE_BYTES: usize = 1 << 20;
/// What [`Conn`] answers when Redis closed the connection twice, on a new one too, while a
/// command of at least [`REFUSABLE_BYTES`] was sent: Redis refuses a value above its
/// `proto-max-bulk-len` by closing the connection, and whether its error reply or the broken
/// write is seen first is a race. Recognized by [`is_value_refused`].
const CLOSED_ON_VALUE: &str = "Redis closed the connection twice while this command was sent";

/// When the next connection attempt may start (pure; see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    delay: Duration,
    not_before: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: MIN_BACKOFF,
            not_before: None,
        }
    }
}

impl Backoff {
    /// How long an attempt must still wait at `now` (zero: it may start).
    pub fn wait(&self, now: Instant) -> Duration {
        self.not_before
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// An attempt starts at `now`: the next one waits the current delay, which doubles.
    pub fn attempt(&mut self, now: Instant) {
        self.not_before = Some(now + self.delay);
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
    }

    /// A command succeeded: the connection worked, so when it breaks it is replaced at once
    /// (the spacing is for attempts that fail), and the next outage starts with short delays.
    pub fn succeeded(&mut self) {
        self.delay = MIN_BACKOFF;
        self.not_before = None;
    }
}

/// What a failed call says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection is broken (I/O error, closed, timed out): drop it; the command may be sent
    /// again on a new one.
    Broken,
    /// Connected to a node that is no longer the primary: drop it and look the primary up again.
    WrongNode,
    /// Redis answered that it cannot serve now (loading its data, no primary): an outage.
    NotServing,
    /// Redis answered with an error about the command itself: the connection is fine.
    Answered,
}

/// Sorts an error of a call (pure).
pub fn classify(e: &RedisError) -> Failure {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        return Failure::Broken;
    }
    match e.kind() {
        ErrorKind::Server(redis::ServerErrorKind::ReadOnly) => Failure::WrongNode,
        ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
        | ErrorKind::Server(redis::ServerErrorKind::MasterDown)
        | ErrorKind::Server(redis::ServerErrorKind::TryAgain)
        // From a connection attempt: no Sentinel names a usable primary (a failover under way),
        // or Redis refuses our credentials (changed while we run): unusable until fixed.
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::NoValidReplicasFoundBySentinel
        | ErrorKind::AuthenticationFailed => Failure::NotServing,
        ErrorKind::Parse => Failure::Broken,
        _ if e.code() == Some("UNBLOCKED") => Failure::WrongNode,
        _ if matches!(e.code(), Some("NOAUTH" | "WRONGPASS")) => Failure::NotServing,
        _ => Failure::Answered,
    }
}

/// True when `e` means Redis could not be used at all (unreachable, restarting, failing over),
/// as opposed to an error in what was asked: a call failing so is worth retrying later.
pub fn is_unavailable(e: &StoreError) -> bool {
    match e {
        StoreError::Redis(e) => classify(e) != Failure::Answered,
        StoreError::Url { .. } | StoreError::Corrupt(_) | StoreError::NotReplicated { .. } => false,
    }
}

/// True when Redis refused a value because of its size (a bulk string above its
/// `proto-max-bulk-len`, or a string above the 512 MB limit): sending it again cannot work, so
/// the caller must store something else (e.g. `ResultTooLarge`) rather than retry.
pub fn is_value_refused(e: &StoreError) -> bool {
    let StoreError::Redis(e) = e else {
        return false;
    };
    if classify(e) != Failure::Answered {
        return false;
    }
    let text = e.to_string();
    [
        CLOSED_ON_VALUE,
        "invalid bulk length",
        "exceeds maximum allowed size",
        "query buffer",
    ]
    .iter()
    .any(|m| text.contains(m))
}

fn unreachable_now(reason: &str, wait: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!(
            "Redis unreachable ({reason}); next connection attempt in {} ms",
            wait.as_millis()
        ),
    ))
}

enum Target {
    Direct(Client),
    /// The lookup caches its connections to the Sentinels, hence the lock.
    Sentinel(tokio::sync::Mutex<SentinelLookup>),
}

/// The Sentinel client, built with the Sentinels in the order `first`, `first + 1`, …: the
/// lookup waits for the answers in that order, so after an attempt timed out (a Sentinel that
/// never answers) the next one starts with the next Sentinel.
struct SentinelLookup {
    client: SentinelClient,
    first: usize,
}

struct ConnectorInner {
    endpoint: Endpoint,
    target: Target,
    db: i64,
    health: Health,
}

/// Where Redis is and how it is doing; opens [`Conn`]s. Cheap to clone (shared).
#[derive(Clone)]
pub struct Connector {
    inner: Arc<ConnectorInner>,
}

impl Connector {
    /// Parses `url` (`redis://…` or `redis+sentinel://…`). No I/O.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let bad = |msg: String| StoreError::Url {
            url: super::endpoint::redact(url),
            source: RedisError::from((ErrorKind::InvalidClientConfig, "invalid URL", msg)),
        };
        let endpoint = Endpoint::parse(url).map_err(bad)?;
        let (target, db) = match &endpoint {
            Endpoint::Direct { url: u } => {
                let client = Client::open(u.as_str()).map_err(|e| bad(e.to_string()))?;
                let db = client.get_connection_info().redis_settings().db();
                (Target::Direct(client), db)
            }
            Endpoint::Sentinel(s) => {
                let client = s.client(0).map_err(|e| bad(e.to_string()))?;
                let lookup = SentinelLookup { client, first: 0 };
                (Target::Sentinel(tokio::sync::Mutex::new(lookup)), s.db)
            }
        };
        let health = Health::new(endpoint.to_string());
        Ok(Connector {
            inner: Arc::new(ConnectorInner {
                endpoint,
                target,
                db,
                health,
            }),
        })
    }

    /// Where Redis is (displays without passwords).
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The reachability shared by all connections of this connector.
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// A new logical connection named `role` (for logs) whose replies may take up to
    /// `response_timeout`.
    pub fn conn(&self, role: &'static str, response_timeout: Duration) -> Conn {
        Conn {
            slot: Arc::new(Slot {
                role,
                connector: self.clone(),
                response_timeout,
                state: Mutex::new(SlotState::default()),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A client for the current primary: the configured server, or the one the Sentinels name
    /// now (asked anew at every call). For connections of other kinds (pub/sub).
    pub async fn client(&self) -> Result<Client, RedisError> {
        match &self.inner.target {
            Target::Direct(c) => Ok(c.clone()),
            Target::Sentinel(s) => s.lock().await.client.async_get_client().await,
        }
    }

    /// Opens one multiplexed connection to the current primary.
    async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, RedisError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        let attempt = async {
            self.client()
                .await?
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => {
                if let (Target::Sentinel(s), Endpoint::Sentinel(ep)) =
                    (&self.inner.target, &self.inner.endpoint)
                {
                    let mut lookup = s.lock().await;
                    let first = (lookup.first + 1) % ep.sentinels.len().max(1);
                    if let Ok(client) = ep.client(first) {
                        *lookup = SentinelLookup { client, first };
                    }
                }
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                )))
            }
        }
    }
}

#[derive(Default)]
struct SlotState {
    /// The underlying connection and its serial number.
    current: Option<(u64, MultiplexedConnection)>,
    serial: u64,
    backoff: Backoff,
    /// [`Health::recoveries`] at the last attempt: when it moved on, the back-off is waived.
    recoveries: u64,
}

struct Slot {
    /// What the connection is for, in logs: "shared", "queue", "replicas".
    role: &'static str,
    connector: Connector,
    response_timeout: Duration,
    state: Mutex<SlotState>,
    /// Held during a connection attempt, so concurrent callers share one attempt.
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A logical Redis connection that replaces its underlying connection when it breaks (see the
/// module docs). Clones share the underlying connection.
#[derive(Clone)]
pub struct Conn {
    slot: Arc<Slot>,
}

impl Conn {
    /// The daemon's view of Redis' reachability.
    pub fn health(&self) -> &Health {
        self.slot.connector.health()
    }

    /// True while an underlying connection is open (false: the next call connects first).
    pub fn connected(&self) -> bool {
        self.slot.state().current.is_some()
    }

    /// Time until a call may try to connect again (zero when connected or allowed now): a
    /// caller that waits for Redis sleeps this long rather than spinning.
    pub fn retry_in(&self) -> Duration {
        let st = self.slot.state();
        if st.current.is_some() {
            Duration::ZERO
        } else {
            self.backoff_wait(&st)
        }
    }

    fn backoff_wait(&self, st: &SlotState) -> Duration {
        if st.recoveries != self.health().recoveries() {
            return Duration::ZERO; // another connection found Redis back meanwhile
        }
        st.backoff.wait(Instant::now())
    }

    /// The underlying connection: the current one, or a new one if allowed now.
    async fn get(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let slot = &self.slot;
        if let Some(c) = &slot.state().current {
            return Ok(c.clone());
        }
        // Waits for an attempt under way, then uses its connection or fails at once.
        let _attempt = slot.connecting.lock().await;
        {
            let mut st = slot.state();
            if let Some(c) = &st.current {
                return Ok(c.clone());
            }
            let wait = self.backoff_wait(&st);
            if !wait.is_zero() {
                let reason = self
                    .health()
                    .outage()
                    .map_or_else(|| "reconnecting".to_string(), |o| o.reason);
                return Err(unreachable_now(&reason, wait));
            }
            st.backoff.attempt(Instant::now());
            st.recoveries = self.health().recoveries();
        }
        tracing::debug!(connection = slot.role, "connecting to Redis");
        match slot.connector.connect(slot.response_timeout).await {
            Ok(c) => {
                self.health().reachable();
                let mut st = slot.state();
                st.serial += 1;
                let id = st.serial;
                st.current = Some((id, c.clone()));
                Ok((id, c))
            }
            Err(e) => {
                self.health().unreachable(&e.to_string());
                Err(e)
            }
        }
    }

    /// Forgets underlying connection `id` (if still current) after `e` broke it.
    fn drop_connection(&self, id: u64, e: &RedisError) {
        let mut st = self.slot.state();
        if st.current.as_ref().is_some_and(|(cur, _)| *cur == id) {
            st.current = None;
            let role = self.slot.role;
            if self.health().is_down() {
                tracing::debug!(connection = role, error = %e, "Redis connection lost");
            } else {
                tracing::info!(connection = role, error = %e, "Redis connection lost; reconnecting");
            }
        }
    }

    /// Runs `call` on one underlying connection (all of its commands on the same one, which
    /// `WAIT` needs) and handles its failure: a broken connection is replaced and `call` run
    /// once more, which is safe because every faas command is idempotent.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, RedisError>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.run_sized(|| 0, call).await
    }

    /// [`Conn::run`] for a command of `size()` bytes: when it broke the connection twice (the
    /// second time a new one) and is at least [`REFUSABLE_BYTES`] long, the answer is a refused
    /// value ([`is_value_refused`]), not an outage to wait out: sending it again cannot work.
    async fn run_sized<T, F, Fut>(
        &self,
        size: impl Fn() -> usize,
        mut call: F,
    ) -> Result<T, RedisError>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut again = true;
        loop {
            let (id, c) = self.get().await?;
            let err = match probed(call(c.clone()), c).await {
                Ok(v) => {
                    self.health().reachable();
                    self.slot.state().backoff.succeeded();
                    return Ok(v);
                }
                Err(e) => e,
            };
            match classify(&err) {
                Failure::Broken | Failure::WrongNode => {
                    self.drop_connection(id, &err);
                    // A timeout is not retried: the caller has waited long enough.
                    if again && !err.is_timeout() {
                        again = false;
                        continue;
                    }
                    let bytes = if !again && err.is_connection_dropped() {
                        size()
                    } else {
                        0
                    };
                    if bytes >= REFUSABLE_BYTES {
                        // Redis answered both connections: no outage, and the next call need
                        // not wait for the spacing of failed attempts.
                        self.health().reachable();
                        self.slot.state().backoff.succeeded();
                        return Err(RedisError::from((
                            ErrorKind::Client,
                            CLOSED_ON_VALUE,
                            format!(
                                "{bytes} bytes; a value above Redis's proto-max-bulk-len? ({err})"
                            ),
                        )));
                    }
                }
                Failure::NotServing => self.health().unreachable(&err.to_string()),
                Failure::Answered => self.health().reachable(),
            }
            return Err(err);
        }
    }
}

/// Awaits `call`, made on `c`. A request handed to the client library just as the connection's
/// reader ended (Redis died) can be neither sent nor failed until the response timeout; a call
/// still unanswered after [`PROBE_AFTER`] therefore sends a `PING` on the same connection, which
/// fails at once when nothing reads that connection's queue any more: the call then fails as
/// dropped too (and is sent again on a new connection). A slow but live call only gets one
/// `PING` queued behind it.
async fn probed<T>(
    call: impl Future<Output = Result<T, RedisError>>,
    mut c: MultiplexedConnection,
) -> Result<T, RedisError> {
    tokio::pin!(call);
    tokio::select! {
        r = &mut call => return r,
        _ = tokio::time::sleep(PROBE_AFTER) => {}
    }
    let dead = async move {
        match redis::cmd("PING").query_async::<Value>(&mut c).await {
            Err(e) if !e.is_timeout() && classify(&e) == Failure::Broken => e,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        r = &mut call => r,
        e = dead => Err(e),
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.run_sized(
            move || cmd_bytes(cmd),
            move |mut c| async move { c.send_packed_command(cmd).await },
        ))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.run_sized(
            move || pipeline.cmd_iter().map(cmd_bytes).sum(),
            move |mut c| async move { c.send_packed_commands(pipeline, offset, count).await },
        ))
    }

    fn get_db(&self) -> i64 {
        self.slot.connector.inner.db
    }
}

/// The bytes of `cmd`'s arguments.
fn cmd_bytes(cmd: &Cmd) -> usize {
    cmd.args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => b.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_is_immediate_then_doubles_to_the_cap_and_resets() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(
            b.wait(t0),
            Duration::ZERO,
            "the first attempt starts at once"
        );
        let mut waits = Vec::new();
        let mut now = t0;
        for _ in 0..7 {
            b.attempt(now);
            let w = b.wait(now);
            waits.push(w.as_millis());
            now += w;
            assert_eq!(b.wait(now), Duration::ZERO);
        }
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        // A connection that worked and then broke is replaced at once, however soon it broke
        // (Redis closes a connection that sent a value above its limit: no outage)...
        b.attempt(now);
        b.succeeded();
        assert_eq!(b.wait(now), Duration::ZERO);
        // ...and the waits of the next outage start short again.
        b.attempt(now + MS * 1000);
        assert_eq!(b.wait(now + MS * 1000), MS * 100);
    }

    #[test]
    fn errors_are_sorted_by_what_they_say_about_the_connection() {
        let io = |k| RedisError::from(std::io::Error::from(k));
        assert_eq!(
            classify(&io(std::io::ErrorKind::BrokenPipe)),
            Failure::Broken
        );
        assert_eq!(
            classify(&io(std::io::ErrorKind::ConnectionReset)),
            Failure::Broken
        );
        assert_eq!(classify(&io(std::io::ErrorKind::TimedOut)), Failure::Broken);
        let server = |kind| RedisError::from((ErrorKind::Server(kind), "x"));
        assert_eq!(
            classify(&server(redis::ServerErrorKind::ReadOnly)),
            Failure::WrongNode
        );
        assert_eq!(
            classify(&server(redis::ServerErrorKind::BusyLoading)),
            Failure::NotServing
        );
        assert_eq!(
            classify(&server(redis::ServerErrorKind::NoPerm)),
            Failure::Answered
        );
        assert_eq!(
            classify(&RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "x"
            ))),
            Failure::NotServing
        );
        assert_eq!(
            classify(&server(redis::ServerErrorKind::ResponseError)),
            Failure::Answered
        );
        assert!(is_unavailable(&StoreError::Redis(io(
            std::io::ErrorKind::NotConnected
        ))));
        assert!(!is_unavailable(&StoreError::Redis(server(
            redis::ServerErrorKind::NoPerm
        ))));
        assert!(!is_unavailable(&StoreError::Corrupt("x".into())));
    }

    #[test]
    fn size_refusals_are_told_apart() {
        let answered = |detail: &'static str| {
            StoreError::Redis(RedisError::from((
                ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                "Protocol error",
                detail.to_string(),
            )))
        };
        assert!(is_value_refused(&answered("invalid bulk length")));
        assert!(is_value_refused(&answered(
            "string exceeds maximum allowed size (proto-max-bulk-len)"
        )));
        assert!(!is_value_refused(&answered("unknown command")));
        // A dropped connection is an outage (waited out), not a refusal.
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!is_value_refused(&StoreError::Redis(io)));
        assert!(!is_value_refused(&StoreError::Corrupt(
            "invalid bulk length".into()
        )));
    }
}

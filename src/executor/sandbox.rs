//! The sandbox of executor processes: as whom they run, which environment and network they see.
//!
//! [`Sandbox::resolve`] runs once per pool: it looks up `executor.user`, checks what this daemon
//! may do (switch users, create a network namespace) and says once, at start-up, what it cannot
//! enforce. [`ChildSetup::apply`] runs in every executor between fork and exec and must stay
//! async-signal-safe (raw syscalls, no allocation): no core dumps, a network namespace with only
//! `lo`, the executor user (supplementary groups dropped), parent-death signal, no capabilities,
//! no new privileges. Switching users takes root or CAP_SETUID + CAP_SETGID, and CAP_KILL so that
//! the daemon can still kill executors that run as another user (timeouts, shutdown). The limits that differ per task are applied by the Python side (in fork
//! mode, in each forked child).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::libc;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::unistd::{getppid, Gid, Pid, Uid, User};

use super::{ExecutorConfig, ExecutorError};
use crate::config::Network;

/// Variables passed on from the daemon's environment (plus every `LC_*`); everything else,
/// such as `FAAS_*` settings with their Redis passwords, stays with the daemon.
pub const INHERITED_ENV: &[&str] = &["PATH", "LANG", "LANGUAGE", "TZ"];

/// `PATH` when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

const CAP_KILL: u32 = 5;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// The user executors run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Everything about executors' surroundings that is decided once per pool.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The user to switch to; `None` when executors keep the daemon's user.
    pub account: Option<Account>,
    pub network: Network,
    /// The complete environment of executor processes.
    pub env: BTreeMap<OsString, OsString>,
    /// Where private working directories are created.
    pub workdir: PathBuf,
    /// RLIMIT_NPROC for executors (0: not applied, see [`Sandbox::resolve`]).
    pub process_limit: u64,
}

impl Sandbox {
    /// Resolves the sandbox of `cfg` for this daemon, logging once what cannot be enforced.
    pub fn resolve(cfg: &ExecutorConfig) -> Result<Sandbox, ExecutorError> {
        Self::resolve_for(cfg, Uid::effective(), effective_capabilities())
    }

    /// [`resolve`](Self::resolve) for a daemon running as `euid` with the capability set `caps`.
    fn resolve_for(cfg: &ExecutorConfig, euid: Uid, caps: u64) -> Result<Sandbox, ExecutorError> {
        // CAP_KILL: executors of another user must still be killable (timeouts, shutdown).
        let can_switch = euid.is_root()
            || [CAP_SETUID, CAP_SETGID, CAP_KILL]
                .iter()
                .all(|&cap| has(caps, cap));
        let account = account(cfg, euid, can_switch)?;
        // CAP_SYS_ADMIN creates the namespace, CAP_NET_ADMIN brings its loopback up.
        if cfg.network == Network::None && !(has(caps, CAP_SYS_ADMIN) && has(caps, CAP_NET_ADMIN)) {
            return Err(ExecutorError::Config(format!(
                "executor.network = \"none\" needs CAP_SYS_ADMIN and CAP_NET_ADMIN to give \
                 executors a network namespace of their own, and this daemon (uid {euid}) lacks \
                 them: run it as root or grant them (see \"Security model\" in \
                 docs/operations.md)"
            )));
        }
        let workdir = cfg.workdir.clone().unwrap_or_else(std::env::temp_dir);
        let env = environment(cfg, account.as_ref(), &workdir, std::env::vars_os());
        let process_limit = if account.is_some() {
            cfg.process_limit
        } else {
            0
        };
        Ok(Sandbox {
            account,
            network: cfg.network,
            env,
            workdir,
            process_limit,
        })
    }

    /// The between-fork-and-exec set-up of one executor.
    pub fn child_setup(&self, ctrl_fd: RawFd, parent: Pid) -> ChildSetup {
        ChildSetup {
            ctrl_fd,
            parent,
            ids: self.account.as_ref().map(|a| (a.uid, a.gid)),
            new_netns: self.network == Network::None,
        }
    }

    /// "uid 998 (faas-exec)" or "the daemon's user", for logs.
    pub fn describe_user(&self) -> String {
        match &self.account {
            Some(a) => format!("{} (uid {})", a.name, a.uid),
            None => format!("the daemon's user (uid {})", Uid::effective()),
        }
    }
}

/// Looks up `executor.user`; `None` means "run as the daemon's user" (warned about).
fn account(
    cfg: &ExecutorConfig,
    euid: Uid,
    can_switch: bool,
) -> Result<Option<Account>, ExecutorError> {
    let consequences = "user code can signal this daemon and read its files, and \
                        executor.process_limit is not applied";
    if cfg.user.is_empty() {
        tracing::warn!(
            uid = euid.as_raw(),
            "executor.user is empty: executors run as this daemon's user; {consequences} \
             (use this in development only)"
        );
        return Ok(None);
    }
    let found = User::from_name(&cfg.user).map_err(|e| {
        ExecutorError::Config(format!("cannot look up executor.user {:?}: {e}", cfg.user))
    })?;
    match found {
        None if can_switch => Err(ExecutorError::Config(format!(
            "executor.user {:?} does not exist: create it (the faas package does, with \
             systemd-sysusers) or set executor.user = \"\" to run executors as this daemon's user",
            cfg.user
        ))),
        None => {
            tracing::warn!(
                user = %cfg.user,
                uid = euid.as_raw(),
                "executor.user does not exist and this daemon could not switch to it anyway: \
                 executors run as this daemon's user; {consequences}"
            );
            Ok(None)
        }
        Some(u) if u.uid.is_root() => Err(ExecutorError::Config(format!(
            "executor.user {:?} is root: user code must not run as root",
            cfg.user
        ))),
        Some(u) if u.uid == euid => {
            tracing::info!(user = %cfg.user, "this daemon already runs as executor.user");
            Ok(None)
        }
        Some(u) if can_switch => Ok(Some(Account {
            name: u.name,
            uid: u.uid,
            gid: u.gid,
        })),
        Some(_) => {
            tracing::warn!(
                user = %cfg.user,
                uid = euid.as_raw(),
                "this daemon cannot switch to executor.user (that needs root, or CAP_SETUID, \
                 CAP_SETGID and CAP_KILL): executors run as this daemon's user; {consequences}"
            );
            Ok(None)
        }
    }
}

/// The executors' environment: the allowlisted variables of `daemon_env`, then what faas sets,
/// then `executor.env`.
pub fn environment(
    cfg: &ExecutorConfig,
    account: Option<&Account>,
    workdir: &std::path::Path,
    daemon_env: impl IntoIterator<Item = (OsString, OsString)>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = daemon_env
        .into_iter()
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| INHERITED_ENV.contains(&k) || k.starts_with("LC_"))
        })
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    // Tasks get their own directory for both (set per task by the Python side).
    env.insert("HOME".into(), workdir.into());
    env.insert("TMPDIR".into(), workdir.into());
    if let Some(a) = account {
        env.insert("USER".into(), a.name.clone().into());
        env.insert("LOGNAME".into(), a.name.clone().into());
    }
    // Ignored by the executor itself (python -I); for Python subprocesses of user code.
    if let Some(path) = cfg.python_path_env() {
        env.insert("PYTHONPATH".into(), path);
    }
    for (k, v) in &cfg.env {
        env.insert(k.into(), v.into());
    }
    env
}

/// What [`ChildSetup::apply`] does in one executor process.
#[derive(Debug, Clone, Copy)]
pub struct ChildSetup {
    ctrl_fd: RawFd,
    parent: Pid,
    ids: Option<(Uid, Gid)>,
    new_netns: bool,
}

impl ChildSetup {
    /// Runs in the forked child before exec: async-signal-safe system calls only, no allocation.
    /// Any error aborts the spawn, so an executor never starts less confined than configured.
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY: the fd was inherited across fork and stays open until exec.
        let fd = unsafe { BorrowedFd::borrow_raw(self.ctrl_fd) };
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
        if self.new_netns {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            loopback_up()?;
        }
        if let Some((uid, gid)) = self.ids {
            let groups = [gid.as_raw()];
            // SAFETY: plain system calls on values owned by this frame.
            check(unsafe { libc::setgroups(1, groups.as_ptr()) })?;
            check(unsafe { libc::setresgid(gid.as_raw(), gid.as_raw(), gid.as_raw()) })?;
            check(unsafe { libc::setresuid(uid.as_raw(), uid.as_raw(), uid.as_raw()) })?;
        }
        // After the user switch, which clears the parent-death signal.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        if getppid() != self.parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // Capabilities of the daemon (e.g. ambient CAP_SETUID under systemd) never reach user
        // code. EINVAL: a kernel without ambient capabilities, so there are none to clear.
        // SAFETY: prctl with integer arguments.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::last_os_error());
        }
        if self.ids.is_some() {
            drop_all_capabilities()?;
        }
        nix::sys::prctl::set_no_new_privs()?;
        Ok(())
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Brings `lo` up in a fresh network namespace (it starts down).
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket/ioctl/close on a descriptor owned by this function; `req` lives on the stack.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags =
            (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as libc::c_short;
        let rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// Empties the permitted, effective and inheritable capability sets (capset(2), version 3).
fn drop_all_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let none = Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    };
    let data = [none; 2];
    // SAFETY: capset reads a header and two data structs that live on this stack frame.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// This process's effective capability set (from /proc/self/status; empty if unreadable).
pub fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_capabilities(&s, "CapEff:"))
        .unwrap_or(0)
}

fn parse_capabilities(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    u64::from_str_radix(line[field.len()..].trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_an_allowlist_plus_configured_variables() {
        let cfg = ExecutorConfig {
            env: [("HTTP_PROXY".to_string(), "http://proxy:3128".to_string())].into(),
            pythonpath: vec!["/opt/lib".into()],
            ..ExecutorConfig::default()
        };
        let daemon = [
            ("PATH", "/usr/bin"),
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "de_DE.UTF-8"),
            ("FAAS_DISPATCHER_REDIS", "redis://:secret@db:6379"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("HOME", "/var/lib/faas"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let account = Account {
            name: "faas-exec".into(),
            uid: Uid::from_raw(990),
            gid: Gid::from_raw(990),
        };
        let env = environment(&cfg, Some(&account), std::path::Path::new("/tmp"), daemon);
        let keys: Vec<&str> = env.keys().filter_map(|k| k.to_str()).collect();
        assert!(
            keys.starts_with(&["HOME", "HTTP_PROXY", "LANG", "LC_TIME", "LOGNAME", "PATH"]),
            "{keys:?}"
        );
        assert_eq!(env[&OsString::from("HOME")], "/tmp");
        assert_eq!(env[&OsString::from("USER")], "faas-exec");
        assert!(env[&OsString::from("PYTHONPATH")]
            .to_string_lossy()
            .starts_with("/opt/lib"));
        for secret in [
            "FAAS_DISPATCHER_REDIS",
            "NOTIFY_SOCKET",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(
                !env.contains_key(&OsString::from(secret)),
                "{secret} leaked"
            );
        }
        let no_path = environment(&cfg, None, std::path::Path::new("/w"), []);
        assert_eq!(no_path[&OsString::from("PATH")], DEFAULT_PATH);
        assert!(!no_path.contains_key(&OsString::from("USER")));
    }

    fn caps(list: &[u32]) -> u64 {
        list.iter().fold(0, |acc, &c| acc | (1 << c))
    }

    #[test]
    fn who_executors_run_as_depends_on_what_the_daemon_may_do() {
        let nobody = User::from_name("nobody").unwrap().expect("user nobody");
        let ordinary = Uid::from_raw(12345);
        let cfg = |user: &str| ExecutorConfig {
            user: user.into(),
            ..ExecutorConfig::default()
        };
        let all = caps(&[CAP_SETUID, CAP_SETGID, CAP_KILL]);
        // Switching: root, or the three capabilities (as the units grant them).
        for (euid, c) in [(Uid::from_raw(0), 0), (ordinary, all)] {
            let s = Sandbox::resolve_for(&cfg("nobody"), euid, c).unwrap();
            assert_eq!(s.account.as_ref().map(|a| a.uid), Some(nobody.uid));
            assert_eq!(s.process_limit, 1024);
        }
        // Not allowed to (CAP_KILL missing, or an ordinary user): the daemon's own user, warned
        // about, and no per-user process limit (it would count all the daemon user's processes).
        for c in [0, caps(&[CAP_SETUID, CAP_SETGID])] {
            let s = Sandbox::resolve_for(&cfg("nobody"), ordinary, c).unwrap();
            assert_eq!(s.account, None);
            assert_eq!(s.process_limit, 0);
            assert!(Sandbox::resolve_for(&cfg("no-such-user-xyz"), ordinary, c).is_ok());
        }
        // A daemon that could switch refuses a missing user, and root as the executor user.
        let err = Sandbox::resolve_for(&cfg("no-such-user-xyz"), ordinary, all).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(Sandbox::resolve_for(&cfg("root"), ordinary, all).is_err());
        // "" on purpose, and the daemon's own user: no switch.
        assert_eq!(
            Sandbox::resolve_for(&cfg(""), ordinary, all)
                .unwrap()
                .account,
            None
        );
        assert_eq!(
            Sandbox::resolve_for(&cfg("nobody"), nobody.uid, all)
                .unwrap()
                .account,
            None
        );
    }

    #[test]
    fn network_none_needs_both_network_capabilities() {
        let cfg = ExecutorConfig {
            user: String::new(),
            network: Network::None,
            ..ExecutorConfig::default()
        };
        let me = Uid::from_raw(12345);
        for c in [0, caps(&[CAP_SYS_ADMIN]), caps(&[CAP_NET_ADMIN])] {
            let err = Sandbox::resolve_for(&cfg, me, c).unwrap_err().to_string();
            assert!(err.contains("CAP_SYS_ADMIN and CAP_NET_ADMIN"), "{err}");
        }
        let s = Sandbox::resolve_for(&cfg, me, caps(&[CAP_SYS_ADMIN, CAP_NET_ADMIN])).unwrap();
        assert_eq!(s.network, Network::None);
    }

    #[test]
    fn capabilities_parse_from_proc_status() {
        let status = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t00000000000000c0\n";
        let caps = parse_capabilities(status, "CapEff:").unwrap();
        assert!(has(caps, CAP_SETUID) && has(caps, CAP_SETGID) && !has(caps, CAP_SYS_ADMIN));
        assert_eq!(parse_capabilities("Name:\tx\n", "CapEff:"), None);
    }
}

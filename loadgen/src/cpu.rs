//! CPU seconds per component, read from /proc: `utime + stime` of each matched process (all its
//! threads), plus `cutime + cstime` (children it has reaped) and the same totals of its living
//! descendants (executors are children of the dispatcher or worker).
//!
//! A component is named on the command line as `NAME=PID` or `NAME=TEXT`, where TEXT matches
//! every process whose command line (arguments joined by spaces) contains it; the generator and
//! its ancestors never match (their own arguments contain the pattern). Patterns are resolved at
//! both ends of a measurement window, so a process started inside the window (the dispatcher of
//! a drain) counts from its birth. A process that exits inside the window loses its time unless
//! a tracked parent reaped it; such pids are listed under `vanished`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::time::Instant;

use serde::Serialize;

use crate::error::Error;

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on every Linux ABI).
const TICKS_PER_S: f64 = 100.0;

/// The component name the generator's own process is reported under.
pub const SELF_NAME: &str = "loadgen";

/// How a component's processes are found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Pid(i32),
    Cmdline(String),
}

/// One named component (`--cpu NAME=PID|TEXT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub selector: Selector,
}

impl std::str::FromStr for Component {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (name, sel) = s
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| Error::Usage(format!("--cpu wants NAME=PID or NAME=TEXT, got {s:?}")))?;
        if name == SELF_NAME {
            return Err(Error::Usage(format!(
                "--cpu: {SELF_NAME} is the generator itself, always reported"
            )));
        }
        let selector = match sel.parse::<i32>() {
            Ok(pid) if pid > 0 => Selector::Pid(pid),
            _ => Selector::Cmdline(sel.to_owned()),
        };
        Ok(Component {
            name: name.to_owned(),
            selector,
        })
    }
}

/// The fields of /proc/<pid>/stat that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ppid: i32,
    /// utime + stime, in ticks.
    pub own: u64,
    /// cutime + cstime, in ticks.
    pub reaped: u64,
}

/// Parses the text of /proc/<pid>/stat (the command name may contain spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
    let ticks = |i: usize| num(i).map(|v| u64::try_from(v).unwrap_or(0));
    Some(Stat {
        ppid: i32::try_from(num(1)?).ok()?,
        own: ticks(11)? + ticks(12)?,
        reaped: ticks(13)? + ticks(14)?,
    })
}

fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Living children of `pid`, over all its threads.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(t.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Ticks of `pid`'s living descendants, each including what it reaped.
fn descendant_ticks(pid: i32, depth: u32) -> u64 {
    if depth > 64 {
        return 0;
    }
    children(pid)
        .into_iter()
        .map(|c| stat(c).map_or(0, |s| s.own + s.reaped) + descendant_ticks(c, depth + 1))
        .sum()
}

fn cmdline(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    Some(parts.join(" "))
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// This process and its ancestors: they must never match a pattern found in their own arguments.
fn self_and_ancestors() -> HashSet<i32> {
    let mut out = HashSet::new();
    let mut pid = std::process::id() as i32;
    while pid > 1 && out.insert(pid) {
        match stat(pid) {
            Some(s) => pid = s.ppid,
            None => break,
        }
    }
    out
}

/// The processes of a component: matches whose ancestors are not matches too (a descendant's
/// time is already counted with its ancestor's).
fn resolve(sel: &Selector, exclude: &HashSet<i32>) -> Vec<i32> {
    match sel {
        Selector::Pid(pid) => stat(*pid).map(|_| vec![*pid]).unwrap_or_default(),
        Selector::Cmdline(text) => {
            let hits: BTreeMap<i32, i32> = all_pids()
                .into_iter()
                .filter(|p| !exclude.contains(p))
                .filter(|p| cmdline(*p).is_some_and(|c| c.contains(text.as_str())))
                .filter_map(|p| stat(p).map(|s| (p, s.ppid)))
                .collect();
            hits.keys()
                .copied()
                .filter(|p| !has_ancestor_in(*p, &hits))
                .collect()
        }
    }
}

fn has_ancestor_in(pid: i32, set: &BTreeMap<i32, i32>) -> bool {
    let mut cur = set.get(&pid).copied();
    for _ in 0..64 {
        match cur {
            Some(p) if p > 1 => {
                if set.contains_key(&p) {
                    return true;
                }
                cur = stat(p).map(|s| s.ppid);
            }
            _ => return false,
        }
    }
    false
}

/// Ticks of one process: own, and reaped plus living descendants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Ticks {
    own: u64,
    children: u64,
}

/// CPU counters of every component at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: Instant,
    per: BTreeMap<String, BTreeMap<i32, Ticks>>,
}

/// Reads the counters of `components` and of the generator itself.
pub fn snapshot(components: &[Component]) -> Snapshot {
    let exclude = self_and_ancestors();
    let mut per = BTreeMap::new();
    for c in components {
        let entry: &mut BTreeMap<i32, Ticks> = per.entry(c.name.clone()).or_default();
        for pid in resolve(&c.selector, &exclude) {
            if let Some(s) = stat(pid) {
                entry.insert(
                    pid,
                    Ticks {
                        own: s.own,
                        children: s.reaped + descendant_ticks(pid, 0),
                    },
                );
            }
        }
    }
    let me = std::process::id() as i32;
    let mine = stat(me).map_or_else(Ticks::default, |s| Ticks {
        own: s.own,
        children: s.reaped,
    });
    per.insert(SELF_NAME.to_owned(), BTreeMap::from([(me, mine)]));
    Snapshot {
        at: Instant::now(),
        per,
    }
}

/// CPU seconds one component used in a window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComponentCpu {
    /// The processes' own threads.
    pub own_s: f64,
    /// Their descendants (reaped and living): executors, forked task processes.
    pub children_s: f64,
    pub total_s: f64,
    pub pids: Vec<i32>,
    /// Matched at the start but gone at the end: their time in the window is unknown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vanished: Vec<i32>,
}

/// CPU use in one measurement window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuReport {
    pub window_s: f64,
    pub components: BTreeMap<String, ComponentCpu>,
    /// Every component but the generator.
    pub server_s: f64,
    /// Cores the server kept busy on average (server_s / window_s).
    pub server_cores: f64,
    /// Cores the generator kept busy on average.
    pub loadgen_cores: f64,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The CPU used between two snapshots of the same components.
pub fn between(a: &Snapshot, b: &Snapshot) -> CpuReport {
    let window = b.at.saturating_duration_since(a.at).as_secs_f64();
    let mut components = BTreeMap::new();
    let names: BTreeSet<&String> = a.per.keys().chain(b.per.keys()).collect();
    for name in names {
        let empty = BTreeMap::new();
        let before = a.per.get(name).unwrap_or(&empty);
        let after = b.per.get(name).unwrap_or(&empty);
        let (mut own, mut children) = (0u64, 0u64);
        for (pid, t1) in after {
            // A process first seen at the end was born in the window: it counts from zero.
            let t0 = before.get(pid).copied().unwrap_or_default();
            own += t1.own.saturating_sub(t0.own);
            children += t1.children.saturating_sub(t0.children);
        }
        let s = |t: u64| round3(t as f64 / TICKS_PER_S);
        components.insert(
            name.clone(),
            ComponentCpu {
                own_s: s(own),
                children_s: s(children),
                total_s: s(own + children),
                pids: after.keys().copied().collect(),
                vanished: before
                    .keys()
                    .filter(|p| !after.contains_key(p))
                    .copied()
                    .collect(),
            },
        );
    }
    let server_s = round3(
        components
            .iter()
            .filter(|(n, _)| n.as_str() != SELF_NAME)
            .map(|(_, c)| c.total_s)
            .sum(),
    );
    let mine = components.get(SELF_NAME).map_or(0.0, |c| c.total_s);
    let per_window = |x: f64| {
        if window > 0.0 {
            round3(x / window)
        } else {
            0.0
        }
    };
    CpuReport {
        window_s: round3(window),
        server_s,
        server_cores: per_window(server_s),
        loadgen_cores: per_window(mine),
        components,
    }
}

/// The 1, 5 and 15 minute load averages (zeros when /proc/loadavg is unreadable).
pub fn loadavg() -> [f64; 3] {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name() {
        let text = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 2 3 4 150 25 10 5 20 0 1 0 99 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                ppid: 7,
                own: 175,
                reaped: 15
            })
        );
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat("1 (x) S 0 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn component_syntax() {
        let c: Component = "gateway=1234".parse().unwrap();
        assert_eq!(c.selector, Selector::Pid(1234));
        let c: Component = "dispatcher=--name test-1=2".parse().unwrap();
        assert_eq!(c.name, "dispatcher");
        assert_eq!(c.selector, Selector::Cmdline("--name test-1=2".into()));
        for bad in ["gateway", "=12", "x=", "loadgen=12"] {
            assert!(bad.parse::<Component>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_child_that_burns_cpu_is_counted_with_its_parent() {
        // sh (matched by a unique pattern) runs a busy child; the window sees the child's time.
        let tag = format!("faas-loadgen-cpu-test-{}", std::process::id());
        let script = format!(": {tag}; i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done");
        let mut child = std::process::Command::new("sh")
            .args(["-c", &format!("sh -c '{script}'; : {tag}")])
            .spawn()
            .unwrap();
        let comps = vec![Component {
            name: "busy".into(),
            selector: Selector::Cmdline(tag.clone()),
        }];
        let a = snapshot(&comps);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let b = snapshot(&comps);
        let _ = child.wait();
        let r = between(&a, &b);
        let busy = &r.components["busy"];
        assert_eq!(
            busy.pids,
            vec![child.id() as i32],
            "only the outer shell: {busy:?}"
        );
        assert!(busy.children_s > 0.1, "{r:?}");
        assert!(r.components.contains_key(SELF_NAME));
        assert!(r.server_s >= busy.total_s);
    }
}

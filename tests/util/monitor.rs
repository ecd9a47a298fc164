//! Redis's own order of commands: `MONITOR` (through `redis-cli`) on a test's redis-server, and
//! where in it each task was claimed and finished.

use std::collections::HashMap;
use std::process::{Child, Command};

use faas::store::{keys, scripts};
use uuid::Uuid;

use super::redis::RedisServer;

/// Every command Redis runs from [`Monitor::start`] on, written to a temporary file.
pub struct Monitor {
    child: Child,
    log: tempfile::NamedTempFile,
}

/// Where each task's claim and finish came among the script calls (the last call of each: a
/// call answered `NOSCRIPT` is made again once the script is loaded).
pub struct Transitions {
    pub claimed: HashMap<Uuid, usize>,
    pub finished: HashMap<Uuid, usize>,
    /// The whole log, for failure messages.
    pub text: String,
}

impl Monitor {
    /// Starts monitoring `r` (give it a moment to connect before the commands of interest).
    pub fn start(r: &RedisServer) -> Self {
        let log = tempfile::NamedTempFile::new().expect("temp file");
        let child = Command::new("redis-cli")
            .args(["-p", &r.port.to_string(), "monitor"])
            .stdout(log.reopen().expect("reopen"))
            .spawn()
            .expect("redis-cli monitor");
        Monitor { child, log }
    }

    /// Stops monitoring; the claims and finishes of `tasks` seen.
    pub fn transitions(mut self, tasks: &[Uuid]) -> Transitions {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(self.log.path()).expect("monitor log");
        let claims = [scripts::CLAIM.get_hash(), scripts::CLAIM_MANY.get_hash()];
        let finishes = [scripts::FINISH.get_hash(), scripts::FINISH_MANY.get_hash()];
        let (mut claimed, mut finished) = (HashMap::new(), HashMap::new());
        for (i, line) in text
            .lines()
            .filter(|l| l.contains("\"EVALSHA\""))
            .enumerate()
        {
            let sha = line.split('"').nth(3).unwrap_or_default();
            for t in tasks
                .iter()
                .filter(|t| line.contains(&format!("\"{}\"", keys::task(t))))
            {
                if claims.contains(&sha) {
                    claimed.insert(*t, i);
                } else if finishes.contains(&sha) {
                    finished.insert(*t, i);
                }
            }
        }
        Transitions {
            claimed,
            finished,
            text,
        }
    }
}

impl Transitions {
    /// Checks that each of `tasks` tasks, run one after another by one process, was claimed and
    /// finished, and that the next claim came before the last finish at every task boundary but
    /// the first one or two (they need a queue read: nothing is read ahead before a run ended).
    pub fn assert_claims_ahead_of_results(&self, tasks: usize) {
        assert_eq!(self.claimed.len(), tasks, "{}", self.text);
        assert_eq!(self.finished.len(), tasks, "{}", self.text);
        let ahead = self.claims_ahead_of_results();
        assert!(
            ahead + 3 >= tasks,
            "the next claim went ahead of the last result at only {ahead} of {} task boundaries",
            tasks - 1
        );
    }

    /// For tasks run one after another (one process) in the order they were claimed: at how
    /// many boundaries between two of them the next claim came before the last finish.
    pub fn claims_ahead_of_results(&self) -> usize {
        let mut order: Vec<(usize, Uuid)> = self.claimed.iter().map(|(t, i)| (*i, *t)).collect();
        order.sort();
        order
            .windows(2)
            .filter(|w| self.finished.get(&w[0].1).is_some_and(|f| w[1].0 < *f))
            .count()
    }
}

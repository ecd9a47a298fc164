//! Facts about the host a daemon runs on: its name and its CPU count.

/// The host name, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// `configured`, or the number of CPUs when it is 0 ("one per core").
pub fn processes_or_cpus(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_one_per_cpu() {
        assert_eq!(processes_or_cpus(3), 3);
        assert!(processes_or_cpus(0) >= 1);
        assert!(!hostname().is_empty());
    }
}

//! The open-files limit: a server holding thousands of sessions, and the benchmark opening
//! them, each need a descriptor per connection, far above the usual soft limit of 1024.

/// Raises this process's soft RLIMIT_NOFILE to its hard limit and returns the soft limit in
/// force afterwards (`u64::MAX` for unlimited).
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        let raised = rustix::process::Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return maximum;
        }
    }
    // `None` is RLIM_INFINITY.
    limit.current.unwrap_or(u64::MAX)
}

/// Descriptors a server needs for `max_sessions`: what a busy session may hold
/// ([`ferroftp_server::DESCRIPTORS_PER_SESSION`]), plus room for the listeners, the users
/// file, logs and the runtime.
pub fn needed_for_sessions(max_sessions: usize) -> u64 {
    (max_sessions as u64)
        .saturating_mul(ferroftp_server::DESCRIPTORS_PER_SESSION as u64)
        .saturating_add(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        assert!(raise_open_files_limit() >= before);
    }

    #[test]
    fn a_busy_session_needs_six_descriptors() {
        assert_eq!(needed_for_sessions(1000), 6064);
        assert_eq!(needed_for_sessions(usize::MAX), u64::MAX);
    }
}

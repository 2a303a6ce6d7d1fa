//! Permission checks: which right is missing to read a process, and how to get it.

/// The remedy for a permission failure on this machine.
pub fn remedy() -> String {
    "run mphang as the same user as the target or as root, or grant CAP_SYS_PTRACE (in Docker: --cap-add SYS_PTRACE); see docs/permissions.md".to_string()
}

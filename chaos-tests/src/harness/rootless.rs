//! Every fault without root: the harness runs itself again inside a user namespace with
//! its own network and mount namespaces (`unshare --user --map-root-user --net --mount`).
//! There an ordinary user is root over a private loopback interface, its iptables rules
//! and its own mounts, which is all the loopback path needs (cuts, loss, the link proxy's
//! nat rules, the small data filesystems); nothing outside the namespaces is touched, and
//! they vanish with the run. Needs `unshare` (Debian package util-linux) and a kernel that
//! lets users create user namespaces (most do; [`available`] says if not).

use std::process::Command;

use super::partition::{run_tool, tool_works};
use crate::error::ChaosError;

/// Set in the environment of a harness running inside its user namespace, so that it does
/// not try to enter one again.
pub const INSIDE: &str = "MERIDIAN_CHAOS_IN_USER_NAMESPACE";

/// True when this process runs as root (real root, or root of a user namespace).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True inside the user namespace [`command`] made.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Whether this user can create the namespaces, and if not, why.
pub fn available() -> Result<(), String> {
    tool_works(
        "unshare",
        &["--user", "--map-root-user", "--net", "--mount", "true"],
        "this kernel does not let users create user namespaces",
        "util-linux",
    )
}

/// `program args…` run inside fresh user, network and mount namespaces, with [`INSIDE`]
/// set.
pub fn command(program: &std::path::Path, args: &[String]) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--user", "--map-root-user", "--net", "--mount", "--"])
        .arg(program)
        .args(args)
        .env(INSIDE, "1");
    command
}

/// Sets up the namespace's network: a new network namespace starts with `lo` down.
pub fn bring_up_loopback() -> Result<(), ChaosError> {
    run_tool("ip", &["link", "set", "lo", "up"]).map(drop)
}

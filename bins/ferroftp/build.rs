//! Puts the git commit the binary is built from into `ferroftp --version`
//! (`FERROFTP_GIT_COMMIT`): `git rev-parse --short HEAD`, or "unknown" outside a git checkout
//! (a source tarball) or without git.
//!
//! Cargo reruns this script when HEAD moves: a commit, a checkout or a branch switch changes
//! HEAD itself (for a branch switch) or the ref it points to. Both are found through git, so
//! worktrees (where `.git` is a file naming the real directory, and refs live in the common
//! directory) work as well as plain checkouts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=FERROFTP_GIT_COMMIT={commit}");
    for path in watched_paths() {
        // A path that does not exist would make Cargo rerun the script (and relink the
        // binary) on every build: only existing ones are named.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// HEAD, the ref it points to (loose), and the packed refs, when in a git checkout.
fn watched_paths() -> Vec<PathBuf> {
    let Some(git_dir) = git(&["rev-parse", "--path-format=absolute", "--git-dir"]) else {
        return Vec::new();
    };
    let common_dir = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .unwrap_or_else(|| git_dir.clone());
    let (git_dir, common_dir) = (Path::new(&git_dir), Path::new(&common_dir));
    let mut paths = vec![git_dir.join("HEAD"), common_dir.join("packed-refs")];
    // A detached HEAD names no ref: HEAD itself changes on every checkout then.
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.push(common_dir.join(&reference));
        paths.push(git_dir.join(&reference));
    }
    paths
}

/// The trimmed standard output of `git ARGS`, if it ran and succeeded.
fn git(arguments: &[&str]) -> Option<String> {
    let output = Command::new("git").args(arguments).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

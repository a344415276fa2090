//! Helpers every integration-test binary shares: running the real `ferry`
//! executable and insisting that a command succeeds. Each test binary uses
//! only some of them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

pub fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, fails the test with its output unless it succeeds, returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

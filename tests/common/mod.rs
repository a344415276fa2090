//! Helpers every integration-test binary shares: running the real `ferry`
//! executable and insisting that a command succeeds. Each test binary uses
//! only some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The line the default image's sample job prints.
pub const SAMPLE_ANSWER: &str =
    "ferry-sample: pi=3.1412 top-words=[('the', 4), ('cluster', 2), ('spark', 2)]";

/// Fails the test unless `ferry submit` (its output `out`) succeeded and
/// printed the sample job's answer.
pub fn assert_sample_answer(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == SAMPLE_ANSWER),
        "submit: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

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

/// The command lines of every process this test is answerable for: those
/// in the hosts' network namespaces (their sshd sessions, curl, docker) and
/// this test's own descendants (ferry). Other processes of the machine (a CI
/// agent fetching its own presigned URLs, say) are not ferry's business.
pub fn hosts_command_lines(hosts_dir: &Path, n: usize) -> Vec<String> {
    let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let hosts: Vec<_> = (1..=n)
        .filter_map(|i| {
            let pid = std::fs::read_to_string(hosts_dir.join(format!("h{i}/sshd.pid"))).ok()?;
            netns(pid.trim())
        })
        .collect();
    assert_eq!(hosts.len(), n, "the hosts' sshd pids");
    let parent = |pid: &str| -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // the fields after the command name, which is in parentheses
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(1).map(str::to_string)
    };
    let me = std::process::id().to_string();
    let ours = |pid: &str| {
        netns(pid).is_some_and(|n| hosts.contains(&n)) || {
            let mut p = pid.to_string();
            (0..64).any(|_| match parent(&p) {
                Some(pp) if pp == me => true,
                Some(pp) if pp != "0" => {
                    p = pp;
                    false
                }
                _ => false,
            })
        }
    };
    let mut v = Vec::new();
    for d in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || !ours(&name) {
            continue;
        }
        if let Ok(c) = std::fs::read(d.path().join("cmdline")) {
            v.push(String::from_utf8_lossy(&c).replace('\0', " "));
        }
    }
    v
}

//! `ferry submit`: `spark-submit` from the image against the cluster's
//! masters, in a throwaway container on a master's host; the driver's output
//! streams to this terminal.

use crate::ssh::Script;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use super::cluster_access::{connect, host_options, load, target_of};
use crate::cli::{SshArgs, SubmitArgs};
use crate::cluster::hosts::{ClusterHost, LocalHost, SshHost};
use crate::cluster::launch;
use crate::cluster::plan::{HostPlan, Plan, Role};

pub fn run(a: SubmitArgs) -> Result<ExitCode> {
    let (cluster, job, args) =
        split_items(a.first.as_deref(), &a.rest, a.cluster.as_deref(), a.local)?;
    let loaded = load(cluster.as_deref(), a.image.as_deref(), a.local)?;
    let plan = &loaded.plan;
    let label = |l: &str| {
        loaded
            .facts
            .labels
            .get(l)
            .cloned()
            .with_context(|| format!("image `{}` has no `{l}` label", loaded.facts.reference))
    };
    let (job, content) = job_and_content(job, || label("ferry.sample-job"))?;
    let fleet = connect(plan, &a.ssh, a.local);
    // the driver runs on a master's host: it reaches masters and workers
    let on = plan
        .hosts
        .iter()
        .filter(|h| h.containers.iter().any(|c| c.role == Role::Master))
        .find_map(|h| fleet.ok(&h.name).map(|c| (h, c)));
    let Some((hp, conn)) = on else {
        let why = fleet
            .failures()
            .into_iter()
            .map(|(h, w)| format!("{h}: {w}"))
            .collect::<Vec<_>>()
            .join("; ");
        bail!(
            "no master's host of cluster `{}` can be reached: {why}",
            plan.cluster
        );
    };
    eprintln!("submitting `{job}` from {} to {}", hp.name, plan.master_url);
    // the driver's container is named, so that Ctrl-C can remove it: the
    // SSH session's end does not stop it on the host
    let driver = format!(
        "ferry-{}-driver-{}-{:x}",
        plan.cluster,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    remove_on_interrupt(plan, hp, &a.ssh, a.local, &driver)?;
    let code = launch::submit::run(
        plan,
        hp,
        conn,
        &driver,
        &label("ferry.spark.home")?,
        &label("ferry.spark.user")?,
        &job,
        content.as_deref(),
        &args,
        &mut std::io::stdout(),
    );
    if INTERRUPTED.load(Ordering::SeqCst) {
        // removing the driver ended the run: the handler says how it went
        // and exits; wait for it rather than report the driver's end
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_secs(120) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        return Ok(ExitCode::from(130));
    }
    let code = code?;
    Ok(if code == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: `{job}` failed (exit status {code}); its driver output is above");
        ExitCode::FAILURE
    })
}

/// The cluster file, the job and the job's arguments from the command
/// line: `CLUSTER [JOB [ARGS...]]`, or `[JOB [ARGS...]]` with --local or
/// --cluster. A `--` right after the job (the older form) is dropped.
fn split_items(
    first: Option<&str>,
    rest: &[String],
    cluster: Option<&Path>,
    local: bool,
) -> Result<(Option<PathBuf>, Option<String>, Vec<String>)> {
    let (cluster, job, mut args) = match (cluster, local, first) {
        (Some(c), _, job) => (
            Some(c.to_path_buf()),
            job.map(str::to_string),
            rest.to_vec(),
        ),
        (None, true, job) => (None, job.map(str::to_string), rest.to_vec()),
        (None, false, Some(c)) => (
            Some(PathBuf::from(c)),
            rest.first().cloned(),
            rest.iter().skip(1).cloned().collect(),
        ),
        (None, false, None) => {
            bail!(
                "name the cluster file: `ferry submit cluster.toml [job.py [ARGS...]]` (or --local)"
            )
        }
    };
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    Ok((cluster, job, args))
}

/// The most of a job file on this machine that is sent to the driver.
const MAX_JOB_BYTES: u64 = 64 << 20;

/// The job to run and, when it is a file on this machine, its content.
/// Only a job named on the command line is ever read here: one named by
/// the image's `ferry.sample-job` label is a path inside the image (a base
/// image's label could otherwise name any file of this machine, and have it
/// handed to the image's driver).
fn job_and_content(
    given: Option<String>,
    sample: impl FnOnce() -> Result<String>,
) -> Result<(String, Option<Vec<u8>>)> {
    let Some(job) = given else {
        return Ok((sample()?, None));
    };
    let local_job = Path::new(&job);
    if !local_job.is_file() {
        return Ok((job, None));
    }
    let mut content = Vec::new();
    std::fs::File::open(local_job)
        .and_then(|f| f.take(MAX_JOB_BYTES + 1).read_to_end(&mut content))
        .with_context(|| format!("reading `{job}`"))?;
    if content.len() as u64 > MAX_JOB_BYTES {
        bail!(
            "`{job}` is larger than {} MiB, the most `ferry submit` sends: put it in the image, or on storage the cluster reads",
            MAX_JOB_BYTES >> 20
        );
    }
    Ok((job, Some(content)))
}

/// Set by the Ctrl-C handler before it removes the driver.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// On Ctrl-C (or SIGTERM), removes the driver's container from its host
/// through a session of its own, then exits with 130 as a shell would.
fn remove_on_interrupt(
    plan: &Plan,
    hp: &HostPlan,
    ssh: &SshArgs,
    local: bool,
    driver: &str,
) -> Result<()> {
    let (plan, hp, ssh, driver) = (plan.clone(), hp.clone(), ssh.clone(), driver.to_string());
    ctrlc::set_handler(move || {
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("interrupted: removing the driver `{driver}` from {}", hp.name);
        let conn: Result<Box<dyn ClusterHost>, String> = if local {
            Ok(Box::new(LocalHost))
        } else {
            target_of(&plan, &hp, &ssh)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    SshHost::connect(&t, &host_options(&hp, &ssh))
                        .map(|c| Box::new(c) as Box<dyn ClusterHost>)
                        .map_err(|e| e.to_string())
                })
        };
        let removed = conn.and_then(|c| {
            c.run(
                "removing the driver",
                &Script::new(r#"docker rm -f -- "$1" >/dev/null"#).arg(&driver),
                &[],
            )
            .map_err(String::from)
        });
        if let Err(why) = removed {
            eprintln!(
                "error: {}: the driver `{driver}` may still run there (`docker rm -f {driver}`): {why}",
                hp.name
            );
        }
        std::process::exit(130);
    })
    .context("setting the Ctrl-C handler")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// `ferry submit ARGS` as the command line parses and splits it.
    fn split(args: &[&str]) -> (Option<String>, Option<String>, Vec<String>, SubmitArgs) {
        let cli = Cli::try_parse_from(["ferry", "submit"].iter().chain(args))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Submit(a) = cli.command else {
            panic!("not submit")
        };
        let (c, job, rest) =
            split_items(a.first.as_deref(), &a.rest, a.cluster.as_deref(), a.local).unwrap();
        (c.map(|c| c.display().to_string()), job, rest, a)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn what_follows_the_job_is_the_jobs_flags_too() {
        let (c, job, args, _) = split(&["c.toml", "job.py", "arg1", "--flag", "x", "-v"]);
        assert_eq!(c.as_deref(), Some("c.toml"));
        assert_eq!(job.as_deref(), Some("job.py"));
        assert_eq!(args, strings(&["arg1", "--flag", "x", "-v"]));
        // a job's flag right after the job, even one ferry has too
        let (_, job, args, a) = split(&["c.toml", "job.py", "--local", "--image", "x"]);
        assert_eq!(job.as_deref(), Some("job.py"));
        assert_eq!(args, strings(&["--local", "--image", "x"]));
        assert!(!a.local && a.image.is_none());
    }

    #[test]
    fn a_double_dash_still_works() {
        for line in [
            &["c.toml", "job.py", "--", "100", "--n"][..],
            &["c.toml", "--", "job.py", "100", "--n"],
        ] {
            let (c, job, args, _) = split(line);
            assert_eq!(c.as_deref(), Some("c.toml"), "{line:?}");
            assert_eq!(job.as_deref(), Some("job.py"), "{line:?}");
            assert_eq!(args, strings(&["100", "--n"]), "{line:?}");
        }
        let (c, job, args, a) = split(&["--local", "job.py", "--", "--n", "1"]);
        assert!(a.local && c.is_none());
        assert_eq!(job.as_deref(), Some("job.py"));
        assert_eq!(args, strings(&["--n", "1"]));
    }

    #[test]
    fn ferrys_flags_go_before_the_job() {
        let (c, job, args, a) = split(&[
            "--identity",
            "k",
            "c.toml",
            "--image",
            "out/spark",
            "--known-hosts",
            "kh",
            "job.py",
            "1",
        ]);
        assert_eq!(c.as_deref(), Some("c.toml"));
        assert_eq!(job.as_deref(), Some("job.py"));
        assert_eq!(args, strings(&["1"]));
        assert_eq!(a.image.as_deref(), Some(Path::new("out/spark")));
        assert_eq!(a.ssh.identity.as_deref(), Some(Path::new("k")));
        assert_eq!(a.ssh.known_hosts.as_deref(), Some(Path::new("kh")));
        // with --local or --cluster the first item is the job
        let (c, job, args, _) = split(&["--cluster", "c.toml", "job.py", "a", "-b"]);
        assert_eq!(c.as_deref(), Some("c.toml"));
        assert_eq!(job.as_deref(), Some("job.py"));
        assert_eq!(args, strings(&["a", "-b"]));
        for (line, want) in [
            (&["--local", "job.py", "a", "-b"][..], &["a", "-b"][..]),
            (&["--local", "job.py", "--n", "1"], &["--n", "1"]),
        ] {
            let (c, job, args, _) = split(line);
            assert_eq!((c, job.as_deref()), (None, Some("job.py")), "{line:?}");
            assert_eq!(args, strings(want), "{line:?}");
        }
        // no job: the image's sample job
        let (c, job, args, _) = split(&["c.toml"]);
        assert_eq!((c.as_deref(), job, args.len()), (Some("c.toml"), None, 0));
    }

    #[test]
    fn a_sample_job_from_a_label_is_never_read_here() {
        // a base image's label naming a file of the operator's machine
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("id_ed25519");
        std::fs::write(&secret, b"PRIVATE KEY").unwrap();
        let named = secret.display().to_string();
        let (job, content) = job_and_content(None, || Ok(named.clone())).unwrap();
        assert_eq!(job, named);
        assert!(
            content.is_none(),
            "the label's path was read on this machine"
        );
        // a job named on the command line is read and sent
        let (_, content) = job_and_content(Some(named.clone()), || unreachable!()).unwrap();
        assert_eq!(content.as_deref(), Some(&b"PRIVATE KEY"[..]));
    }

    #[test]
    fn a_local_job_past_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.py");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_JOB_BYTES + 1).unwrap();
        let Err(e) = job_and_content(Some(big.display().to_string()), || unreachable!()) else {
            panic!("a job past the cap was read")
        };
        let e = e.to_string();
        assert!(e.contains("big.py") && e.contains("64 MiB"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        f.set_len(MAX_JOB_BYTES).unwrap();
        let (_, content) =
            job_and_content(Some(big.display().to_string()), || unreachable!()).unwrap();
        assert_eq!(content.map(|c| c.len() as u64), Some(MAX_JOB_BYTES));
    }

    #[test]
    fn no_cluster_file_is_refused() {
        let e = split_items(None, &[], None, false).unwrap_err().to_string();
        assert!(e.contains("name the cluster file"), "{e}");
    }
}

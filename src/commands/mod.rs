//! One file per subcommand: glue between the parsed arguments, the library
//! modules and the terminal. No core logic lives here.

mod build;
mod cluster_access;
mod down;
mod drill;
mod gc;
mod inspect;
mod lock;
mod logs;
mod plan;
mod pull;
mod push;
mod scale;
mod shared;
mod status;
mod submit;
mod up;
mod vendor;
mod verify;

use std::process::ExitCode;

use crate::cli::Command;

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Lock(a) => lock::run(a),
        Command::Build(a) => build::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Vendor(a) => vendor::run(a),
        Command::Push(a) => push::run(a),
        Command::Pull(a) => pull::run(a),
        Command::Gc(a) => gc::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Up(a) => up::run(a),
        Command::Submit(a) => submit::run(a),
        Command::Down(a) => down::run(a),
        Command::Status(a) => status::run(a),
        Command::Logs(a) => logs::run(a),
        Command::Scale(a) => scale::run(a),
        Command::Drill(crate::cli::DrillCommand::Failover(a)) => drill::failover(a),
    }
}

/// The definition given, or the built-in default image written into the cache.
pub fn definition_or_default(
    given: Option<std::path::PathBuf>,
    cache: &crate::cache::Cache,
    term: &Term,
) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    match given {
        Some(p) => Ok(p),
        None => {
            let p = crate::image::default_image::materialize(&cache.root).with_context(|| {
                format!(
                    "writing the built-in definition into `{}`",
                    cache.root.display()
                )
            })?;
            term.line(&format!(
                "using the built-in default image (images/spark, copied to `{}`)",
                p.display()
            ));
            Ok(p)
        }
    }
}

/// The definition (given or built in) and its lock, which must exist.
pub fn definition_and_lock(
    given: Option<std::path::PathBuf>,
    cache: &crate::cache::Cache,
    term: &Term,
) -> anyhow::Result<(crate::image::spec::Definition, crate::image::lock::Lock)> {
    let def = crate::image::spec::Definition::load(&definition_or_default(given, cache, term)?)?;
    let lp = crate::image::lock::lock_path(&def.path);
    let lock = crate::image::lock::Lock::read(&lp)?.ok_or_else(|| {
        crate::image::lock::LockError::Missing {
            path: lp.clone(),
            def: def.path.clone(),
        }
    })?;
    Ok((def, lock))
}

/// Human sizes for progress lines and tables.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Progress lines on stderr, one per event; quiet when `quiet`.
pub struct Term {
    pub start: std::time::Instant,
    pub quiet: bool,
    pub last_download: std::sync::Mutex<(String, std::time::Instant)>,
}

impl Term {
    pub fn new(quiet: bool) -> Term {
        Term {
            start: std::time::Instant::now(),
            quiet,
            last_download: std::sync::Mutex::new((String::new(), std::time::Instant::now())),
        }
    }
    pub fn line(&self, s: &str) {
        if !self.quiet {
            eprintln!("{:>6.1}s  {s}", self.start.elapsed().as_secs_f64());
        }
    }
    pub fn download(&self, what: &str, done: u64, total: Option<u64>) {
        if self.quiet {
            return;
        }
        let mut last = self.last_download.lock().expect("progress lock");
        let finished = total == Some(done);
        if last.0 == what && last.1.elapsed().as_millis() < 1000 && !finished {
            return;
        }
        *last = (what.to_string(), std::time::Instant::now());
        let pct = total
            .filter(|t| *t > 0)
            .map(|t| format!(" {:>3}%", done * 100 / t))
            .unwrap_or_default();
        self.line(&format!("fetch {what}: {}{pct}", human(done)));
    }
}

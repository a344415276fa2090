//! ferry: reproducible OCI images for Spark clusters.
//!
//! `main` only parses arguments, runs the command and turns an error into one
//! line on stderr and an exit code.

mod build;
mod cache;
mod cli;
mod clock;
mod cluster;
mod commands;
mod debian;
mod deliver;
mod digest;
mod fsutil;
mod grammar;
mod image;
mod inputs;
mod layer;
mod objstore;
mod oci;
mod pypi;
mod sources;
mod ssh;

use std::process::ExitCode;

use clap::Parser;

/// The status a shell gives a command that SIGPIPE ended (128 + 13).
const BROKEN_PIPE_STATUS: i32 = 141;

/// `ferry inspect ... | head`: when the reader of stdout goes away, `print!`
/// panics (Rust ignores SIGPIPE, and forbidding `unsafe` rules out restoring
/// it). End quietly instead, as a command killed by SIGPIPE would.
fn quiet_on_broken_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_STATUS);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_broken_stdout();
    let cli = cli::Cli::parse();
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            let mut msg = format!("error: {err}");
            for cause in err.chain().skip(1) {
                let cause = cause.to_string();
                if !msg.contains(&cause) {
                    msg.push_str(": ");
                    msg.push_str(&cause);
                }
            }
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}

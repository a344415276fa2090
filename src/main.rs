//! ferry: reproducible OCI images for Spark clusters.
//!
//! `main` only parses arguments, runs the command and turns an error into one
//! line on stderr and an exit code.

mod apt;
mod build;
mod cache_gc;
mod check;
mod cli;
mod clock;
mod cluster;
mod commands;
mod default_image;
mod fetch;
mod fsutil;
mod inputs;
mod layer;
mod lock;
mod objstore;
mod oci;
mod push;
mod spec;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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

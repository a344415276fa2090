//! `ferry verify`: every digest, size, diff_id and media type of a layout.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::VerifyArgs;
use crate::oci;

pub fn run(a: VerifyArgs) -> Result<ExitCode> {
    match oci::verify(&a.layout, &|_, _| {}) {
        Ok(img) => {
            println!(
                "ok: `{}`: manifest {}, config {}, {} layers verified",
                a.layout.display(),
                img.manifest.digest,
                img.config.digest,
                img.layers.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

//! The one error type of `build`: each fault of a definition, a lock or a
//! base image with its facts in fields, the errors of the parts it calls
//! (passed through unchanged), and a context line over any of them, as the
//! message chain shows it. It prints nothing.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("owner `{owner}`: no user `{user}` is declared (add a `[[layer.user]]`)")]
    NoUser { owner: String, user: String },
    #[error("owner `{owner}`: no group `{group}` is declared")]
    NoGroup { owner: String, group: String },
    #[error("the lock has no entry for {what}: run `ferry lock {}`", definition.display())]
    NotLocked { what: String, definition: PathBuf },
    #[error("the lock has no entry for {what}")]
    NoEntry { what: String },
    #[error(
        "the lock has no closure for nix `{items}` in layer `{layer}`: run `ferry lock {}`",
        definition.display()
    )]
    NoClosure {
        items: String,
        layer: String,
        definition: PathBuf,
    },
    #[error("a layer with a `nix` source is cut into store path layers before assembly")]
    NixInAssembly,
    #[error(
        "`{file}` is not what the lock says: it holds {found_name} {found_version} instead of {name} {version}"
    )]
    WrongPackage {
        file: String,
        found_name: String,
        found_version: String,
        name: String,
        version: String,
    },
    #[error("{}: layer `{layer}`: mode pattern `{pattern}` matches nothing in the layer", definition.display())]
    ModeMatchesNothing {
        definition: PathBuf,
        layer: String,
        pattern: String,
    },
    #[error("base layer `{}`: digest mismatch (the manifest says {expected} of {expected_size} bytes, found {found} of {size})", blob.display())]
    BaseDigest {
        blob: PathBuf,
        expected: String,
        expected_size: u64,
        found: String,
        size: u64,
    },
    #[error("base config lacks diff_id {index}")]
    NoDiffId { index: usize },
    /// An entry of a base image or layer ferry refuses; `what` names the file.
    #[error("{what}: entry `{name}`: {reason}")]
    BaseEntry {
        what: String,
        name: String,
        reason: String,
    },
    #[error("base image `{}`: manifest.json has no Config", archive.display())]
    NoConfig { archive: PathBuf },
    #[error("base image `{}`: manifest.json `{field}` names `{name}`, which is not a regular member of the archive (names must be relative, without `..`)", archive.display())]
    BadMember {
        archive: PathBuf,
        field: String,
        name: String,
    },
    /// The first thing the image checks find missing; `more` sums up the rest.
    #[error("{}: image check: `{file}` needs {what}, which is not in the image{more}: add the package that has it, exclude the file, or list it in `check.ignore`", definition.display())]
    ImageCheck {
        definition: PathBuf,
        file: String,
        what: String,
        more: String,
    },
    #[error("layer writer panicked")]
    WriterPanicked,
    /// A line of context over the error below it.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<BuildError>,
    },
    #[error(transparent)]
    Input(#[from] crate::inputs::InputError),
    #[error(transparent)]
    Nix(#[from] crate::inputs::nix::NixError),
    #[error(transparent)]
    Fetch(#[from] crate::cache::FetchError),
    #[error(transparent)]
    Source(#[from] crate::sources::SourceError),
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
    #[error(transparent)]
    Lock(#[from] crate::image::lock::LockError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// `with_context` as anyhow has it: a line over the error, kept in the chain.
pub trait Context<T> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<BuildError>> Context<T> for std::result::Result<T, E> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| BuildError::Context {
            what: what(),
            source: Box::new(e.into()),
        })
    }
}

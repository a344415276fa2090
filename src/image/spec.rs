//! The image definition (`images/<name>/image.toml`): its schema and the
//! checks that make a bad definition a one-line error naming the file, the
//! key and the line. It knows nothing of downloads or layers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::clock;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub name: String,
    pub tag: String,
    #[serde(default)]
    pub created: Option<Created>,
    #[serde(default)]
    pub compression: Compression,
    /// The image's CPU architecture as OCI names it (default `amd64`).
    pub architecture: Option<String>,
    #[serde(default)]
    pub base: Base,
    /// Where `deb` sources come from; needed when any source has `deb`.
    pub debian: Option<DebianSpec>,
    #[serde(default)]
    pub config: ImageConfig,
    #[serde(default)]
    pub check: Checks,
    #[serde(default, rename = "layer")]
    pub layers: Vec<LayerSpec>,
}

/// `[debian]`: the Debian suites, components and architecture the
/// definition's packages are resolved in. The mirror serving them is the
/// build machine's configuration, never part of the definition or the lock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSpec {
    /// In order of preference among equal versions: `["bookworm", "bookworm-updates", "bookworm-security"]`.
    pub suites: Vec<String>,
    /// Default `["main"]`.
    #[serde(default)]
    pub components: Vec<String>,
    /// Default: the image's architecture.
    pub architecture: Option<String>,
    /// An OpenPGP keyring (binary or armored) relative to the definition;
    /// default the `debian-archive-keyring` package's.
    pub keyring: Option<String>,
}

/// `created` as an RFC 3339 UTC time (`2024-01-01T00:00:00Z`) or seconds since the epoch.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Created {
    Epoch(u64),
    Text(String),
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Base {
    #[default]
    Scratch,
    Named(String),
    Table(BaseTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseTable {
    pub oci: Option<String>,
    pub docker_archive: Option<String>,
    pub registry: Option<String>,
}

/// The base image after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseImage {
    Scratch,
    OciLayout(PathBuf),
    DockerArchive(PathBuf),
}

/// Build-time checks over the finished image.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Every ELF file's shared libraries must resolve inside the image.
    #[serde(default)]
    pub elf: bool,
    /// Every jar's manifest Class-Path entry must exist in the image.
    #[serde(default)]
    pub jar_class_path: bool,
    /// Globs of files not to check.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// More folders where libraries count as found, as LD_LIBRARY_PATH
    /// would make them (e.g. the JDK's `lib/server`, whose libjvm.so the
    /// `java` launcher loads before any library that needs it).
    #[serde(default)]
    pub library_path: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub exposed_ports: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    pub name: String,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceSpec>,
    #[serde(default, rename = "file")]
    pub files: Vec<FileItem>,
    #[serde(default, rename = "symlink")]
    pub symlinks: Vec<SymlinkItem>,
    #[serde(default, rename = "dir")]
    pub dirs: Vec<DirItem>,
    #[serde(default, rename = "mode")]
    pub modes: Vec<ModeItem>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserItem>,
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupItem>,
}

/// One input of a layer. Exactly one of `url`, `path`, `deb`, `pypi`, `nix` is set.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A name to refer to this source by (`ferry lock --update NAME`); defaults to the file name.
    pub name: Option<String>,
    pub url: Option<String>,
    pub sha256: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub deb: Vec<String>,
    #[serde(default)]
    pub pypi: Vec<String>,
    /// Only the part of the archive under this folder is taken, with the folder removed.
    pub strip_prefix: Option<String>,
    /// Where the content lands in the image (default `/`).
    pub dest: Option<String>,
    /// Unpack archives (default true); when false the file is placed at `dest` as is.
    pub unpack: Option<bool>,
    /// Glob patterns (paths in the image) to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// For `path` sources: the mode of every regular file (octal string, e.g. "0755").
    pub mode: Option<String>,
    /// For `pypi`: the folder wheels are installed into.
    pub site_packages: Option<String>,
    /// For `pypi`: where console scripts go (default `/usr/local/bin`).
    pub bin_dir: Option<String>,
    /// For `pypi`: the interpreter named in console scripts (default `/usr/bin/python3`).
    pub python: Option<String>,
    /// For `pypi`: the image's Python version, e.g. "3.11".
    pub python_version: Option<String>,
    /// For `pypi`: the image's platform tags, e.g. ["manylinux2014_x86_64"].
    #[serde(default)]
    pub platform: Vec<String>,
    /// For `deb`: the architecture (default amd64).
    pub arch: Option<String>,
    /// For `deb`: also take every dependency (resolved by `ferry lock`), less
    /// what earlier sources and layers already have.
    #[serde(default)]
    pub closure: bool,
    /// For `deb` with `closure`: packages never to take (e.g. unneeded `Depends`).
    #[serde(default)]
    pub exclude_packages: Vec<String>,
    /// Nix store paths (or installables already built, such as a `.drv` or a
    /// flake output) whose closures go into the image, one layer per store path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nix: Vec<String>,
    /// For `nix`: the most image layers the closure may take (default
    /// [`DEFAULT_NIX_MAX_LAYERS`]); the least popular paths share the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_layers: Option<usize>,
}

/// The layer budget of a `nix` source: well under the 127 layers overlayfs
/// stacks, leaving room for a base image and the definition's other layers.
pub const DEFAULT_NIX_MAX_LAYERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Url,
    Path,
    Deb,
    Pypi,
    Nix,
}

impl SourceSpec {
    pub fn kind(&self) -> SourceKind {
        if self.url.is_some() {
            SourceKind::Url
        } else if self.path.is_some() {
            SourceKind::Path
        } else if !self.deb.is_empty() {
            SourceKind::Deb
        } else if !self.nix.is_empty() {
            SourceKind::Nix
        } else {
            SourceKind::Pypi
        }
    }

    /// The name `ferry lock --update` and messages use for this source.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match self.kind() {
            SourceKind::Url => url_file_name(self.url.as_deref().unwrap_or_default()),
            SourceKind::Path => self.path.clone().unwrap_or_default(),
            SourceKind::Deb => self.deb.join(","),
            SourceKind::Pypi => self.pypi.join(","),
            SourceKind::Nix => self.nix.join(","),
        }
    }
}

pub fn url_file_name(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    no_query.rsplit('/').next().unwrap_or(no_query).to_string()
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileItem {
    pub path: String,
    pub content: String,
    pub mode: Option<String>,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkItem {
    pub path: String,
    pub target: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirItem {
    pub path: String,
    pub mode: Option<String>,
    pub owner: Option<String>,
}

/// Owner and mode overrides for every path matching `pattern` (`*` within a
/// path segment, `**` across segments).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModeItem {
    pub pattern: String,
    pub mode: Option<String>,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserItem {
    pub name: String,
    pub uid: u32,
    pub gid: Option<u32>,
    pub home: Option<String>,
    pub shell: Option<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupItem {
    pub name: String,
    pub gid: u32,
}

/// A parsed, checked definition together with where it was read from.
#[derive(Debug, Clone)]
pub struct Definition {
    pub path: PathBuf,
    /// The folder relative `path` sources and base files are resolved against.
    pub dir: PathBuf,
    pub spec: ImageSpec,
    pub base: BaseImage,
    pub created: u64,
}

impl Definition {
    pub fn load(path: &Path) -> Result<Definition, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Definition, SpecError> {
        let spec: ImageSpec = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            SpecError::Parse {
                path: path.to_path_buf(),
                line,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let invalid = |message: String| SpecError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let base = match &spec.base {
            Base::Scratch => BaseImage::Scratch,
            Base::Named(s) if s == "scratch" || s.is_empty() => BaseImage::Scratch,
            Base::Named(s) => {
                return Err(invalid(format!(
                    "`base = \"{s}\"`: write `base = \"scratch\"`, `base = {{ oci = \"path\" }}`, `base = {{ docker_archive = \"file.tar\" }}` or `base = {{ registry = \"name@sha256:...\" }}`"
                )));
            }
            Base::Table(t) => match (&t.oci, &t.docker_archive, &t.registry) {
                (Some(p), None, None) => BaseImage::OciLayout(dir.join(p)),
                (None, Some(p), None) => BaseImage::DockerArchive(dir.join(p)),
                (None, None, Some(r)) => {
                    let pinned = r.contains("@sha256:");
                    return Err(invalid(format!(
                        "`base.registry = \"{r}\"`: pulling a base from a registry is not supported yet{}; run `docker pull` and `docker save -o base.tar` and use `base = {{ docker_archive = \"base.tar\" }}`",
                        if pinned {
                            ""
                        } else {
                            " (and a registry base must be pinned by digest, `name@sha256:...`)"
                        }
                    )));
                }
                _ => {
                    return Err(invalid(
                        "`base` takes exactly one of `oci`, `docker_archive`, `registry`".into(),
                    ));
                }
            },
        };
        let created = match &spec.created {
            None => match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(v) if !v.trim().is_empty() => v.trim().parse::<u64>().map_err(|_| {
                    invalid(format!(
                        "SOURCE_DATE_EPOCH=`{v}` is not a whole number of seconds"
                    ))
                })?,
                _ => 0,
            },
            Some(Created::Epoch(n)) => *n,
            Some(Created::Text(t)) => clock::parse_rfc3339(t).ok_or_else(|| {
                invalid(format!(
                    "`created = \"{t}\"` is not an RFC 3339 UTC time like `2024-01-01T00:00:00Z`"
                ))
            })?,
        };
        let def = Definition {
            path: path.to_path_buf(),
            dir,
            spec,
            base,
            created,
        };
        def.check().map_err(|f| invalid(f.to_string()))?;
        Ok(def)
    }

    fn check(&self) -> Result<(), Fault> {
        let at_ = |at: &str, fault: Fault| Fault::At {
            at: at.to_string(),
            fault: Box::new(fault),
        };
        let s = &self.spec;
        if s.name.is_empty() || !s.name.chars().all(valid_name_char) {
            return Err(Fault::Name {
                name: s.name.clone(),
            });
        }
        if s.tag.is_empty()
            || s.tag.len() > 128
            || !s
                .tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(Fault::Tag { tag: s.tag.clone() });
        }
        check_debian(s)?;
        let mut names = std::collections::BTreeSet::new();
        for (i, layer) in s.layers.iter().enumerate() {
            let at = format!("layer[{i}] (`{}`)", layer.name);
            if !names.insert(layer.name.clone()) {
                return Err(at_(
                    &at,
                    Fault::DuplicateLayer {
                        name: layer.name.clone(),
                    },
                ));
            }
            for (j, src) in layer.sources.iter().enumerate() {
                let at = format!("{at}.source[{j}]");
                let set = [
                    src.url.is_some(),
                    src.path.is_some(),
                    !src.deb.is_empty(),
                    !src.pypi.is_empty(),
                    !src.nix.is_empty(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if set != 1 {
                    return Err(at_(&at, Fault::SourceKinds));
                }
                check_nix_source(layer, src).map_err(|f| at_(&at, f))?;
                check_package_requests(src).map_err(|f| at_(&at, f))?;
                if let Some(h) = &src.sha256 {
                    if src.url.is_none() {
                        return Err(at_(&at, Fault::ShaWithoutUrl));
                    }
                    if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(at_(&at, Fault::BadSha { sha: h.clone() }));
                    }
                }
                if let Some(u) = &src.url
                    && !(u.starts_with("https://")
                        || u.starts_with("http://")
                        || u.starts_with("file://"))
                {
                    return Err(at_(&at, Fault::UrlScheme { url: u.clone() }));
                }
                if let Some(m) = &src.mode {
                    parse_mode(m).ok_or_else(|| at_(&at, Fault::Mode { mode: m.clone() }))?;
                }
                if (src.closure || !src.exclude_packages.is_empty())
                    && src.kind() != SourceKind::Deb
                {
                    return Err(at_(&at, Fault::ClosureWithoutDeb));
                }
                for d in &src.deb {
                    if d.is_empty() || d.contains(char::is_whitespace) {
                        return Err(at_(&at, Fault::DebRequest { entry: d.clone() }));
                    }
                }
                for p in &src.pypi {
                    if p.is_empty() || p.contains(char::is_whitespace) {
                        return Err(at_(&at, Fault::PypiRequest { entry: p.clone() }));
                    }
                }
            }
            for f in &layer.files {
                if let Some(m) = &f.mode {
                    parse_mode(m).ok_or_else(|| {
                        at_(
                            &format!("{at}: file `{}`", f.path),
                            Fault::Mode { mode: m.clone() },
                        )
                    })?;
                }
            }
            for d in &layer.dirs {
                if let Some(m) = &d.mode {
                    parse_mode(m).ok_or_else(|| {
                        at_(
                            &format!("{at}: dir `{}`", d.path),
                            Fault::Mode { mode: m.clone() },
                        )
                    })?;
                }
            }
            for m in &layer.modes {
                if let Some(v) = &m.mode {
                    parse_mode(v).ok_or_else(|| {
                        at_(
                            &format!("{at}: mode `{}`", m.pattern),
                            Fault::Mode { mode: v.clone() },
                        )
                    })?;
                }
            }
        }
        for p in &s.config.exposed_ports {
            let (num, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
            if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                return Err(Fault::ExposedPort { port: p.clone() });
            }
        }
        Ok(())
    }

    /// Every user declared by any layer, by name.
    pub fn users(&self) -> BTreeMap<String, (u32, u32)> {
        let mut out = BTreeMap::new();
        out.insert("root".to_string(), (0, 0));
        for l in &self.spec.layers {
            for u in &l.users {
                out.insert(u.name.clone(), (u.uid, u.gid.unwrap_or(u.uid)));
            }
        }
        out
    }

    /// Every group declared by any layer, by name.
    pub fn groups(&self) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        out.insert("root".to_string(), 0);
        for l in &self.spec.layers {
            for g in &l.groups {
                out.insert(g.name.clone(), g.gid);
            }
        }
        out
    }
}

/// A `nix` source expands into several image layers, so its `[[layer]]`
/// holds that one source and nothing else for those layers to mix with.
/// A suite or component name: it becomes part of a mirror URL.
fn is_archive_word(w: &str) -> bool {
    !w.is_empty()
        && w.len() <= 64
        && w.as_bytes()[0].is_ascii_alphanumeric()
        && w.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

/// What is wrong with a part of a definition, in the words the definition's
/// error then carries (`SpecError::Invalid`'s message).
#[derive(Debug, thiserror::Error)]
enum Fault {
    /// A fault of one part of the definition, named by `at` (`layer[0] (`x`)`).
    #[error("{at}: {fault}")]
    At { at: String, fault: Box<Fault> },
    #[error("`name = \"{name}\"`: use lower-case letters, digits, `.`, `_`, `-` and `/`")]
    Name { name: String },
    #[error("`tag = \"{tag}\"`: use letters, digits, `.`, `_` and `-` (at most 128)")]
    Tag { tag: String },
    #[error("two layers are named `{name}`")]
    DuplicateLayer { name: String },
    #[error("set exactly one of `url`, `path`, `deb`, `pypi`, `nix`")]
    SourceKinds,
    #[error("`sha256` goes with `url`")]
    ShaWithoutUrl,
    #[error("`sha256 = \"{sha}\"` is not 64 hex digits")]
    BadSha { sha: String },
    #[error("`url = \"{url}\"`: only https://, http:// and file:// are supported")]
    UrlScheme { url: String },
    #[error("`mode = \"{mode}\"` is not octal")]
    Mode { mode: String },
    #[error("`closure` and `exclude_packages` go with `deb`")]
    ClosureWithoutDeb,
    #[error("`deb` entry `{entry}` is not `name` or `name=version`")]
    DebRequest { entry: String },
    #[error("`pypi` entry `{entry}` is not `name` or `name==version`")]
    PypiRequest { entry: String },
    #[error("`config.exposed_ports`: `{port}` is not like `7077/tcp`")]
    ExposedPort { port: String },
    #[error(
        "a source has `deb` but there is no `[debian]` table naming where Debian packages come from: add `[debian]` with `suites = [\"bookworm\", \"bookworm-updates\", \"bookworm-security\"]` (and `components`, default `[\"main\"]`)"
    )]
    NoDebianTable,
    #[error("`debian.suites`: name one to 16 suites")]
    SuiteCount,
    #[error("`debian.components`: at most 16")]
    ComponentCount,
    #[error("`[debian]`: `{}` is not a suite or component name (letters, digits, `.`, `_`, `-`)", word.escape_debug())]
    ArchiveWord { word: String },
    #[error("`debian.architecture = \"{}\"` is not a Debian architecture", arch.escape_debug())]
    DebianArchitecture { arch: String },
    #[error("`debian.keyring`: name a keyring file")]
    Keyring,
    #[error("`max_layers` goes with `nix`")]
    MaxLayersWithoutNix,
    #[error(
        "a layer with a `nix` source holds nothing else (it becomes one image layer per store path): put the other items in a `[[layer]]` of their own"
    )]
    NixNotAlone,
    #[error("`{key}` does not go with `nix`: store paths always land at their own /nix/store path")]
    KeyWithNix { key: &'static str },
    #[error("`max_layers = 0`: a closure needs at least one layer")]
    NoLayers,
    #[error("`nix` entry `{entry}` is not a store path or an installable")]
    NixEntry { entry: String },
    #[error("`deb` entry {entry:?} is not a Debian package name, optionally `=VERSION`")]
    DebEntry { entry: String },
    #[error("`exclude_packages` entry {entry:?} is not a Debian package name")]
    ExcludeEntry { entry: String },
    #[error("`arch = {arch:?}` is not a Debian architecture")]
    SourceArch { arch: String },
    #[error("`pypi` entry {entry:?} is not a PyPI project name, optionally `==VERSION`")]
    PypiEntry { entry: String },
}

/// `[debian]` is there when a source has `deb`, and every name in it is one.
fn check_debian(s: &ImageSpec) -> Result<(), Fault> {
    let uses_deb = s
        .layers
        .iter()
        .flat_map(|l| &l.sources)
        .any(|x| !x.deb.is_empty());
    let Some(d) = &s.debian else {
        if uses_deb {
            return Err(Fault::NoDebianTable);
        }
        return Ok(());
    };
    if d.suites.is_empty() || d.suites.len() > 16 {
        return Err(Fault::SuiteCount);
    }
    if d.components.len() > 16 {
        return Err(Fault::ComponentCount);
    }
    for w in d.suites.iter().chain(&d.components) {
        if !is_archive_word(w) {
            return Err(Fault::ArchiveWord { word: w.clone() });
        }
    }
    if let Some(a) = &d.architecture
        && (!crate::grammar::is_deb_arch(a) || a == "all")
    {
        return Err(Fault::DebianArchitecture { arch: a.clone() });
    }
    if let Some(k) = &d.keyring
        && (k.is_empty() || k.chars().any(char::is_control))
    {
        return Err(Fault::Keyring);
    }
    Ok(())
}

fn check_nix_source(layer: &LayerSpec, src: &SourceSpec) -> Result<(), Fault> {
    if src.kind() != SourceKind::Nix {
        if src.max_layers.is_some() {
            return Err(Fault::MaxLayersWithoutNix);
        }
        return Ok(());
    }
    let alone = layer.sources.len() == 1
        && layer.files.is_empty()
        && layer.symlinks.is_empty()
        && layer.dirs.is_empty()
        && layer.modes.is_empty()
        && layer.users.is_empty()
        && layer.groups.is_empty();
    if !alone {
        return Err(Fault::NixNotAlone);
    }
    let unused = [
        ("dest", src.dest.is_some()),
        ("strip_prefix", src.strip_prefix.is_some()),
        ("exclude", !src.exclude.is_empty()),
        ("mode", src.mode.is_some()),
        ("unpack", src.unpack.is_some()),
    ];
    if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
        return Err(Fault::KeyWithNix { key });
    }
    if src.max_layers == Some(0) {
        return Err(Fault::NoLayers);
    }
    for n in &src.nix {
        if n.is_empty() || n.contains(char::is_whitespace) {
            return Err(Fault::NixEntry { entry: n.clone() });
        }
    }
    Ok(())
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)
}

/// Parses an octal mode such as "0755" or "4755".
pub fn parse_mode(s: &str) -> Option<u32> {
    let v = u32::from_str_radix(s.trim_start_matches("0o"), 8).ok()?;
    (v <= 0o7777).then_some(v)
}

/// `deb` and `pypi` requests are looked up in the Debian index and reach
/// `pip` at lock time: each must be a package name (and version) by its
/// grammar, never anything a tool could read as an option.
fn check_package_requests(src: &SourceSpec) -> Result<(), Fault> {
    use crate::grammar::{is_deb_arch, is_deb_name, is_deb_version, is_pypi_name, is_pypi_version};
    for d in &src.deb {
        let (name, version) = crate::grammar::split_req(d, "=");
        if !is_deb_name(name) || version.is_some_and(|v| !is_deb_version(v)) {
            return Err(Fault::DebEntry { entry: d.clone() });
        }
    }
    for p in &src.exclude_packages {
        if !is_deb_name(p) {
            return Err(Fault::ExcludeEntry { entry: p.clone() });
        }
    }
    if let Some(a) = &src.arch
        && !is_deb_arch(a)
    {
        return Err(Fault::SourceArch { arch: a.clone() });
    }
    for p in &src.pypi {
        let (name, version) = crate::grammar::split_req(p, "==");
        if !is_pypi_name(name) || version.is_some_and(|v| !is_pypi_version(v)) {
            return Err(Fault::PypiEntry { entry: p.clone() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Definition, SpecError> {
        Definition::parse(Path::new("images/x/image.toml"), text)
    }

    #[test]
    fn minimal_definition_parses() {
        let d = parse("name = \"x\"\ntag = \"1\"\ncreated = 5\n").unwrap();
        assert_eq!(d.base, BaseImage::Scratch);
        assert_eq!(d.created, 5);
        assert_eq!(d.spec.compression, Compression::Gzip);
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let err = parse("name = \"x\"\ntag = \"1\"\n\n[[layer]]\nname = \"a\"\ncolour = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("images/x/image.toml:6:"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let err = parse("name = \"x\"\ntag = 1\n").unwrap_err().to_string();
        assert!(err.starts_with("images/x/image.toml:2:"), "{err}");
    }

    #[test]
    fn registry_base_is_a_clear_error() {
        let err = parse("name = \"x\"\ntag = \"1\"\nbase = { registry = \"debian@sha256:00\" }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported yet"), "{err}");
        assert!(err.contains("docker_archive"), "{err}");
    }

    #[test]
    fn debian_sources_need_a_debian_table_of_plain_names() {
        let layer = "[[layer]]\nname = \"a\"\n[[layer.source]]\ndeb = [\"tini\"]\n";
        let err = parse(&format!("name = \"x\"\ntag = \"1\"\n{layer}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`[debian]`") && err.contains("suites"),
            "{err}"
        );
        let ok = format!("name = \"x\"\ntag = \"1\"\n[debian]\nsuites = [\"bookworm\"]\n{layer}");
        assert!(parse(&ok).is_ok());
        for bad in ["../x", "a/b", "", "bookworm?x=1", "-o"] {
            let text = format!(
                "name = \"x\"\ntag = \"1\"\n[debian]\nsuites = [{}]\n{layer}",
                toml::Value::String(bad.into())
            );
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("image.toml"), "{bad}: {err}");
        }
        let arch = format!(
            "name = \"x\"\ntag = \"1\"\n[debian]\nsuites = [\"b\"]\narchitecture = \"all\"\n{layer}"
        );
        assert!(parse(&arch).is_err());
    }

    #[test]
    fn source_needs_exactly_one_kind() {
        let err = parse(
            "name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"a\"\n[[layer.source]]\nurl = \"https://e/x.tgz\"\npath = \"f\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("layer[0] (`a`).source[0]"), "{err}");
    }

    #[test]
    fn bad_sha256_and_created_are_refused() {
        let err = parse(
            "name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"a\"\n[[layer.source]]\nurl = \"https://e/x.tgz\"\nsha256 = \"abc\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        let err = parse("name = \"x\"\ntag = \"1\"\ncreated = \"yesterday\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn option_shaped_package_requests_are_refused() {
        for (field, value) in [
            ("deb", "[\"-oAPT::Get::AllowUnauthenticated=1\"]"),
            ("deb", "[\"tini=-oDir=/tmp\"]"),
            ("pypi", "[\"--index-url=http://evil/\"]"),
            ("pypi", "[\"py4j==0.10 --hash=sha256:00\"]"),
        ] {
            let text = format!(
                "name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"a\"\n[[layer.source]]\n{field} = {value}\nsite_packages = \"/s\"\n"
            );
            match parse(&text) {
                Ok(_) => panic!("{field} = {value} was accepted"),
                Err(e) => assert!(e.to_string().contains(field), "{e}"),
            }
        }
    }

    #[test]
    fn nix_source_stands_alone_in_its_layer() {
        let ok = parse(
            "name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"nix\"\n[[layer.source]]\nnix = [\"/nix/store/00000000000000000000000000000000-hello-2.12\"]\nmax_layers = 5\n",
        )
        .unwrap();
        let src = &ok.spec.layers[0].sources[0];
        assert_eq!(src.kind(), SourceKind::Nix);
        assert_eq!(src.max_layers, Some(5));
        let err = parse(
            "name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"nix\"\n[[layer.source]]\nnix = [\"/nix/store/x-a\"]\n[[layer.file]]\npath = \"/a\"\ncontent = \"\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("holds nothing else"), "{err}");
        let err = parse(
            "name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"nix\"\n[[layer.source]]\nnix = [\"/nix/store/x-a\"]\ndest = \"/opt\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`dest` does not go with `nix`"), "{err}");
        let err = parse(
            "name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"a\"\n[[layer.source]]\npath = \"f\"\nmax_layers = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`max_layers` goes with `nix`"), "{err}");
    }

    #[test]
    fn created_text_is_parsed() {
        let d = parse("name = \"x\"\ntag = \"1\"\ncreated = \"2024-01-01T00:00:00Z\"\n").unwrap();
        assert_eq!(d.created, 1_704_067_200);
    }
}

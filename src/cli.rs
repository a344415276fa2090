//! Command-line types only: clap parses, and plain values go to the commands.
//! Nothing here touches the disk or the network.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "Build reproducible OCI images for Spark clusters, ship them to hosts, and launch them",
    after_help = "Examples:\n  ferry build --docker-archive out/spark.tar   # the built-in Spark image\n  docker load -i out/spark.tar && ferry up --local && ferry submit --local\n  ferry lock images/busybox/image.toml\n  ferry build images/busybox/image.toml --docker-archive out/busybox.tar\n  ferry push out/spark ssh://root@node1 ssh://root@node2"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pin every input of an image definition (sha256, size) in its image.lock
    #[command(
        after_help = "Examples:\n  ferry lock images/spark/image.toml\n  ferry lock images/spark/image.toml --update numpy\n  ferry lock images/spark/image.toml --check   # exit 1 if the lock is out of date"
    )]
    Lock(LockArgs),
    /// Build an OCI image layout (and optionally a docker-archive) from a definition and its lock
    #[command(
        after_help = "Examples:\n  ferry build                      # the built-in default image (Spark, ZooKeeper, Python)\n  ferry build images/busybox/image.toml\n  ferry build images/busybox/image.toml --out out/busybox --docker-archive out/busybox.tar\n  ferry build images/busybox/image.toml --offline --mirror bundle/"
    )]
    Build(BuildArgs),
    /// Check every digest, size, diff_id and media type of an OCI image layout
    #[command(after_help = "Example:\n  ferry verify out/busybox")]
    Verify(VerifyArgs),
    /// Show the layers, config and labels of an OCI image layout
    #[command(
        after_help = "Examples:\n  ferry inspect out/busybox\n  ferry inspect out/busybox --json | jq .layers"
    )]
    Inspect(InspectArgs),
    /// Copy every locked input of a definition into one folder or .tar, for air-gapped builds
    #[command(
        after_help = "Examples:\n  ferry vendor images/spark/image.toml --to bundle/\n  ferry vendor images/spark/image.toml --to spark-inputs.tar\n  # then, on the air-gapped side:\n  ferry build images/spark/image.toml --offline --mirror bundle/"
    )]
    Vendor(VendorArgs),
    /// Put an image into the Docker of hosts over SSH, sending only the blobs each host lacks
    #[command(
        after_help = "Examples:\n  ferry push out/busybox ssh://root@node1 ssh://root@node2:2222\n  ferry push out/spark ssh://spark@node{1,2,3} --identity ~/.ssh/cluster --parallel 16\n  ferry push out/spark ssh://root@node1 --verify --json   # re-hash what the host stores\n  ferry push out/spark ssh://root@10.0.1.5 --jump admin@bastion:2222   # through a jump host, like ssh -J\n  ferry push out/spark ssh://deploy@node1   # not root: scripts run with `sudo -n` (or --no-sudo)\n  ferry push out/spark ssh://root@node1 --runtime podman   # podman load instead of docker load\n\nA password is read from FERRY_SSH_PASSWORD only, never from the command line."
    )]
    Push(PushArgs),
    /// Remove the blobs on hosts that no kept image needs, keeping the newest N images of each name
    #[command(
        after_help = "Examples:\n  ferry gc ssh://root@node1 ssh://root@node2 --dry-run   # what would go, and how many bytes\n  ferry gc ssh://root@node{1,2,3} --keep 3\n  ferry gc ssh://root@node1 --json | jq '.hosts[0].bytes_freed'\n  ferry gc ssh://root@10.0.1.5 ssh://root@10.0.1.6 --jump root@bastion\n  ferry gc --local --keep 1 --dry-run   # the local cache: layers of older builds\n\nEach `ferry push` records the image on the host; gc keeps the newest N pushes of each name and every blob they need. Stale `.part` files (older than a day) go too; Docker's own images are not touched. Do not run it while a push to the same host is under way. With --local, downloads and blobs no recorded build names are kept."
    )]
    Gc(GcArgs),
    /// Print what `ferry up` would do on each host: folders, files, containers, and ordered steps with their gates
    #[command(
        after_help = "Examples:\n  ferry plan examples/ha.toml                  # 3 ZooKeeper servers, 2 masters, 2 workers\n  ferry plan examples/ha.toml --json | jq '.hosts[0].containers'\n  ferry plan examples/local.toml --image out/spark\n  ferry plan --from-env-cfg examples/wefe.cfg  # a flat SPARK_MODE=... config\n  ferry plan --from-env-cfg wefe.cfg --write-cluster wefe.toml\n\nThe plan is the same for the same inputs, so two plans diff line by line. Nothing is touched on any host."
    )]
    Plan(PlanArgs),
    /// Start a cluster's plan on this machine's Docker, in order, waiting on each gate
    #[command(
        after_help = "Examples:\n  ferry up --local                      # ZooKeeper, a master and a worker here (examples/local.toml)\n  ferry up --local my-local.toml\n\nRunning `up` again changes nothing on a healthy cluster; a changed container is replaced. The image must be in the local Docker: `ferry build --docker-archive out/spark.tar && docker load -i out/spark.tar`."
    )]
    Up(UpArgs),
    /// Run a PySpark job with `spark-submit` against a cluster's masters, streaming the driver's output
    #[command(
        after_help = "Examples:\n  ferry submit --local                  # the image's sample job\n  ferry submit --local job.py -- 100    # a job file from here, with arguments"
    )]
    Submit(SubmitArgs),
    /// Stop and remove a cluster's containers (files and data stay)
    #[command(after_help = "Examples:\n  ferry down --local\n  ferry down --local my-local.toml")]
    Down(DownArgs),
}

#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Cache folder for downloads and built layers [default: $XDG_CACHE_HOME/ferry or ~/.cache/ferry]
    #[arg(long, env = "FERRY_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LockArgs {
    /// The image definition (image.toml)
    pub definition: PathBuf,
    /// Re-resolve all sources, or only the named ones
    #[arg(long, num_args = 0.., value_name = "SOURCE")]
    pub update: Option<Vec<String>>,
    /// Do not write: exit 1 if the lock is missing or out of date
    #[arg(long, conflicts_with = "update")]
    pub check: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The image definition (image.toml) [default: the built-in Spark image]
    pub definition: Option<PathBuf>,
    /// Where to write the OCI image layout [default: out/<name>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write the image as a `docker load`-able archive
    #[arg(long, value_name = "FILE")]
    pub docker_archive: Option<PathBuf>,
    /// Never use the network: take inputs from the cache or the --mirror bundle only
    #[arg(long)]
    pub offline: bool,
    /// A bundle made by `ferry vendor` (folder or .tar) to take inputs from
    #[arg(long, value_name = "BUNDLE")]
    pub mirror: Option<PathBuf>,
    /// Threads for compression [default: the number of cores]
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// An OCI image layout folder
    pub layout: PathBuf,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// An OCI image layout folder
    pub layout: PathBuf,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VendorArgs {
    /// The image definition (image.toml) [default: the built-in Spark image]
    pub definition: Option<PathBuf>,
    /// A folder, or a file ending in .tar
    #[arg(long, value_name = "BUNDLE")]
    pub to: PathBuf,
    /// Never use the network: copy from the cache only
    #[arg(long)]
    pub offline: bool,
    /// Another bundle to take inputs from
    #[arg(long, value_name = "BUNDLE")]
    pub mirror: Option<PathBuf>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// An OCI image layout folder (as written by `ferry build`)
    pub layout: PathBuf,
    /// Hosts as `ssh://user@host[:port]`
    #[arg(required = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// The blob store on each host; blobs go to DIR/blobs/sha256/
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ferry")]
    pub store: String,
    /// Hosts to push to at once
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Re-hash the image's stored blobs on each host and replace damaged ones, even when Docker already has the image
    #[arg(long)]
    pub verify: bool,
    /// The container runtime on the hosts (podman: untested end to end)
    #[arg(long, value_enum, default_value_t = RuntimeArg::Docker)]
    pub runtime: RuntimeArg,
    /// Name the image `name:tag` in Docker [default: the layout's `io.containerd.image.name`]
    #[arg(long, value_name = "NAME:TAG")]
    pub tag: Option<String>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeArg {
    Docker,
    Podman,
}

/// How to reach hosts over SSH (shared by `push` and `gc`).
#[derive(Args, Debug)]
pub struct SshArgs {
    /// Private key to log in with [default: ssh-agent, then ~/.ssh/id_ed25519, then ~/.ssh/id_rsa]
    #[arg(long, short = 'i', value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Known host keys to check hosts against [default: ~/.ssh/known_hosts]
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust and record the key of a host not yet in known_hosts (trust on first use)
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Seconds to wait for a host to answer the connection
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// Seconds a command on a host may go without progress
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub command_timeout: u64,
    /// Reach every host through this jump host (bastion), as `ssh -J` does; several hops separated by commas, first hop first
    #[arg(long, short = 'J', value_name = "[USER@]HOST[:PORT]")]
    pub jump: Option<String>,
    /// Run the scripts on hosts as the login user, without `sudo -n` (for a user in the docker group who can write the store; root never uses sudo)
    #[arg(long)]
    pub no_sudo: bool,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Hosts as `ssh://user@host[:port]`
    #[arg(required_unless_present = "local", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Collect the local cache instead: layer blobs only builds older than the newest N need
    #[arg(long, conflicts_with = "hosts")]
    pub local: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Images to keep per name, newest first
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub keep: u16,
    /// Print what would be removed, and remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// The blob store on each host
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ferry")]
    pub store: String,
    /// Hosts to collect at once
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The cluster file (TOML)
    #[arg(
        required_unless_present = "from_env_cfg",
        conflicts_with = "from_env_cfg"
    )]
    pub cluster: Option<PathBuf>,
    /// Import a flat `KEY=value` config (SPARK_MODE, SPARK_MASTER, SPARK_WORKERS, ...) instead
    #[arg(long, value_name = "FILE")]
    pub from_env_cfg: Option<PathBuf>,
    /// Also write the imported config as a cluster file
    #[arg(long, value_name = "FILE", requires = "from_env_cfg")]
    pub write_cluster: Option<PathBuf>,
    /// The image's OCI layout, read for its digest and labels [default: the cluster file's image, else the built-in image]
    #[arg(long, value_name = "LAYOUT")]
    pub image: Option<PathBuf>,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LocalClusterArgs {
    /// The cluster file [default: examples/local.toml, built in]
    pub cluster: Option<PathBuf>,
    /// Run on this machine's Docker (launching over SSH is not there yet)
    #[arg(long, required = true)]
    pub local: bool,
    /// The image's OCI layout, read for its digest and labels [default: the cluster file's image, else the built-in image]
    #[arg(long, value_name = "LAYOUT")]
    pub image: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub target: LocalClusterArgs,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    #[command(flatten)]
    pub target: LocalClusterArgs,
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The job: a file here, or a path inside the image [default: the image's sample job]
    pub job: Option<String>,
    /// Arguments for the job
    #[arg(last = true)]
    pub args: Vec<String>,
    /// The cluster file [default: examples/local.toml, built in]
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Submit to the cluster on this machine's Docker
    #[arg(long, required = true)]
    pub local: bool,
    /// The image's OCI layout, read for its digest and labels
    #[arg(long, value_name = "LAYOUT")]
    pub image: Option<PathBuf>,
}

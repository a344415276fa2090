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
        after_help = "Examples:\n  ferry lock images/spark/image.toml\n  ferry lock images/spark/image.toml --update numpy\n  ferry lock images/spark/image.toml --check   # exit 1 if the lock is out of date\n  ferry lock images/spark/image.toml --update --debian-mirror http://mirror.example/debian --debian-mirror http://mirror.example/debian-security\n\nDebian packages are resolved on the indexes of the suites the definition's `[debian]` table names, read from the mirrors (--debian-mirror, FERRY_DEBIAN_MIRROR, else this machine's apt sources); each InRelease must be signed by a key of the archive keyring."
    )]
    Lock(LockArgs),
    /// Build an OCI image layout (and optionally a docker-archive) from a definition and its lock
    #[command(
        after_help = "Examples:\n  ferry build                      # the built-in default image (Spark, ZooKeeper, Python)\n  ferry build images/busybox/image.toml\n  ferry build images/busybox/image.toml --out out/busybox --docker-archive out/busybox.tar\n  ferry build images/busybox/image.toml --offline --mirror bundle/\n  FERRY_DEBIAN_MIRROR=\"http://snapshot.example/archive/debian/20250520T000000Z\" ferry build   # pins that left the archive\n\nDebian packages are downloaded from the mirrors (--debian-mirror, FERRY_DEBIAN_MIRROR, else this machine's apt sources), each checked against its locked sha256; no apt-get runs."
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
    /// Put an image into the Docker of hosts over SSH, sending only the blobs each host lacks, or into a bucket
    #[command(
        after_help = "Examples:\n  ferry push out/busybox ssh://root@node1 ssh://root@node2:2222\n  ferry push out/spark ssh://spark@node{1,2,3} --identity ~/.ssh/cluster --parallel 16\n  ferry push out/spark ssh://root@node1 --verify --json   # re-hash what the host stores\n  ferry push out/spark ssh://root@10.0.1.5 --jump admin@bastion:2222   # through a jump host, like ssh -J\n  ferry push out/spark ssh://deploy@node1   # not root: scripts run with `sudo -n` (or --no-sudo)\n  ferry push out/spark ssh://root@node1 --runtime podman   # podman load instead of docker load\n  ferry push out/spark s3://images/spark --endpoint http://10.0.0.1:8333   # an OCI layout in a bucket\n  ferry push out/spark oss://images/spark --region cn-hangzhou\n  ferry push out/spark --cluster cluster.toml   # its `delivery` bucket, its `[object_store]` service\n\nA password is read from FERRY_SSH_PASSWORD only, never from the command line. Bucket credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET for oss://) or --credentials-file (mode 0600). Hosts then fetch the image with `ferry pull`."
    )]
    Push(PushArgs),
    /// Have hosts fetch an image from a bucket in parallel (presigned URLs, no keys on the hosts) and load it into their Docker
    #[command(
        after_help = "Examples:\n  ferry pull s3://images/spark ssh://root@node1 ssh://root@node2 --endpoint http://10.0.0.1:8333\n  ferry pull s3://images/spark --cluster cluster.toml --endpoint http://10.0.0.1:8333\n  ferry pull oss://images/spark ssh://root@node{1,2,3} --region cn-hangzhou --json\n\nThe controller reads the image's index from the bucket and gives each host short-lived presigned GET URLs on the stdin of curl or wget there; each host checks every blob's sha256. Credentials come from the environment or --credentials-file (mode 0600), never from the command line."
    )]
    Pull(PullArgs),
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
    /// Start a cluster on its hosts: deliver the image, write the files, start ZooKeeper, masters and workers in order, each gated
    #[command(
        after_help = "Examples:\n  ferry up examples/ha.toml --image out/spark   # over SSH; pushes the image where missing\n  ferry up cluster.toml --identity ~/.ssh/cluster --json\n  ferry up cluster.toml --image out/spark-new --dry-run   # what a rolling upgrade would replace, in order\n  ferry up --local                      # ZooKeeper, a master and a worker here (examples/local.toml)\n\nRunning `up` again changes nothing on a healthy cluster; a container whose spec or files changed is replaced, a stopped one is started. Serving containers are replaced one at a time, each gated: ZooKeeper followers before the leader, the standby master before the active one, workers one by one (`--dry-run` prints the order). A host that fails is reported and the rest go on: run `up` again once it is back. Nothing is kept on this machine: the hosts' containers carry the cluster's labels. With --local the image must be in the local Docker: `ferry build --docker-archive out/spark.tar && docker load -i out/spark.tar`."
    )]
    Up(UpArgs),
    /// Run a PySpark job with `spark-submit` against a cluster's masters, streaming the driver's output
    #[command(
        after_help = "Examples:\n  ferry submit cluster.toml                       # the image's sample job, driver on the first master's host\n  ferry submit cluster.toml job.py 100 --out x    # a job file from here; what follows it is the job's\n  ferry submit --identity k cluster.toml job.py   # ferry's own flags go before the job\n  ferry submit --local                            # the local cluster\n  ferry submit --local job.py 100"
    )]
    Submit(SubmitArgs),
    /// Show each container of a cluster: state, whether it runs the plan's spec, and its health
    #[command(
        after_help = "Examples:\n  ferry status examples/ha.toml\n  ferry status cluster.toml --json | jq '.containers[] | select(.health != \"registered\")'\n  ferry status --local"
    )]
    Status(StatusArgs),
    /// Print the log of one container of a cluster
    #[command(
        after_help = "Examples:\n  ferry logs cluster.toml node1 master --tail 50\n  ferry logs cluster.toml node4 worker --follow\n  ferry logs examples/local.toml local zookeeper --local"
    )]
    Logs(LogsArgs),
    /// Stop and remove a cluster's containers (files and data stay unless --purge)
    #[command(
        after_help = "Examples:\n  ferry down cluster.toml\n  ferry down cluster.toml --purge   # also the config, ZooKeeper data and work folders ferry made\n  ferry down --local"
    )]
    Down(DownArgs),
    /// Rehearse a failure on a running cluster and measure the recovery
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Add or remove a worker: updates the cluster file, then brings the hosts in line
    #[command(
        after_help = "Examples:\n  ferry scale cluster.toml --add-worker node6 --address 10.0.0.16   # a new [[host]] too\n  ferry scale cluster.toml --add-worker node3                        # a host the file has\n  ferry scale cluster.toml --add-worker node7 --cores 8 --memory 30g # a bigger one\n  ferry scale cluster.toml --remove-worker node5                     # drains it first\n\nA removed worker is decommissioned first (SIGPWR: it takes no new executors and Spark moves work off it), then stopped once it runs no executor or at --drain-secs; what was still running there is re-run elsewhere by Spark. The cluster file is rewritten atomically, with the rest of its text as it was, and the next `ferry up` agrees with it."
    )]
    Scale(ScaleArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("change").required(true).args(["add_worker", "remove_worker"])))]
pub struct ScaleArgs {
    /// The cluster file (TOML); it is rewritten
    pub cluster: PathBuf,
    /// The host to add as a worker
    #[arg(long, value_name = "HOST")]
    pub add_worker: Option<String>,
    /// The new host's address, when it is not a [[host]] of the file yet
    #[arg(long, value_name = "ADDRESS", requires = "add_worker")]
    pub address: Option<String>,
    /// The added worker's cores, when they differ from `[spark.workers]`'s
    /// (written to its [[host]] as `worker = { cores = N }`)
    #[arg(long, value_name = "N", requires = "add_worker")]
    pub cores: Option<u32>,
    /// The added worker's memory (`512m`, `8g`), when it differs from `[spark.workers]`'s
    #[arg(long, value_name = "SIZE", requires = "add_worker")]
    pub memory: Option<String>,
    /// The worker to drain and remove
    #[arg(long, value_name = "HOST")]
    pub remove_worker: Option<String>,
    /// Seconds to wait for a removed worker's executors to finish
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub drain_secs: u64,
    /// The image's OCI layout [default: the cluster file's image]
    #[arg(long, value_name = "LAYOUT")]
    pub image: Option<PathBuf>,
    /// Bucket delivery: a credentials file, as `ferry up --credentials-file` takes [default: the environment]
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    #[command(flatten)]
    pub ssh: SshArgs,
}

#[derive(Subcommand, Debug)]
pub enum DrillCommand {
    /// Stop the leading master, time until a standby leads and every worker is back, then restart it as a standby
    #[command(
        after_help = "Examples:\n  ferry drill failover cluster.toml            # graceful: docker stop, later docker start\n  ferry drill failover cluster.toml --kill     # a crash: SIGKILL; Docker's restart policy brings it back\n  ferry drill failover cluster.toml --json\n\nA crashed leader keeps its leadership until its ZooKeeper session expires; ferry's zoo.cfg caps sessions at 10 s."
    )]
    Failover(FailoverArgs),
}

#[derive(Args, Debug)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub target: ClusterArgs,
    /// SIGKILL the leader's process (as a crash would) instead of stopping it
    #[arg(long)]
    pub kill: bool,
    /// Seconds to wait for each stage
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    pub deadline: u64,
    /// Print the measurements as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Cache folder for downloads and built layers [default: $XDG_CACHE_HOME/ferry or ~/.cache/ferry]
    #[arg(long, env = "FERRY_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// Where Debian packages are downloaded from: configuration of the build
/// machine, never part of a definition or a lock.
#[derive(Args, Debug)]
pub struct DebianArgs {
    /// A Debian mirror's base URL (repeat it, or list several in
    /// FERRY_DEBIAN_MIRROR separated by spaces; tried in order, e.g. the
    /// archive, its security archive, a snapshot) [default: the Debian URIs
    /// of this machine's apt sources]
    #[arg(
        long = "debian-mirror",
        env = "FERRY_DEBIAN_MIRROR",
        value_name = "URL"
    )]
    pub debian_mirror: Vec<String>,
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
    pub debian: DebianArgs,
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
    pub debian: DebianArgs,
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
    pub debian: DebianArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// An OCI image layout folder (as written by `ferry build`)
    pub layout: PathBuf,
    /// Hosts as `ssh://user@host[:port]`, or one bucket as `s3://bucket/prefix` or `oss://bucket/prefix` [with --cluster: the cluster file's `delivery`]
    #[arg(required_unless_present = "cluster", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// To a bucket: take the endpoint, region and URL style from a cluster file's `[object_store]` (and the bucket from its `delivery` when none is named)
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// To a bucket: MiB per part of a multipart upload; larger blobs are sent in parts
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(5..=5120))]
    pub part_size: u64,
    /// To a bucket: parts sent at once
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parts_parallel: u16,
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

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The bucket holding the image, as `s3://bucket/prefix` or `oss://bucket/prefix` [default: the cluster file's `delivery`]
    #[arg(value_name = "BUCKET")]
    pub source: Option<String>,
    /// Hosts as `ssh://user@host[:port]`
    #[arg(value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Take the hosts (and the bucket, from `delivery`) from a cluster file
    #[arg(long, value_name = "FILE", conflicts_with = "hosts")]
    pub cluster: Option<PathBuf>,
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// Seconds each presigned URL given to a host stays valid
    #[arg(long, value_name = "SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(60..=604800))]
    pub url_expiry: u64,
    /// The blob store on each host; blobs go to DIR/blobs/sha256/
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ferry")]
    pub store: String,
    /// Hosts to pull onto at once
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Re-hash the image's stored blobs on each host and replace damaged ones, even when Docker already has the image
    #[arg(long)]
    pub verify: bool,
    /// Name the image `name:tag` in Docker [default: the index's `io.containerd.image.name`]
    #[arg(long, value_name = "NAME:TAG")]
    pub tag: Option<String>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// Where a bucket is served and how to log in (shared by `push` and `pull`).
#[derive(Args, Debug)]
pub struct BucketArgs {
    /// The object-storage service, as `http(s)://host[:port]` [default: AWS S3 in --region; for oss:// `https://oss-REGION.aliyuncs.com`]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The region requests are signed for [default: us-east-1 for s3://; required for oss://]
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// `path` (http://host/bucket/key) or `virtual` (http://bucket.host/key) [default: path with --endpoint, else virtual; OSS needs virtual]
    #[arg(long, value_name = "STYLE", value_parser = ["path", "virtual"])]
    pub url_style: Option<String>,
    /// A file with `aws_access_key_id = ...` and `aws_secret_access_key = ...` lines, mode 0600 [default: the environment]
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
}

/// How to reach hosts over SSH (shared by `push`, `gc` and the cluster commands).
#[derive(Args, Debug, Clone)]
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

/// Which cluster, and how to reach its hosts.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// The cluster file (TOML) [default with --local: examples/local.toml, built in]
    #[arg(required_unless_present = "local")]
    pub cluster: Option<PathBuf>,
    /// Run on this machine's Docker instead of over SSH (a one-host cluster on a loopback address)
    #[arg(long)]
    pub local: bool,
    /// The image's OCI layout, read for its digest and labels and pushed to hosts that lack it [default: the cluster file's image, else the built-in image]
    #[arg(long, value_name = "LAYOUT")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub ssh: SshArgs,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub target: ClusterArgs,
    /// The blob store on each host, for the image's delivery
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ferry")]
    pub store: String,
    /// Bucket delivery: a file with `aws_access_key_id = ...` and `aws_secret_access_key = ...` lines, mode 0600 [default: the environment]
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Print what would be started, kept and replaced (and the rolling order), and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the outcome as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    #[command(flatten)]
    pub target: ClusterArgs,
    /// Also remove the folders ferry made for the cluster on the hosts: configuration, ZooKeeper data, Spark work dirs (one that was there before is kept, and named)
    #[arg(long)]
    pub purge: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: ClusterArgs,
    /// Print the status as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The cluster file (TOML)
    pub cluster: PathBuf,
    /// The host, by its name in the cluster file (or its address)
    pub host: String,
    /// zookeeper, master or worker
    #[arg(value_parser = ["zookeeper", "master", "worker"])]
    pub role: String,
    /// Only the last N lines
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<u32>,
    /// Keep printing new lines as they come
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// The cluster runs on this machine's Docker
    #[arg(long)]
    pub local: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The cluster file; with --local or --cluster, the job instead
    #[arg(value_name = "CLUSTER|JOB")]
    pub first: Option<String>,
    /// The job (a file here or a path inside the image) [default: the image's sample job], then its arguments: everything after the job is the job's, flags too (`--` before them is allowed). ferry's own flags go before the job
    #[arg(
        value_name = "JOB ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub rest: Vec<String>,
    /// The cluster file [default with --local: examples/local.toml, built in]
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Submit to the cluster on this machine's Docker
    #[arg(long)]
    pub local: bool,
    /// The image's OCI layout, read for its digest and labels
    #[arg(long, value_name = "LAYOUT")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub ssh: SshArgs,
}

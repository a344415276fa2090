//! The transport every host-talking part of ferry uses: one SSH session to
//! one host ([`session`]), known_hosts read by ferry ([`known_hosts`]), and
//! the scripts run there, constant text with their values apart
//! ([`script`]). It knows nothing of images, stores or clusters, and never
//! prints: pushes, pulls, gc and the cluster launcher all reach hosts
//! through it.

pub mod known_hosts;
pub mod script;
pub mod session;

pub use script::Script;
pub use session::{
    Remote, Running, STDOUT_LIMIT, SshOptions, default_identities, shown, stderr_tail,
};

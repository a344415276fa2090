//! What an image is before it is built: its definition (`spec`), its lock
//! (`lock`), the Debian closures chosen at lock time (`apt`) and the default
//! image compiled into the binary (`default_image`). Nothing here downloads,
//! builds or delivers.

pub mod apt;
pub mod default_image;
pub mod lock;
pub mod spec;

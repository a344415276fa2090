//! The local cache (`<cache>/`): content-addressed downloads and how they
//! get there (`fetch`), collecting its garbage (`gc`), and the advisory lock
//! that keeps a collection from racing a build (`lock`). It knows nothing of
//! layers or images beyond the records `gc` reads.

pub mod fetch;
pub mod gc;
pub mod lock;

#![doc = include_str!("../README.md")]
#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod abort;
mod api;
mod arena;
pub mod bump;
mod compat;
mod engine;
mod error;
mod heap;
pub mod pool;
mod region;
mod slab;
mod snapshot;
mod stats;
mod sync;
#[cfg(test)]
pub(crate) mod test_rng;
// The fuzz driver (fuzz/src/driver.rs), shared with the unit tests, names the crate as a user
// does.
#[cfg(test)]
extern crate self as strata_alloc;

/// allocator-api2 0.2, the version whose `Allocator` every allocator here implements (and
/// hashbrown 0.15-0.17 and bumpalo use): `strata_alloc::allocator_api2::vec::Vec` needs no
/// version of your own.
pub use allocator_api2;
/// allocator-api2 0.2 again, under a name that says its version.
pub use allocator_api2 as allocator_api2_02;
/// allocator-api2 0.4 (feature `allocator-api2-04`), whose `Allocator` every allocator here
/// then implements too (talc 5 uses it).
#[cfg(feature = "allocator-api2-04")]
pub use allocator_api2_04;

/// The guides of the repository, readable here too: [`architecture`](docs::architecture)
/// (the layers, the block layout, the invariants) and [`benchmarks`](docs::benchmarks) (every
/// measurement, with its command and machine).
///
/// ```
/// // The guides are text; what they describe starts at the crate root.
/// let arena = strata_alloc::Arena::new()?;
/// arena.check()?;
/// # Ok::<(), strata_alloc::Error>(())
/// ```
// The guides are written for GitHub: type names in them are not links, and `Vec<u8>` in a
// table is text, not HTML.
#[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
pub mod docs {
    #[doc = include_str!("../docs/ARCHITECTURE.md")]
    pub mod architecture {}
    #[doc = include_str!("../docs/BENCHMARKS.md")]
    pub mod benchmarks {}
}

pub use abort::{abort_on_misuse, write_stderr};
pub use arena::Arena;
pub use bump::{Bump, BumpBox, Checkpoint};
pub use error::Error;
pub use heap::{Heap, HeapConfig};
pub use pool::{Handle, InsertError, Pool, SecondaryMap};
pub use region::{Region, page_size};
pub use slab::{SlabPool, SlabSnapshot};
pub use snapshot::{FreeList, Snapshot};
pub use stats::{BlockInfo, BlockState, Stats};
pub use sync::{GlobalHeap, LockedHeap};

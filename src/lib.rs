#![doc = include_str!("../README.md")]
#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The layers, bottom up (docs/ARCHITECTURE.md; `.ci/layers` fails on an import from a layer
// above): the vocabulary every layer reports in, then os, engine, source, the backends (arena,
// heap), the façade and sync; `versions` and the attack tests use them all from the top. The front-ends bump, slab and pool sit beside them on os.
mod error;
mod snapshot;
mod stats;

mod os;

mod engine;

mod source;

mod arena;
mod backend;
mod heap;

mod facade;

mod sync;

pub mod bump;
pub mod pool;
mod slab;

// Across all of them: the other allocator-api2 versions for every allocator type.
#[cfg(test)]
mod attacks;
#[cfg(test)]
pub(crate) mod test_rng;
mod versions;
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

pub use arena::Arena;
pub use bump::{Bump, BumpBox, Checkpoint};
pub use error::Error;
pub use heap::{Heap, HeapConfig};
pub use os::abort::{abort_on_misuse, write_stderr};
pub use os::region::{Region, page_size};
pub use pool::{Handle, InsertError, Pool, SecondaryMap};
pub use slab::{SlabPool, SlabSnapshot};
pub use snapshot::{FreeList, Snapshot};
pub use stats::{BlockInfo, BlockState, Stats};
pub use sync::{GlobalHeap, LockedHeap};

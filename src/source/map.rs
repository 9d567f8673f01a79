//! The memory of an engine's start map: a mapping of its own, apart from the blocks, so that
//! no overflow from a block can reach it.

use core::ptr::NonNull;

use crate::engine::block::GRANULE;
use crate::engine::map_bytes;
use crate::{Error, Region};

/// Maps the zeroed memory the start map of an engine over `limit` bytes of span needs: the
/// mapping (which must outlive the engine) and the pointer to hand to `Engine::new`.
pub(crate) fn reserve_map(limit: usize) -> Result<(Region, NonNull<u8>), Error> {
    let mut map = Region::reserve(map_bytes(limit / GRANULE))?;
    let ptr = map.grow(map.capacity())?;
    Ok((map, ptr))
}

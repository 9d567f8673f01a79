//! The realloc-heavy buffers workload, shared by the criterion bench (`benches/heap.rs`) and
//! `examples/buffers_loop.rs`, so that both grow their buffers with the very same loop.

/// Buffers grown at once.
pub const BUFFERS: usize = 64;
/// Bytes each buffer is grown to.
pub const BUFFER_BYTES: usize = 1 << 20;

/// Grows [`BUFFERS`] buffers made by `$new` in random order (`$rng`, a `&mut Rng`) until each
/// holds [`BUFFER_BYTES`]: one byte per push when `$chunk` is 1 (the Vec's own doubling), else
/// `$chunk` bytes of `$data` per push after `$reserve` (`reserve`: at least doubled, as `push`
/// grows; `reserve_exact`: every push a realloc). Evaluates to a checksum.
#[macro_export]
macro_rules! grow_buffers {
    ($new:expr, $rng:expr, $chunk:expr, $data:expr, $reserve:ident) => {{
        let rng: &mut $crate::Rng = $rng;
        let chunk: usize = $chunk;
        let data: &[u8] = $data;
        assert!(chunk == 1 || data.len() >= chunk);
        let mut bufs: Vec<_> = (0..$crate::buffers::BUFFERS).map(|_| $new).collect();
        let mut open: Vec<usize> = (0..$crate::buffers::BUFFERS).collect();
        while !open.is_empty() {
            let k = rng.range(0, open.len());
            let b = &mut bufs[open[k]];
            if chunk == 1 {
                b.push(k as u8);
            } else {
                b.$reserve(chunk);
                // One memcpy into the spare capacity for every Vec type alike
                // (allocator-api2's `extend_from_slice` copies byte by byte, std's uses memcpy,
                // which would make the comparison about Vec, not about the allocator).
                let len = b.len();
                // SAFETY: the reserve made room for `chunk` more bytes after `len`, and `data`
                // holds at least `chunk` bytes.
                unsafe {
                    core::ptr::copy_nonoverlapping(data.as_ptr(), b.as_mut_ptr().add(len), chunk);
                    b.set_len(len + chunk);
                }
            }
            if b.len() >= $crate::buffers::BUFFER_BYTES {
                open.swap_remove(k);
            }
        }
        let sum: usize = bufs.iter().map(|b| b[b.len() / 2] as usize + b.len()).sum();
        std::hint::black_box(sum)
    }};
}

//! Replaying recorded malloc traffic (format: /work/shared/traces/README.md).
//!
//! The `.xz` file is decompressed once with the `xz` tool into a cache under the target dir
//! (no xz crate needed), parsed into one packed `u64` per operation, and replayed against any
//! [`BenchAlloc`].

use std::alloc::Layout;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::contenders::BenchAlloc;

/// Operation kinds, in the top 2 bits of a packed op.
const ALLOC: u64 = 0;
const CALLOC: u64 = 1;
const REALLOC: u64 = 2;
const FREE: u64 = 3;
const ID_BITS: u32 = 24;
const SIZE_BITS: u32 = 38;

/// A parsed trace: `(kind << 62) | (id << 38) | size` per operation.
pub struct Trace {
    /// The packed operations.
    pub ops: Vec<u64>,
    /// One more than the largest block ID.
    pub ids: usize,
    /// The most bytes live at once (requested sizes).
    pub peak_live_bytes: usize,
    /// Counts of `a`, `c`, `r`, `f` lines.
    pub counts: [usize; 4],
}

/// The default trace, overridable with `STRATA_TRACE`.
pub fn default_trace_path() -> PathBuf {
    std::env::var_os("STRATA_TRACE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/traces/python-json.trace.xz"))
}

fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("trace-cache")
}

/// Loads and parses `xz_path`, decompressing it into the cache first if needed.
/// `None` (with a message) when the trace or the `xz` tool is missing.
pub fn load(xz_path: &Path) -> Option<Trace> {
    if !xz_path.exists() {
        eprintln!("trace {} not found; skipping the replay", xz_path.display());
        return None;
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).ok()?;
    let stem = xz_path.file_stem()?.to_string_lossy().into_owned();
    let plain = dir.join(&stem);
    if !plain.exists() {
        let tmp = dir.join(format!("{stem}.tmp"));
        let out = std::fs::File::create(&tmp).ok()?;
        let ok = Command::new("xz")
            .arg("-dc")
            .arg(xz_path)
            .stdout(out)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("`xz -dc {}` failed; skipping the replay", xz_path.display());
            return None;
        }
        std::fs::rename(&tmp, &plain).ok()?;
    }
    let text = std::fs::read(&plain).ok()?;
    Some(parse(&text))
}

fn num(field: Option<&[u8]>) -> u64 {
    let f = field.expect("trace line is missing a field");
    f.iter().fold(0u64, |n, &d| {
        assert!(d.is_ascii_digit(), "bad number in trace");
        n * 10 + u64::from(d - b'0')
    })
}

/// Parses the text format into packed ops.
pub fn parse(text: &[u8]) -> Trace {
    let mut ops = Vec::with_capacity(text.len() / 10);
    let mut sizes: Vec<u64> = Vec::new();
    let (mut live, mut peak, mut ids) = (0u64, 0u64, 0usize);
    let mut counts = [0usize; 4];
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut fields = line.split(|&b| b == b' ');
        let kind = match fields.next() {
            Some(b"a") => ALLOC,
            Some(b"c") => CALLOC,
            Some(b"r") => REALLOC,
            Some(b"f") => FREE,
            _ => panic!("bad trace line {:?}", String::from_utf8_lossy(line)),
        };
        let id = num(fields.next());
        let size = if kind == FREE {
            0
        } else {
            num(fields.next()).max(1)
        };
        assert!(
            id < 1 << ID_BITS && size < 1 << SIZE_BITS,
            "trace value too large"
        );
        let idu = id as usize;
        if idu >= sizes.len() {
            sizes.resize(idu + 1, 0);
        }
        live = live - sizes[idu] + size;
        sizes[idu] = size;
        peak = peak.max(live);
        ids = ids.max(idu + 1);
        counts[kind as usize] += 1;
        ops.push(kind << 62 | id << SIZE_BITS | size);
    }
    Trace {
        ops,
        ids,
        peak_live_bytes: peak as usize,
        counts,
    }
}

/// Replays `trace` against `a`, writing one byte into every new block (as a program would) and
/// checking it survives every realloc, and frees the blocks still live at the end. Returns a checksum so the work is kept.
///
/// Panics if the allocator fails a request.
pub fn replay<A: BenchAlloc>(a: &mut A, trace: &Trace, blocks: &mut Vec<(*mut u8, usize)>) -> u64 {
    blocks.clear();
    blocks.resize(trace.ids, (std::ptr::null_mut(), 0));
    let mut sum = 0u64;
    for &op in &trace.ops {
        let kind = op >> 62;
        let id = ((op >> SIZE_BITS) & ((1 << ID_BITS) - 1)) as usize;
        let size = (op & ((1 << SIZE_BITS) - 1)) as usize;
        let slot = &mut blocks[id];
        // SAFETY: the trace is well formed (every `r`/`f` names a live ID, every `a`/`c` a
        // free one), so each pointer passed back is live and paired with its own size;
        // alignment 16 and sizes >= 1 make valid layouts.
        unsafe {
            match kind {
                ALLOC | CALLOC => {
                    let l = Layout::from_size_align_unchecked(size, 16);
                    let p = if kind == ALLOC {
                        a.alloc(l)
                    } else {
                        a.alloc_zeroed(l)
                    };
                    assert!(!p.is_null(), "allocation of {size} bytes failed");
                    if kind == CALLOC {
                        sum = sum.wrapping_add(u64::from(*p));
                    }
                    *p = id as u8;
                    *slot = (p, size);
                }
                REALLOC => {
                    let (p, old) = *slot;
                    let l = Layout::from_size_align_unchecked(old, 16);
                    let q = a.realloc(p, l, size);
                    assert!(!q.is_null(), "realloc to {size} bytes failed");
                    assert_eq!(*q, id as u8, "realloc lost the block's contents");
                    sum = sum.wrapping_add(u64::from(*q));
                    *slot = (q, size);
                }
                _ => {
                    let (p, old) = *slot;
                    a.dealloc(p, Layout::from_size_align_unchecked(old, 16));
                    *slot = (std::ptr::null_mut(), 0);
                }
            }
        }
    }
    for &mut (p, size) in blocks.iter_mut() {
        if !p.is_null() {
            // SAFETY: a leak of the trace: live, allocated with this size.
            unsafe { a.dealloc(p, Layout::from_size_align_unchecked(size, 16)) };
        }
    }
    sum
}

//! The one way the `Allocator` and `GlobalAlloc` paths report a misuse: a single line on stderr,
//! then `abort`. Those traits cannot return an error for a bad pointer, and unwinding out of an
//! allocator is not allowed, so the process stops where the misuse is seen, before anything is
//! written through the bad pointer.
//!
//! Reporting must not allocate (the global allocator may be the one that found the problem), so
//! the message is formatted into a fixed buffer on the stack and written with one `write(2)`.

use core::fmt::{self, Write};

use crate::Error;

/// A fixed-size line buffer; text past its end is cut, never allocated.
struct Line<const N: usize = 256> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Write for Line<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Formats `"strata-alloc: {who}: {err}\n"` without allocating.
fn format_line(who: &str, err: &Error) -> Line {
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    // Line::write_str never fails, so neither does formatting into it.
    let _ = write!(line, "strata-alloc: {who}: {err}");
    if line.len == line.buf.len() {
        line.len -= 1;
    }
    line.buf[line.len] = b'\n';
    line.len += 1;
    line
}

/// Writes `args` to stderr without allocating: formatted into a 2 KiB buffer on the stack
/// (text past it is cut) and written with one `write(2)`. For reports from code that may
/// run inside the allocator, such as statistics printed at exit by a `malloc` replacement.
///
/// ```
/// let stats = strata_alloc::Heap::new()?.stats();
/// strata_alloc::write_stderr(format_args!("heap: {stats}\n"));
/// # Ok::<(), strata_alloc::Error>(())
/// ```
pub fn write_stderr(args: fmt::Arguments<'_>) {
    let mut text = Line::<2048> {
        buf: [0; 2048],
        len: 0,
    };
    // Line::write_str never fails, so neither does formatting into it.
    let _ = text.write_fmt(args);
    // SAFETY: `text.buf[..text.len]` is initialised memory owned by this frame; write(2) only
    // reads it. A short or failed write is ignored: there is nowhere else to report to.
    unsafe {
        libc::write(2, text.buf.as_ptr().cast(), text.len);
    }
}

/// Reports a misuse the way every trait path of the crate does, and aborts: one line on
/// stderr, `strata-alloc: {who}: {err}`, written without allocating, then `abort()`
/// (SIGABRT). For callers that cannot return the error either, such as a C `free`.
///
/// ```no_run
/// use strata_alloc::{Error, GlobalHeap};
///
/// static HEAP: GlobalHeap = GlobalHeap::new();
/// let p = HEAP.alloc(10)?;
/// // SAFETY: live, freed once.
/// unsafe { HEAP.free(p)? };
/// // SAFETY: the heap validates; the second free is reported, not performed.
/// if let Err(e) = unsafe { HEAP.free(p) } {
///     // prints "strata-alloc: free: double free of 0x...: the block was already freed"
///     strata_alloc::abort_on_misuse("free", &e);
/// }
/// # Ok::<(), Error>(())
/// ```
#[cold]
#[inline(never)]
pub fn abort_on_misuse(who: &str, err: &Error) -> ! {
    misuse(who, err)
}

/// Reports `err`, found by allocator `who` on a path that cannot return it, and aborts.
#[cold]
#[inline(never)]
pub(crate) fn misuse(who: &str, err: &Error) -> ! {
    let line = format_line(who, err);
    // SAFETY: `line.buf[..line.len]` is initialised memory owned by this frame; write(2) only
    // reads it. A short or failed write is ignored: we abort next regardless.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
    }
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_misuse_and_the_address() {
        let line = format_line("Arena", &Error::DoubleFree { addr: 0xbeef0 });
        let text = core::str::from_utf8(&line.buf[..line.len]).unwrap();
        assert_eq!(
            text,
            "strata-alloc: Arena: double free of 0xbeef0: the block was already freed\n"
        );
    }

    #[test]
    fn long_messages_are_cut_not_allocated() {
        let who = "x".repeat(400);
        let line = format_line(&who, &Error::DoubleFree { addr: 1 });
        assert_eq!(line.len, 256);
        assert_eq!(line.buf[255], b'\n');
    }
}

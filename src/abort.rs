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
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Write for Line {
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

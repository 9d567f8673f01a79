//! A tour of strata-alloc: `cargo run --release --example tour`.
//!
//! Collections built in an Arena, the arena's map printed, a double free caught, and the
//! stats; then a growable Heap with in-place realloc, mapped large blocks and trimming.

use allocator_api2::vec::Vec;
use strata_alloc::{Arena, Error, Heap};

fn main() -> Result<(), Error> {
    arena_section()?;
    heap_section()?;
    Ok(())
}

fn arena_section() -> Result<(), Error> {
    println!("== Arena: 64 KiB, alloc / free / realloc, misuse detection ==\n");
    let arena = Arena::new()?;

    // Collections live in the arena through allocator-api2.
    let mut words: Vec<&str, &Arena> = Vec::new_in(&arena);
    words.extend("the quick brown fox jumps over the lazy dog".split(' '));
    let mut counts = hashbrown::HashMap::new_in(&arena);
    for w in &words {
        *counts.entry(*w).or_insert(0u32) += 1;
    }
    println!(
        "{} words, {} distinct, 'the' x{}",
        words.len(),
        counts.len(),
        counts["the"]
    );

    // The checked API: raw blocks, a hole, a realloc that grows in place.
    let a = arena.alloc(100)?;
    let b = arena.alloc(300)?;
    // SAFETY: `a` is live and freed once; `b` is live and only the returned pointer is used.
    let b = unsafe {
        arena.free(a)?;
        arena.realloc(b, 2000)?
    };
    println!(
        "\nThe arena's map (the seed's snapshot):\n{}",
        arena.snapshot()
    );

    // A double free is caught before anything is written, and the arena keeps working.
    // SAFETY: `b` is live and freed once here.
    unsafe { arena.free(b)? };
    // SAFETY: the second free is the misuse being demonstrated; the arena validates it.
    match unsafe { arena.free(b) } {
        Err(e) => println!("caught: {e}"),
        Ok(()) => unreachable!("a double free must be reported"),
    }
    // A pointer into the middle of a block is caught too.
    let c = arena.alloc(64)?;
    // SAFETY: 16 bytes into a 64-byte block, handed to free on purpose: it is validated.
    let interior = unsafe { c.add(16) };
    // SAFETY: as above.
    if let Err(e) = unsafe { arena.free(interior) } {
        println!("caught: {e}");
    }
    arena.check()?;
    drop(counts);
    drop(words);
    println!("\nArena stats:\n{}\n", arena.stats());
    for leak in arena.leaks() {
        println!(
            "still live (would leak): {} bytes at {:#x}",
            leak.usable, leak.addr
        );
    }
    Ok(())
}

fn heap_section() -> Result<(), Error> {
    println!("\n== Heap: a growable break, mapped large blocks, memory back to the OS ==\n");
    let heap = Heap::new()?;

    // A growing buffer at the top of the heap grows in place: the break moves, not the data.
    let mut buf: Vec<u8, &Heap> = Vec::new_in(&heap);
    let mut moves = 0;
    let mut last = buf.as_ptr();
    for i in 0..100_000u32 {
        buf.push(i as u8);
        if buf.as_ptr() != last {
            moves += 1;
            last = buf.as_ptr();
        }
    }
    println!("pushed 100 000 bytes one at a time: the buffer changed address {moves} times");

    // Large blocks get their own mapping and go back to the OS when freed.
    let big = heap.alloc(4 << 20)?;
    println!(
        "a 4 MiB block: {} mapped block(s)",
        heap.stats().mapped_blocks
    );
    // SAFETY: live, freed once.
    unsafe { heap.free(big)? };

    let many: std::vec::Vec<_> = (0..2000)
        .map(|i| heap.alloc(100 + i % 900))
        .collect::<Result<_, _>>()?;
    let peak = heap.stats().managed_bytes;
    for p in many {
        // SAFETY: each is live and freed once.
        unsafe { heap.free(p)? };
    }
    drop(buf);
    let given_back = heap.trim();
    heap.check()?;
    let s = heap.stats();
    println!(
        "2000 blocks freed: heap was {peak} B, trim gave back {given_back} B, now {} B",
        s.managed_bytes
    );
    println!("\nHeap stats:\n{s}");
    Ok(())
}

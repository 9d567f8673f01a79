//! A tour of strata-alloc: `cargo run --release --example tour`.
//!
//! The common cases first (collections in an Arena, a request scope in a Bump, a Pool of
//! handles, the program's own allocator), then the other allocators (SlabPool, LockedHeap,
//! Heap), then the checked malloc-style API and the misuse it catches. Every figure printed is
//! explained where it is printed.

use strata_alloc::allocator_api2::vec::Vec;
use strata_alloc::{
    Arena, BlockState, Bump, Error, GlobalHeap, Heap, LockedHeap, Pool, SecondaryMap, SlabPool,
    bump, bump_format,
};

// This whole program allocates through strata: every String and std Vec below comes from here.
#[global_allocator]
static GLOBAL: GlobalHeap = GlobalHeap::new();

fn main() -> Result<(), Error> {
    collections_in_an_arena()?;
    a_request_scope_in_a_bump();
    handles_in_a_pool();
    the_global_allocator();
    small_blocks_in_a_slab_pool()?;
    one_heap_shared_by_threads()?;
    a_growable_heap()?;
    the_checked_api_and_a_caught_misuse()?;
    Ok(())
}

fn heading(title: &str) {
    println!("\n== {title} ==\n");
}

fn collections_in_an_arena() -> Result<(), Error> {
    heading("1. Collections in an Arena");
    let arena = Arena::new()?; // one 64 KiB mapping
    let mut squares: Vec<u64, &Arena> = Vec::new_in(&arena);
    squares.extend((1..=100).map(|i| i * i));
    let mut counts = hashbrown::HashMap::new_in(&arena);
    for word in "the quick brown fox jumps over the lazy dog".split(' ') {
        *counts.entry(word).or_insert(0u32) += 1;
    }
    println!(
        "a Vec of {} squares (sum {}) and a hashbrown map of {} words live in the arena",
        squares.len(),
        squares.iter().sum::<u64>(),
        counts.len()
    );
    println!("\nThe arena's blocks, in address order:");
    println!(
        "  offset = where the block starts in the arena; size = its bytes, 8-byte header included"
    );
    println!("  allocated = handed out; free = ready for the next request (here, the smaller");
    println!("  buffers the collections outgrew as they grew)\n");
    println!("  {:>8} {:>8}  state", "offset", "size");
    let vec_at = squares.as_ptr() as usize;
    for block in arena.blocks() {
        let state = match block.state {
            BlockState::Allocated => "allocated",
            BlockState::Free => "free",
            BlockState::Mapped => "mapped",
            BlockState::Quarantined => "quarantined (damaged, never reused)",
        };
        let whose = if block.addr == vec_at {
            "  <- the Vec's buffer: 100 u64 (it grew in place, at the arena's start)"
        } else if block.state == BlockState::Allocated {
            "  <- the hash map's table"
        } else {
            ""
        };
        println!("  {:>8} {:>8}  {state}{whose}", block.offset, block.size);
    }
    drop(counts);
    drop(squares);
    println!(
        "\nboth dropped: {} blocks still allocated, so nothing leaked",
        arena.stats().live_blocks
    );
    Ok(())
}

fn a_request_scope_in_a_bump() {
    heading("2. A request scope in a Bump");
    println!("A Bump hands memory out by moving a pointer; a scope gives back everything");
    println!(
        "allocated inside it when it returns (\"in use\" = bytes handed out and not given back).\n"
    );
    let mut arena = Bump::new();
    for request in 0..3 {
        arena.scope(|b| {
            let mut words: bump::Vec<'_, &str> = bump::Vec::new_in(&*b);
            for i in 0..50 {
                words.push(b.alloc_str(&format!("w{i}")));
            }
            let mut reply = bump::String::new_in(&*b);
            reply.push_str("HTTP/1.1 200 OK: ");
            reply.push_str(&bump_format!(in &*b, "{} words, request {request}", words.len()));
            println!(
                "request {request}: \"{reply}\", {} B in use",
                b.allocated_bytes()
            );
        });
    }
    println!(
        "after the scopes: {} B in use; the Bump keeps its {} B chunk (the memory it bumps through) for the next request",
        arena.allocated_bytes(),
        arena.chunk_capacity()
    );
}

fn handles_in_a_pool() {
    heading("3. Handles in a Pool");
    println!("A Pool stores values in slots; a Handle is a slot index and a generation");
    println!(
        "(shown as index v generation). A removed value's handle never reaches a later value.\n"
    );
    let mut users = Pool::new();
    let mut emails = SecondaryMap::new(); // more data for the same handles
    let alice = users.insert("alice");
    let bob = users.insert("bob");
    emails.insert(alice, "alice@example.org");
    users.remove(alice);
    let carol = users.insert("carol"); // reuses slot 0 with a newer generation
    println!(
        "alice {alice:?} -> {:?}   carol {carol:?} -> {:?}   bob {bob:?} -> {:?}",
        users.get(alice),
        users.get(carol),
        users.get(bob)
    );
    println!(
        "alice's email is still under alice's handle only: {:?} for carol",
        emails.get(carol)
    );
    println!(
        "a Handle is {} bytes, an Option<Handle> too: {}",
        size_of_val(&bob),
        size_of::<Option<strata_alloc::Handle<&str>>>()
    );
}

fn the_global_allocator() {
    heading("4. The program's allocator");
    println!(
        "This tour runs on `#[global_allocator] static GLOBAL: GlobalHeap = GlobalHeap::new();`"
    );
    let s = GLOBAL.stats();
    println!(
        "so far it served {} allocations; {} blocks ({} B) are live right now",
        s.allocations, s.live_blocks, s.bytes_in_use
    );
}

fn small_blocks_in_a_slab_pool() -> Result<(), Error> {
    heading("5. Small blocks of a few sizes in a SlabPool");
    println!(
        "A SlabPool keeps one list of equal slots per size (16 B steps up to {} B).\n",
        SlabPool::MAX_SIZE
    );
    let slabs = SlabPool::new();
    let mut nodes: std::vec::Vec<_> = (0..1000)
        .map(|i| slabs.alloc(24 + 8 * (i % 3)))
        .collect::<Result<_, _>>()?;
    let s = slabs.stats();
    println!(
        "1000 blocks of 24, 32 and 40 B: {} live, {} B in use",
        s.live_blocks, s.bytes_in_use
    );
    for p in nodes.drain(..) {
        // SAFETY: each block is live and freed once.
        unsafe { slabs.free(p)? };
    }
    slabs.check()?;
    println!("all freed: {} live", slabs.stats().live_blocks);
    Ok(())
}

fn one_heap_shared_by_threads() -> Result<(), Error> {
    heading("6. One heap shared by threads: LockedHeap");
    let shared = LockedHeap::new(Heap::new()?);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let heap = &shared;
            s.spawn(move || {
                let mut v = Vec::new_in(heap);
                v.extend((0..10_000).map(|i| i * t));
                v.iter().sum::<u64>()
            });
        }
    });
    shared.check()?;
    let s = shared.stats();
    println!(
        "4 threads each built and dropped a Vec of 10 000 u64: {} allocations, {} live now",
        s.allocations, s.live_blocks
    );
    Ok(())
}

fn a_growable_heap() -> Result<(), Error> {
    heading("7. A Heap that grows and gives memory back");
    println!("A Heap moves its top (the \"break\") up as it needs memory, puts large blocks in");
    println!("mappings of their own, and gives free memory back to the OS with trim().\n");
    let heap = Heap::new()?;
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
    println!(
        "a Vec pushed to 100 000 bytes one at a time moved {moves} time(s): it grew in place as the break rose"
    );
    let big = heap.alloc(4 << 20)?;
    println!(
        "a 4 MiB block lives in its own mapping: {} mapped block(s)",
        heap.stats().mapped_blocks
    );
    // SAFETY: `big` is live and freed once.
    unsafe { heap.free(big)? };
    drop(buf);
    let given_back = heap.trim();
    let s = heap.stats();
    println!(
        "all freed: trim gave {given_back} B back; {} B taken from the OS in all, {} B given back",
        s.bytes_from_os, s.bytes_to_os
    );
    Ok(())
}

fn the_checked_api_and_a_caught_misuse() -> Result<(), Error> {
    heading("8. The checked API, and the misuse it catches");
    println!("alloc, free and realloc work like C's, but a bad pointer is an Error, not damage.\n");
    let arena = Arena::new()?;
    let a = arena.alloc(100)?;
    let b = arena.alloc(300)?;
    // SAFETY: `a` is live and freed once; `b` is live and only the pointer returned is used.
    let b = unsafe {
        arena.free(a)?;
        arena.realloc(b, 2000)?
    };
    println!("alloc(100), alloc(300), free the first, realloc the second to 2000 B:\n");
    println!("{}", arena.snapshot());
    println!("Reading it:");
    println!(
        "- live/free blocks: blocks handed out / free. in use: bytes callers may write in live"
    );
    println!("  blocks; peak: the most ever in use; managed: the bytes the arena owns (64 KiB);");
    println!("  % used: in use / managed.");
    println!(
        "- allocations, frees, reallocs (in place: without moving). splits: free blocks cut to"
    );
    println!(
        "  fit a request; coalesces: free neighbours merged into one; failed: requests refused"
    );
    println!("  for lack of memory; misuses: bad pointers caught.");
    println!("- each row is a block: offset and size as in part 1, usable = size less the header.");
    println!(
        "- free lists: free blocks sorted by size into bins; a bin is shown with its smallest"
    );
    println!("  size and its blocks as offset+size.");
    println!("- quick lists: small blocks freed recently, listed by size with their offsets; they");
    println!("  wait unmerged so the next request of that size is served at once.\n");

    // SAFETY: `b` is live and freed once here.
    unsafe { arena.free(b)? };
    // SAFETY: freeing it again is the misuse being shown; the arena validates it first.
    match unsafe { arena.free(b) } {
        Err(e) => println!("free(b) again      -> caught: {e}"),
        Ok(()) => unreachable!("a double free is always reported"),
    }
    let c = arena.alloc(64)?;
    // SAFETY: a pointer 16 bytes into a block, handed to free on purpose: it is validated.
    match unsafe { arena.free(c.add(16)) } {
        Err(e) => println!("free(c + 16)       -> caught: {e}"),
        Ok(()) => unreachable!("an interior pointer is always reported"),
    }
    arena.check()?;
    println!(
        "\nthe arena is intact (check() walked every block) and counted {} misuses",
        arena.stats().misuses_caught
    );
    for leak in arena.leaks() {
        println!(
            "still allocated (a leak, found by leaks()): {} B at {:#x}, the block c, whose bad free was refused",
            leak.usable, leak.addr
        );
    }
    Ok(())
}

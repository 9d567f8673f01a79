//! A server loop that gives every request its own `Bump` scope.
//!
//! Each simulated request line is split into tokens copied into the arena, the tokens are
//! counted in a hashbrown map that lives in the arena, and a response is formatted into a
//! String in the arena (`bump_format!`). When the scope ends all of it is gone at once, so the
//! arena's footprint stays flat however many requests are served.
//!
//! Run with `cargo run --release --example request_scopes`.

use core::fmt::Write;

use hashbrown::{DefaultHashBuilder, HashMap};
use strata_alloc::Bump;
use strata_alloc::bump::Vec;

/// A deterministic request line: a verb, a path and some repeated words.
fn request_line(n: u64) -> std::string::String {
    const WORDS: [&str; 8] = [
        "alpha", "beta", "gamma", "delta", "alpha", "beta", "alpha", "eps",
    ];
    let mut line = format!("GET /items/{} HTTP/1.1", n % 97);
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..(8 + n % 24) {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        line.push(' ');
        line.push_str(WORDS[(x % 8) as usize]);
    }
    line
}

/// Handles one request entirely inside the arena and returns the response length.
fn handle(bump: &Bump, line: &str, print: bool) -> usize {
    // Tokens copied into the arena (the request buffer could be reused right away).
    let mut tokens: Vec<'_, &str> = Vec::new_in(bump);
    for word in line.split_ascii_whitespace() {
        tokens.push(bump.alloc_str(word));
    }
    // Token counts in a hash map whose table lives in the arena too.
    let mut counts: HashMap<&str, u32, DefaultHashBuilder, &Bump> = HashMap::new_in(bump);
    for &t in &tokens {
        *counts.entry(t).or_insert(0) += 1;
    }
    let mut top: Vec<'_, (&str, u32)> = Vec::with_capacity_in(counts.len(), bump);
    top.extend(counts.iter().map(|(&k, &v)| (k, v)));
    top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));

    // The response, formatted into a String in the arena.
    let mut out = strata_alloc::bump_format!(in bump, "HTTP/1.1 200 OK\r\n");
    let _ = write!(
        out,
        "content-type: text/plain\r\n\r\n{} tokens, {} distinct:",
        tokens.len(),
        counts.len()
    );
    for (word, n) in top.iter().take(4) {
        let _ = write!(out, " {word}={n}");
    }
    let response = out.as_str();
    if print {
        println!("{}", response.lines().last().unwrap_or_default());
    }
    response.len()
}

fn main() {
    let mut bump = Bump::new();
    let total_requests = 100_000u64;
    let mut bytes_out = 0usize;
    let mut footprints = std::vec::Vec::new();
    for n in 0..total_requests {
        let line = request_line(n);
        let print = n < 3;
        bytes_out += bump.scope(|b| {
            let len = handle(b, &line, print);
            if n == 0 {
                println!(
                    "  (arena during request 0: {} bytes in use)",
                    b.allocated_bytes()
                );
            }
            len
        });
        if (n + 1).is_power_of_two() || n + 1 == total_requests {
            footprints.push((n + 1, bump.allocated_bytes(), bump.chunk_capacity()));
        }
    }
    println!(
        "\n{:>10}  {:>15}  {:>16}",
        "requests", "bytes in use", "footprint (B)"
    );
    for (n, used, cap) in &footprints {
        println!("{n:>10}  {used:>15}  {cap:>16}");
    }
    let first = footprints[0].2;
    let flat = footprints.iter().all(|f| f.2 == first);
    println!(
        "\n{total_requests} requests, {bytes_out} response bytes; footprint {} across requests ({} B)",
        if flat { "stayed flat" } else { "CHANGED" },
        footprints.last().map_or(0, |f| f.2)
    );
    assert!(
        flat,
        "the footprint must not grow with the number of requests"
    );
}

//! A small, dependency-free mutation fuzzer for the GGUF header parser:
//! starts from valid files, flips bits, overwrites bytes with boundary
//! values, truncates and splices, and checks the parser never panics and
//! never reports a tensor outside the file. Used by a test (bounded count)
//! and by `examples/fuzz_gguf.rs` (bounded time, scripts/fuzz-gguf.sh).

use crate::gguf::GgufHeader;

/// A seeded xorshift generator (no dependency needed for fuzzing).
struct Xs(u64);

impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutate `seed` once, deterministically from `r`.
fn mutate(seed: &[u8], r: &mut Xs) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + r.below(4) {
        if b.is_empty() {
            break;
        }
        let at = r.below(b.len());
        match r.below(6) {
            0 => b[at] ^= 1 << r.below(8),
            1 => b[at] = [0, 1, 0x7f, 0x80, 0xff][r.below(5)],
            2 => {
                // A boundary u64 (counts, lengths, offsets).
                let v: u64 = [0, 1, u32::MAX as u64, u64::MAX, 1 << 40, 255][r.below(6)];
                for (i, byte) in v.to_le_bytes().iter().enumerate() {
                    if at + i < b.len() {
                        b[at + i] = *byte;
                    }
                }
            }
            3 => b.truncate(at),
            4 => {
                let from = r.below(b.len());
                let len = r.below(16).min(b.len() - from);
                let chunk = b[from..from + len].to_vec();
                b.splice(at..at, chunk);
            }
            _ => b[at] = b[at].wrapping_add(1),
        }
    }
    b
}

/// Run `iterations` mutations of each seed; returns the first input that
/// made the parser misbehave (a panic or an out-of-file tensor), if any.
pub fn fuzz(seeds: &[Vec<u8>], iterations: usize, seed: u64) -> Option<Vec<u8>> {
    let mut r = Xs(seed | 1);
    for i in 0..iterations {
        let input = mutate(&seeds[i % seeds.len()], &mut r);
        let ok = std::panic::catch_unwind(|| match GgufHeader::parse(&input) {
            Ok(h) => h.tensors.iter().all(|t| h.data_offset + t.offset + t.size <= input.len() as u64),
            Err(_) => true,
        });
        if !matches!(ok, Ok(true)) {
            return Some(input);
        }
    }
    None
}

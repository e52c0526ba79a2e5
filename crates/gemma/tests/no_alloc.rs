//! Decoding allocates nothing once a session is warmed up: every activation
//! buffer lives in the caller's `Workspace` or in per-thread
//! kernel buffers, the thread pool dispatches without allocating, and the
//! KV cache grows in steps of `GROW_STEP` positions. Checked with a
//! counting global allocator over real decode steps (`Model::forward_into`),
//! on the tiny f32 models (float kernels; Gemma 3, Gemma 4 with per-layer
//! inputs, Gemma 4 MoE) and on the real Q4_K_M model
//! (quantized kernels) when it has been fetched. A decoding step of the
//! `SequenceState` (penalties, sampling, logprobs) allocates nothing
//! vocabulary-sized.

use gemma::{Gemma, LogitsMode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// Largest single allocation (or reallocation) while counting, in bytes.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
            LARGEST.fetch_max(layout.size(), Ordering::SeqCst);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
            LARGEST.fetch_max(new_size, Ordering::SeqCst);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `steps` decode steps after a prompt and a warm-up.
fn decode_allocations(g: &Gemma, steps: usize) -> usize {
    let mut cache = g.model.new_cache();
    let mut ws = gemma_model::Workspace::new();
    let prompt: Vec<u32> = (0..9).map(|i| 2 + i * 3).collect();
    g.model.forward_into(&prompt, &mut cache, &mut ws, LogitsMode::Last).unwrap();
    let mut next = 5u32;
    let mut step = |cache: &mut gemma_model::cache::KvCache| {
        let logits = g.model.forward_into(&[next], cache, &mut ws, LogitsMode::Last).unwrap();
        next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
    };
    for _ in 0..3 {
        step(&mut cache); // warm-up: per-thread buffers reach their size
    }
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..steps {
        step(&mut cache);
    }
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// The largest allocation of 40 `SequenceState` steps after a warm-up, with
/// every processor, full-vocabulary sampling and logprobs, over a
/// Gemma-sized (262,144) logits row: per-token work must not allocate
/// anything vocabulary-sized (only small strings and top-k lists).
fn sequence_step_largest_allocation(g: &Gemma) -> usize {
    const VOCAB: usize = 262_144;
    let real = g.tokenizer.vocab_size().min(VOCAB) as u32;
    let mut req = gemma::GenerateRequest::new(vec![2, 10, 11, 12], 60, vec![]);
    req.params = gemma::SamplingParams { temperature: 0.9, top_p: 0.95, min_p: 0.01, repetition_penalty: 1.3, seed: 3, ..Default::default() };
    req.presence_penalty = 0.5;
    req.frequency_penalty = 0.3;
    req.logprobs = true;
    req.top_logprobs = 5;
    let mut state = gemma::SequenceState::new(&req, VOCAB, 4096).unwrap();
    // Only ids the tokenizer knows are plausible; the rest are far below.
    let row = |k: usize| -> Vec<f32> { (0..VOCAB).map(|i| if (i as u32) < real { ((i * 7 + k * 13) % 97) as f32 / 10.0 } else { -1e4 }).collect() };
    let mut logits = row(0);
    for k in 0..3 {
        logits.copy_from_slice(&row(k));
        state.step(&mut logits, &g.tokenizer).unwrap();
    }
    let rows: Vec<Vec<f32>> = (3..43).map(row).collect();
    LARGEST.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for r in &rows {
        logits.copy_from_slice(r);
        state.step(&mut logits, &g.tokenizer).unwrap();
    }
    COUNTING.store(false, Ordering::SeqCst);
    LARGEST.load(Ordering::SeqCst)
}

/// One test function for both models: the allocator counts process-wide,
/// and the test harness allocates when it starts another test's thread.
#[test]
fn decoding_does_not_allocate() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma3");
    let g = Gemma::load(path).unwrap();
    assert_eq!(decode_allocations(&g, 40), 0, "tiny model (float kernels)");
    // Gemma 4: per-layer inputs, and the MoE router and expert dispatch.
    for name in ["tiny-gemma4", "tiny-gemma4-moe"] {
        let g4 = Gemma::load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)).unwrap();
        assert_eq!(decode_allocations(&g4, 40), 0, "{name}");
    }
    let largest = sequence_step_largest_allocation(&g);
    // A vocabulary-sized buffer is >= 32 KiB even as a bitset (1 MiB as f32);
    // the detokenizer's own small buffers stay well below.
    assert!(largest < 32 * 1024, "a sequence step allocated {largest} bytes at once");
    let path = gemma::hub::default_model_path();
    if !path.is_file() {
        eprintln!("\n!!!!!!!!!! SKIPPED (real model part): not found at {} — run scripts/fetch-model.sh !!!!!!!!!!\n", path.display());
        assert!(std::env::var_os("GEMMA_REQUIRE_REAL_MODEL").is_none(), "the real model is required");
        return;
    }
    let g = Gemma::load(&path).unwrap();
    assert_eq!(decode_allocations(&g, 40), 0, "real model (quantized kernels)");
}

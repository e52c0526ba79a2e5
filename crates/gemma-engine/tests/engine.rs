//! The engine on the tiny fixture (and the real model when fetched):
//! batch-invariant greedy outputs, cancellation, queue limits, validation.

use gemma::{Gemma, SamplingParams};
use gemma_engine::{Engine, EngineConfig, Event, FinishReason, Request, SubmitError};
use std::path::PathBuf;
use std::sync::Arc;

fn tiny() -> Arc<Gemma> {
    Arc::new(Gemma::load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma3")).unwrap())
}

/// Collect a request's tokens and its summary.
fn collect(mut h: gemma_engine::Handle) -> (Vec<u32>, String, gemma_engine::Summary) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    while let Some(ev) = h.events.blocking_recv() {
        match ev {
            Event::Token(t) => {
                ids.push(t.id);
                text.push_str(&t.text);
            }
            Event::Done(s) => {
                text.push_str(&s.tail_text);
                return (ids, text, s);
            }
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
    panic!("event stream ended without Done");
}

fn prompts(g: &Gemma) -> Vec<Vec<u32>> {
    ["The quick brown fox", "Once upon a time there was", "1 2 3 4 5 6 7 8 9 10 11 12", "Hello", "a b c d e f g h i j k l m n o p q r s t u v w"]
        .iter()
        .map(|p| g.encode_prompt(p).unwrap())
        .collect()
}

fn batch_invariance(g: Arc<Gemma>, steps: usize, chunk: usize) {
    let ps = prompts(&g);
    let engine = Engine::start(Arc::clone(&g), EngineConfig { max_batch: 8, prefill_chunk: chunk, ..EngineConfig::default() });
    let mk = |p: &Vec<u32>| {
        let mut r = Request::new(&g, p.clone(), steps);
        r.stop_ids.clear();
        r
    };
    let alone: Vec<Vec<u32>> = ps.iter().map(|p| collect(engine.submit(mk(p)).unwrap()).0).collect();
    // All at once, twice over (10 sequences in 8 slots: some wait, then join mid-run).
    let handles: Vec<_> = ps.iter().chain(ps.iter()).map(|p| engine.submit(mk(p)).unwrap()).collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (ids, _, s) = collect(h);
        assert_eq!(ids, alone[i % ps.len()], "prompt {} differs in a batch", i % ps.len());
        assert_eq!(s.finish, FinishReason::Length);
        assert_eq!(s.generated_tokens, steps);
    }
}

#[test]
fn greedy_outputs_do_not_depend_on_the_batch() {
    batch_invariance(tiny(), 12, 3);
}

#[test]
fn real_model_outputs_do_not_depend_on_the_batch() {
    let path = gemma::hub::default_model_path();
    if !path.is_file() {
        eprintln!("\n!!!!!!!!!! SKIPPED: real model not found at {} — run scripts/fetch-model.sh !!!!!!!!!!\n", path.display());
        return;
    }
    batch_invariance(Arc::new(Gemma::load(&path).unwrap()), 8, 4);
}

/// A request alone in the engine generates what `Gemma::generate` does (the
/// prompt fits one prefill chunk, so the kernels are the same).
#[test]
fn engine_equals_the_library_generate() {
    let g = tiny();
    let engine = Engine::start(Arc::clone(&g), EngineConfig::default());
    for p in prompts(&g) {
        let mut req = g.request(&p);
        req.max_new_tokens = 10;
        req.params = SamplingParams { temperature: 0.8, top_k: 20, seed: 7, ..SamplingParams::default() };
        let want = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
        let mut r = Request::new(&g, p.clone(), 10);
        r.params = req.params.clone();
        let (ids, text, s) = collect(engine.submit(r).unwrap());
        assert_eq!(ids.iter().filter(|id| !g.stop_ids().contains(id)).copied().collect::<Vec<_>>(), want.tokens);
        assert_eq!(text, want.text);
        assert_eq!(s.prompt_tokens, p.len());
    }
}

#[test]
fn dropping_a_handle_cancels_and_frees_the_slot() {
    let g = tiny();
    let engine = Engine::start(Arc::clone(&g), EngineConfig { max_batch: 1, ..EngineConfig::default() });
    let p = g.encode_prompt("Hello").unwrap();
    let mut long = Request::new(&g, p.clone(), 200);
    long.stop_ids.clear();
    let mut h = engine.submit(long).unwrap();
    // First token arrives, then the client goes away.
    assert!(matches!(h.events.blocking_recv(), Some(Event::Token(_))));
    let steps_before = engine.stats().steps.load(std::sync::atomic::Ordering::SeqCst);
    drop(h);
    // The single slot is free again at once: a new request completes, and
    // the cancelled one did not run its 200 steps first.
    let (_, _, s) = collect(engine.submit(Request::new(&g, p, 3)).unwrap());
    assert!(s.generated_tokens <= 3);
    let steps = engine.stats().steps.load(std::sync::atomic::Ordering::SeqCst) - steps_before;
    assert!(steps < 20, "{steps} steps ran: the cancelled request kept its slot");
}

#[test]
fn limits_are_enforced_before_any_work() {
    let g = tiny();
    let engine = Engine::start(
        Arc::clone(&g),
        EngineConfig { max_batch: 1, max_queue: 2, max_input_tokens: 8, max_total_tokens: 20, ..EngineConfig::default() },
    );
    let p = g.encode_prompt("Hello").unwrap();
    let too_long = Request::new(&g, vec![2; 9], 1);
    assert!(matches!(engine.submit(too_long), Err(SubmitError::Invalid(m)) if m.contains("max_input_tokens")));
    let too_much = Request::new(&g, p.clone(), 100);
    assert!(matches!(engine.submit(too_much), Err(SubmitError::Invalid(m)) if m.contains("max_total_tokens")));
    let mut bad = Request::new(&g, p.clone(), 2);
    bad.params.top_p = 0.0;
    assert!(matches!(engine.submit(bad), Err(SubmitError::Invalid(m)) if m.contains("top_p")));
    let oov = Request::new(&g, vec![2, 99_999], 2);
    assert!(matches!(engine.submit(oov), Err(SubmitError::Invalid(m)) if m.contains("vocabulary")));
    // Fill the queue: one runs, two wait, the next is refused.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        let mut r = Request::new(&g, p.clone(), 10);
        r.stop_ids.clear();
        match engine.submit(r) {
            Ok(h) => held.push(h),
            Err(SubmitError::Overloaded { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "the queue limit never refused a request");
    for h in held {
        collect(h);
    }
}

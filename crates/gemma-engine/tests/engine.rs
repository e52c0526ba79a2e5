//! The engine on the tiny fixture (and the real model when fetched):
//! batch-invariant greedy outputs, cancellation, queue limits, validation,
//! speculative decoding in the batch.

use gemma::{Gemma, SamplingParams, SpecMode, Speculation};
use gemma_engine::{Engine, EngineConfig, Event, FinishReason, Request, SubmitError};
use std::path::PathBuf;
use std::sync::Arc;

fn tiny() -> Arc<Gemma> {
    Arc::new(Gemma::load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma3")).unwrap())
}

/// The real 270M (scripts/fetch-model.sh), or None with a loud skip
/// (an error when GEMMA_REQUIRE_REAL_MODEL is set).
fn real_model() -> Option<Arc<Gemma>> {
    let path = gemma::hub::default_model_path();
    if !path.is_file() {
        eprintln!("\n!!!!!!!!!! SKIPPED: real model not found at {} — run scripts/fetch-model.sh !!!!!!!!!!\n", path.display());
        assert!(std::env::var_os("GEMMA_REQUIRE_REAL_MODEL").is_none(), "the real model is required (GEMMA_REQUIRE_REAL_MODEL is set)");
        return None;
    }
    Some(Arc::new(Gemma::load(&path).unwrap()))
}

/// Collect a request's tokens and its summary.
fn collect(mut h: gemma_engine::Handle) -> (Vec<u32>, String, gemma_engine::Summary) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    while let Some(ev) = h.events.blocking_recv() {
        match ev {
            Event::Prompt(_) => {}
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
    let engine = Engine::start(Arc::clone(&g), EngineConfig { max_batch: 8, prefill_chunk: chunk, ..EngineConfig::default() }).unwrap();
    let mk = |p: &Vec<u32>| {
        let mut r = Request::new(p.clone(), steps, g.stop_ids());
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

/// Gemma 3n and 4: KV-sharing layers, per-layer embeddings, AltUp
/// streams, LAuReL, activation sparsity and MoE expert dispatch in mixed
/// batches give what each sequence gives alone.
#[test]
fn gemma4_outputs_do_not_depend_on_the_batch() {
    for name in ["tiny-gemma4", "tiny-gemma4-moe", "tiny-gemma3n"] {
        let g = Arc::new(Gemma::load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)).unwrap());
        batch_invariance(g, 12, 3);
    }
}

#[test]
fn real_model_outputs_do_not_depend_on_the_batch() {
    let Some(g) = real_model() else { return };
    batch_invariance(g, 8, 4);
}

/// A request alone in the engine generates what `Gemma::generate` does (the
/// prompt fits one prefill chunk, so the kernels are the same).
#[test]
fn engine_equals_the_library_generate() {
    let g = tiny();
    let engine = Engine::start(Arc::clone(&g), EngineConfig::default()).unwrap();
    for p in prompts(&g) {
        let mut req = g.request(&p);
        req.max_new_tokens = 10;
        req.params = SamplingParams { temperature: 0.8, top_k: 20, seed: 7, ..SamplingParams::default() };
        let want = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
        let mut r = Request::new(p.clone(), 10, g.stop_ids());
        r.params = req.params.clone();
        let (ids, text, s) = collect(engine.submit(r).unwrap());
        assert_eq!(ids.iter().filter(|id| !g.stop_ids().contains(id)).copied().collect::<Vec<_>>(), want.tokens);
        assert_eq!(text, want.text);
        assert_eq!(s.prompt_tokens, p.len());
    }
}

/// Regression (lost text): text held back because it might start a stop
/// string is released when generation ends for another reason — in the
/// library and in the engine, and the two agree.
#[test]
fn held_back_text_is_released_when_generation_ends_otherwise() {
    let g = tiny();
    let engine = Engine::start(Arc::clone(&g), EngineConfig::default()).unwrap();
    for p in prompts(&g) {
        let mut req = g.request(&p);
        req.max_new_tokens = 12;
        req.stop_ids.clear();
        let plain = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
        let Some(last) = plain.text.chars().last() else { continue };
        // A stop string that starts with the text's last character and never completes.
        req.stop_strings = vec![format!("{last}\u{7}ZQ")];
        let mut streamed = String::new();
        let held = g.generate(&mut g.new_session(), &req, &mut |t| {
            streamed.push_str(t);
            true
        })
        .unwrap();
        assert_eq!(held.finish, FinishReason::Length);
        assert_eq!(held.text, plain.text, "library: kept text");
        assert_eq!(streamed, plain.text, "library: streamed text");
        let (_, text, s) = collect(engine.submit(req.clone()).unwrap());
        assert_eq!(s.finish, FinishReason::Length);
        assert_eq!(text, plain.text, "engine: held-back tail lost");
    }
}

/// Prompt scores from the engine are the log-softmax of `forward`'s logits
/// at the previous position, with the argmax among the alternatives; the
/// first token has none; `max_new_tokens = 0` scores without generating.
#[test]
fn prompt_scores_equal_the_forward_pass() {
    let g = tiny();
    let engine = Engine::start(Arc::clone(&g), EngineConfig { prefill_chunk: 3, ..EngineConfig::default() }).unwrap();
    let p = g.encode_prompt("a b c d e f g h i j k l m n o p").unwrap();
    let vocab = g.model.config.vocab_size;
    let logits = g.model.forward(&p, &mut g.model.new_cache(), gemma::LogitsMode::All).unwrap();
    for (from, max_new) in [(0, 0), (1, 3), (5, 0)] {
        let mut r = Request::new(p.clone(), max_new, g.stop_ids());
        r.prompt_logprobs_from = Some(from);
        r.top_logprobs = 2;
        let mut h = engine.submit(r).unwrap();
        let mut scores = None;
        let mut generated = 0;
        while let Some(ev) = h.events.blocking_recv() {
            match ev {
                Event::Prompt(s) => scores = Some(s),
                Event::Token(_) => generated += 1,
                Event::Done(_) => break,
                Event::Error(e) => panic!("{e}"),
            }
        }
        let scores = scores.expect("a Prompt event");
        assert_eq!(generated, max_new);
        assert_eq!(scores.len(), p.len() - from);
        for (k, sc) in scores.iter().enumerate() {
            let i = from + k;
            assert_eq!(sc.id, p[i]);
            if i == 0 {
                assert_eq!(sc.logprob, None);
                continue;
            }
            let row = &logits[(i - 1) * vocab..i * vocab];
            let lse = gemma_generate::log_sum_exp(row);
            let want = row[p[i] as usize] - lse;
            let got = sc.logprob.unwrap();
            assert!((got - want).abs() < 1e-4, "position {i}: {got} vs {want}");
            assert_eq!(sc.top.len(), 2);
            assert_eq!(sc.top[0].id, gemma_generate::sampling::argmax(row));
        }
    }
    // Scoring only a prompt that is not asked to be scored is refused.
    assert!(matches!(engine.submit(Request::new(p.clone(), 0, g.stop_ids())), Err(SubmitError::Invalid(m)) if m.contains("max_new_tokens")));
}

/// A prefill chunk longer than one forward step holds (the sliding-window
/// ring's slack) is refused at start instead of corrupting the cache.
#[test]
fn prefill_chunks_outside_one_step_are_refused() {
    for chunk in [0, gemma_model::MAX_CHUNK + 1, 4096] {
        let e = Engine::start(tiny(), EngineConfig { prefill_chunk: chunk, ..EngineConfig::default() }).unwrap_err();
        assert!(e.to_string().contains("prefill_chunk"), "{e}");
    }
}

/// Regression (silent wrong output): a prompt several times the sliding
/// window, prefilled in chunks of any allowed size, alone or beside another
/// sequence, continues exactly as `Gemma::generate` continues it.
#[test]
fn real_model_long_prompt_with_any_chunk_equals_generate() {
    let Some(g) = real_model() else { return };
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/llama_cpp/ppl_long.txt")).unwrap();
    let mut end = 9000;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let p = g.encode_prompt(&text[..end]).unwrap();
    assert!(p.len() > 3 * 512, "{} tokens", p.len());
    let mut req = g.request(&p);
    req.max_new_tokens = 16;
    req.params = SamplingParams::greedy();
    let want = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
    for chunk in [7, 128, 512] {
        let engine = Engine::start(Arc::clone(&g), EngineConfig { prefill_chunk: chunk, ..EngineConfig::default() }).unwrap();
        let (ids, text, _) = collect(engine.submit(req.clone()).unwrap());
        assert_eq!(text, want.text, "chunk {chunk}, alone");
        assert_eq!(ids.iter().filter(|id| !g.stop_ids().contains(id)).copied().collect::<Vec<_>>(), want.tokens);
        let other = engine.submit(Request::new(g.encode_prompt("Hello").unwrap(), 40, g.stop_ids())).unwrap();
        let (_, text, _) = collect(engine.submit(req.clone()).unwrap());
        assert_eq!(text, want.text, "chunk {chunk}, in a batch");
        collect(other);
    }
}

#[test]
fn dropping_a_handle_cancels_and_frees_the_slot() {
    let g = tiny();
    let engine = Engine::start(Arc::clone(&g), EngineConfig { max_batch: 1, ..EngineConfig::default() }).unwrap();
    let p = g.encode_prompt("Hello").unwrap();
    let mut long = Request::new(p.clone(), 200, g.stop_ids());
    long.stop_ids.clear();
    let mut h = engine.submit(long).unwrap();
    // First token arrives, then the client goes away.
    assert!(matches!(h.events.blocking_recv(), Some(Event::Token(_))));
    let steps_before = engine.stats().steps.load(std::sync::atomic::Ordering::SeqCst);
    drop(h);
    // The single slot is free again at once: a new request completes, and
    // the cancelled one did not run its 200 steps first.
    let (_, _, s) = collect(engine.submit(Request::new(p, 3, g.stop_ids())).unwrap());
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
    )
    .unwrap();
    let p = g.encode_prompt("Hello").unwrap();
    let too_long = Request::new(vec![2; 9], 1, g.stop_ids());
    assert!(matches!(engine.submit(too_long), Err(SubmitError::Invalid(m)) if m.contains("max_input_tokens")));
    let too_much = Request::new(p.clone(), 100, g.stop_ids());
    assert!(matches!(engine.submit(too_much), Err(SubmitError::Invalid(m)) if m.contains("max_total_tokens")));
    let mut bad = Request::new(p.clone(), 2, g.stop_ids());
    bad.params.top_p = 0.0;
    assert!(matches!(engine.submit(bad), Err(SubmitError::Invalid(m)) if m.contains("top_p")));
    let oov = Request::new(vec![2, 99_999], 2, g.stop_ids());
    assert!(matches!(engine.submit(oov), Err(SubmitError::Invalid(m)) if m.contains("vocabulary")));
    // Fill the queue: one runs, two wait, the next is refused.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        let mut r = Request::new(p.clone(), 10, g.stop_ids());
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

#[test]
fn embedding_requests_are_batched_and_equal_the_library() {
    let g = Arc::new(Gemma::load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-embeddinggemma")).unwrap());
    let engine = Arc::new(Engine::start(Arc::clone(&g), EngineConfig::default()).unwrap());
    let sets: Vec<Vec<String>> = (0..6).map(|r| (0..=r).map(|i| format!("text {i} of request {r}: {}", "word ".repeat(i * 3))).collect()).collect();
    let opts = gemma::EmbedOptions::default();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    // All requests queued at once, so the engine packs them together.
    let handles: Vec<_> = sets.iter().map(|t| engine.embed(g.embed_inputs(t, &opts).unwrap(), None).unwrap()).collect();
    for (texts, h) in sets.iter().zip(handles) {
        let got = rt.block_on(h.wait()).unwrap();
        let want = g.embed(texts, &opts).unwrap();
        assert_eq!(got.len(), texts.len());
        for (a, b) in got.iter().zip(&want) {
            let worst = a.values.iter().zip(&b.values).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-6, "{worst}");
        }
    }
    // Matryoshka truncation per request, mixed in one queue.
    let t = vec!["alpha".to_string(), "beta".to_string()];
    let h16 = engine.embed(g.embed_inputs(&t, &opts).unwrap(), Some(16)).unwrap();
    let hall = engine.embed(g.embed_inputs(&t, &opts).unwrap(), None).unwrap();
    assert!(rt.block_on(h16.wait()).unwrap().iter().all(|e| e.values.len() == 16));
    assert!(rt.block_on(hall.wait()).unwrap().iter().all(|e| e.values.len() == 48));
    // A dropped request is cancelled; the engine goes on.
    drop(engine.embed(g.embed_inputs(&t, &opts).unwrap(), None).unwrap());
    assert_eq!(rt.block_on(engine.embed(g.embed_inputs(&t, &opts).unwrap(), None).unwrap().wait()).unwrap().len(), 2);
    assert!(matches!(engine.embed(vec![], None), Err(SubmitError::Invalid(_))));
    assert!(matches!(engine.embed(vec![vec![2, 999_999]], None), Err(SubmitError::Invalid(m)) if m.contains("999999")));
    assert_eq!(engine.stats().queued.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A generated token: id, log-probability bits, alternatives (id, bits).
type TokenBits = (u32, Option<u32>, Vec<(u32, u32)>);
/// A scored prompt token: id, log-probability bits.
type PromptBits = (u32, Option<u32>);

/// Everything a request returns that could differ: tokens, their
/// log-probabilities and alternatives, the prompt's scores, and the
/// reused prompt tokens.
fn full_output(engine: &Engine, req: Request) -> (Vec<TokenBits>, Vec<PromptBits>, usize) {
    let mut h = engine.submit(req).unwrap();
    let (mut toks, mut prompt) = (Vec::new(), Vec::new());
    while let Some(ev) = h.events.blocking_recv() {
        match ev {
            Event::Prompt(p) => prompt = p.iter().map(|s| (s.id, s.logprob.map(f32::to_bits))).collect(),
            Event::Token(t) => toks.push((t.id, t.logprob.map(f32::to_bits), t.top.iter().map(|a| (a.id, a.logprob.to_bits())).collect())),
            Event::Done(s) => return (toks, prompt, s.cached_tokens),
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
    panic!("event stream ended without Done");
}

/// Prefix reuse (on by default) answers bit for bit as without it: shared
/// system prompts, a conversation growing turn by turn, an exact repeat,
/// sampled answers and prompt scoring; the reused share is reported.
fn prefix_reuse_is_invisible(g: Arc<Gemma>, chunk: usize) {
    let on = Engine::start(Arc::clone(&g), EngineConfig { prefill_chunk: chunk, ..EngineConfig::default() }).unwrap();
    let off = Engine::start(Arc::clone(&g), EngineConfig { prefill_chunk: chunk, prefix_cache_bytes: 0, ..EngineConfig::default() }).unwrap();
    let system = "You are a careful assistant. Answer in one short sentence and never use lists. ";
    let mut turns = vec![format!("{system}User: what is a fox?")];
    for k in 0..3 {
        let last = turns.last().unwrap().clone();
        turns.push(format!("{last} Model: an animal. User: and number {k}?"));
    }
    turns.push(format!("{system}User: something else entirely, please."));
    turns.push(turns[2].clone());
    let mut reused = 0;
    for (i, text) in turns.iter().enumerate() {
        let p = g.encode_prompt(text).unwrap();
        let mut r = Request::new(p.clone(), 6, g.stop_ids());
        r.stop_ids.clear();
        r.logprobs = true;
        r.top_logprobs = 3;
        if i % 2 == 1 {
            r.params = SamplingParams { temperature: 0.9, top_k: 40, seed: 7 + i as u64, ..SamplingParams::default() };
        }
        if i == 3 {
            r.prompt_logprobs_from = Some(p.len() / 2);
        }
        let (a, pa, cached) = full_output(&on, r.clone());
        let (b, pb, none) = full_output(&off, r);
        assert_eq!(a, b, "turn {i}: output differs with prefix reuse ({cached} cached tokens)");
        assert_eq!(pa, pb, "turn {i}: prompt scores differ with prefix reuse");
        assert_eq!(none, 0);
        assert_eq!(cached % chunk, 0);
        assert!(cached < p.len());
        if i > 0 {
            assert!(cached > 0, "turn {i} of {} tokens reused nothing", p.len());
        }
        reused += cached;
    }
    assert!(on.stats().cached_tokens.load(std::sync::atomic::Ordering::SeqCst) as usize == reused);
    assert!(on.stats().prefix_cache_bytes.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

#[test]
fn prefix_reuse_answers_exactly_as_without_it() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    for name in ["tiny-gemma3", "tiny-gemma2", "tiny-gemma4", "tiny-gemma3n"] {
        let g = Arc::new(Gemma::load(dir.join(name)).unwrap());
        for chunk in [1, 4] {
            prefix_reuse_is_invisible(Arc::clone(&g), chunk);
        }
    }
}

#[test]
fn real_model_prefix_reuse_answers_exactly_as_without_it() {
    let Some(g) = real_model() else { return };
    prefix_reuse_is_invisible(g, 16);
}

/// Image requests in a batch: encoded by the scheduler between steps while
/// text requests decode, prefilled in chunks that never split an image's
/// run, and answered as the library answers them alone (with several
/// prefill chunk sizes, the image run crossing chunk boundaries); a request
/// whose images overlap or leave the prompt is refused before any work.
#[test]
fn image_requests_share_the_batch() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma3-vision");
    let g = Arc::new(Gemma::load(&dir).unwrap());
    let read = |n: &str| std::fs::read(dir.join("images").join(n)).unwrap();
    let messages = serde_json::json!([{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Describe both images in detail."}]}]);
    let text = g.tokenizer.apply_chat_template_kwargs(&messages, None, true, &serde_json::Map::new()).unwrap();
    let prepare = || vec![g.prepare_image(&read("rgb_50x30.png"), "a", false).unwrap(), g.prepare_image(&read("photo_120x80.jpg"), "b", true).unwrap()];
    let first = prepare();
    let slots: Vec<gemma::vision::ImageSlot> = first.iter().map(|im| im.slot()).collect();
    let (prompt, places) = g.image_prompt(&text, &slots).unwrap();
    let mk = |p: &[u32]| {
        let mut r = g.request(p);
        r.params = SamplingParams::greedy();
        r.max_new_tokens = 12;
        r.stop_ids.clear();
        r
    };
    // The library alone (a session, the whole prompt in one forward).
    let encoded: Vec<_> = prepare().into_iter().map(|mut im| {
        while !g.encode_step(&mut im).unwrap() {}
        im.encoded().unwrap()
    }).collect();
    let mut alone = mk(&prompt);
    alone.media = gemma::vision::place_media(&places, &encoded, g.model.config.hidden_size).unwrap();
    let want = g.generate(&mut g.new_session(), &alone, &mut |_| true).unwrap().tokens;
    let texts: Vec<Vec<u32>> = prompts(&g);
    for chunk in [3, 5, 16, 128] {
        let engine = Engine::start(Arc::clone(&g), EngineConfig { prefill_chunk: chunk, prefix_cache_bytes: 0, ..EngineConfig::default() }).unwrap();
        let text_handles: Vec<_> = texts.iter().map(|p| engine.submit(mk(p)).unwrap()).collect();
        let h = engine.submit_images(mk(&prompt), prepare(), places.clone()).unwrap();
        assert_eq!(collect(h).0, want, "prefill chunk {chunk}");
        for h in text_handles {
            collect(h);
        }
    }
    // Runs outside the prompt or overlapping are refused at submit.
    let engine = Engine::start(Arc::clone(&g), EngineConfig::default()).unwrap();
    let mut moved = places.clone();
    moved[0].at = prompt.len() - 2;
    let e = engine.submit_images(mk(&prompt), prepare(), moved).unwrap_err();
    assert!(matches!(&e, SubmitError::Invalid(m) if m.contains("inside the prompt")), "{e}");
    let mut overlapping = places.clone();
    overlapping[1].at = overlapping[0].at + 1;
    let e = engine.submit_images(mk(&prompt), prepare(), overlapping).unwrap_err();
    assert!(matches!(&e, SubmitError::Invalid(m) if m.contains("overlap")), "{e}");
    let e = engine.submit_images(mk(&prompt), prepare()[..1].to_vec(), places.clone()).unwrap_err();
    assert!(matches!(&e, SubmitError::Invalid(_)), "{e}");
}

// ---- speculative decoding inside the continuous batch: a sequence verifying
// drafts beside plain decode steps and prefill chunks of others gets exactly
// the tokens plain decoding gives it alone (greedy and seeded sampling), and
// so do the others; drafted and accepted counts reach the summary and the
// engine's counters.

fn load_fixture(name: &str) -> Arc<Gemma> {
    Arc::new(Gemma::load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)).unwrap())
}

/// Requests (repetitive prompts, so prompt lookup finds drafts), each run
/// plain and alone through `Gemma::generate`, then all at once in the
/// engine with speculation on for some of them: every output equals. (Each
/// prompt is prefilled in one chunk, as `generate` does: a prompt cut in
/// other chunks rounds differently, which sampling may notice.)
fn check(g: Arc<Gemma>, sampled: bool, what: &str) {
    let units = ["1 2 3 4 5 6 7 8 9 10", "The cat sat on the mat. The cat sat on the mat.", "a b c d e f a b c d e f", "Hello world, hello world"];
    let engine = Engine::start(Arc::clone(&g), EngineConfig { max_batch: 8, ..EngineConfig::default() }).unwrap();
    let mut reqs = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let prompt = g.encode_prompt(&format!("{u} {u} {u}")).unwrap();
        let mut r = Request::new(prompt, 20, Vec::new());
        if sampled {
            r.params = SamplingParams { temperature: 0.8, top_k: 30, seed: 5 + i as u64, repetition_penalty: 1.05, ..SamplingParams::default() };
        }
        reqs.push(r);
    }
    let plain: Vec<gemma::Generation> = reqs.iter().map(|r| g.generate(&mut g.new_session(), r, &mut |_| true).unwrap()).collect();
    // Speculation on the even ones (n-gram) and a prediction on one; the odd ones plain.
    let mut handles = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let mut r = r.clone();
        if i % 2 == 0 {
            r.speculation = Speculation { mode: SpecMode::Ngram, draft_max: 6, prediction: if i == 2 { plain[i].tokens.clone() } else { Vec::new() }, draft_model: None };
        }
        handles.push(engine.submit(r).unwrap());
    }
    let mut accepted = 0;
    for (i, h) in handles.into_iter().enumerate() {
        let (ids, text, s) = collect(h);
        assert_eq!((&ids, &text), (&plain[i].tokens, &plain[i].text), "{what}: request {i} differs from plain decoding");
        if i % 2 == 1 {
            assert_eq!(s.drafted_tokens, 0);
        }
        accepted += s.accepted_tokens;
        eprintln!("{what}: request {i}: {} drafted, {} accepted, {} tokens", s.drafted_tokens, s.accepted_tokens, ids.len());
    }
    assert_eq!(engine.stats().accepted_tokens.load(std::sync::atomic::Ordering::SeqCst), accepted as u64);
    if !sampled {
        assert!(accepted > 0, "{what}: nothing accepted (the prediction alone should be)");
    }
}

#[test]
fn speculation_in_the_batch_equals_plain_decoding() {
    for name in ["tiny-gemma3", "tiny-gemma4", "tiny-gemma4-moe", "tiny-gemma3n"] {
        check(load_fixture(name), false, &format!("{name} greedy"));
        check(load_fixture(name), true, &format!("{name} sampled"));
    }
}

/// Greedy requests on `g` in one engine, the even ones with `spec`:
/// each output equals plain decoding; returns each request's summary.
fn speculation_in_the_batch(g: Arc<Gemma>, spec: Speculation) -> Vec<gemma_engine::Summary> {
    let engine = Engine::start(Arc::clone(&g), EngineConfig::default()).unwrap();
    let reqs: Vec<Request> = prompts(&g).iter().map(|p| {
        let mut r = Request::new(p.clone(), 16, Vec::new());
        r.params = SamplingParams::greedy();
        r
    }).collect();
    let plain: Vec<gemma::Generation> = reqs.iter().map(|r| g.generate(&mut g.new_session(), r, &mut |_| true).unwrap()).collect();
    let handles: Vec<_> = reqs.iter().enumerate().map(|(i, r)| {
        let mut r = r.clone();
        if i % 2 == 0 {
            r.speculation = spec.clone();
        }
        engine.submit(r).unwrap()
    }).collect();
    handles.into_iter().enumerate().map(|(i, h)| {
        let (ids, _, s) = collect(h);
        assert_eq!(ids, plain[i].tokens, "request {i}");
        assert_eq!(s.drafted_tokens > 0, i % 2 == 0, "request {i}: {s:?}");
        s
    }).collect()
}

/// A draft model in the batch: each sequence keeps its own cache of the
/// drafter; outputs equal plain decoding, and a model drafting for itself
/// has every greedy draft accepted.
#[test]
fn draft_model_in_the_batch_equals_plain_decoding() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma4");
    let g = Arc::new(Gemma::load(&dir).unwrap());
    let draft = Gemma::load(&dir).unwrap().into_draft_for(&g, 0).unwrap();
    let spec = Speculation { mode: SpecMode::Draft, draft_max: 4, prediction: Vec::new(), draft_model: Some(draft) };
    for (i, s) in speculation_in_the_batch(g, spec).iter().enumerate() {
        assert_eq!(s.accepted_tokens, s.drafted_tokens, "request {i}: the model drafting for itself");
    }
}

/// A Gemma 4 MTP assistant in the batch: it reads each sequence's own
/// cache and the hidden state behind its last chosen row; outputs equal
/// plain decoding beside sequences without speculation.
#[test]
fn mtp_assistant_in_the_batch_equals_plain_decoding() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let g = Arc::new(Gemma::load(dir.join("tiny-gemma4")).unwrap());
    let draft = g.assistant_draft(&dir.join("tiny-gemma4-assistant-ordered")).unwrap();
    speculation_in_the_batch(g, Speculation { mode: SpecMode::Mtp, draft_max: 3, prediction: Vec::new(), draft_model: Some(draft) });
}

#[test]
fn real_model_speculation_in_the_batch_equals_plain_decoding() {
    let Some(g) = real_model() else { return };
    check(Arc::clone(&g), false, "270m greedy");
    check(g, true, "270m sampled");
}

//! Speculative decoding through `Gemma::generate`: the output (ids, text,
//! finish) is exactly plain decoding's, greedy and seeded sampling with
//! penalties, on every generation's tiny fixture and on the real 270M;
//! prompt lookup drafts are accepted where the text repeats, a prediction
//! (OpenAI's Predicted Outputs) is accepted where the output follows it,
//! and the session is left as plain decoding leaves it.

use gemma::{Gemma, GenerateRequest, SamplingParams, SpecMode, Speculation};
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn run(g: &Gemma, req: &GenerateRequest) -> gemma::Generation {
    let mut pieces = String::new();
    let out = g.generate(&mut g.new_session(), req, &mut |t| {
        pieces.push_str(t);
        true
    })
    .unwrap();
    assert_eq!(pieces, out.text, "streamed pieces");
    out
}

/// Plain and speculative runs of `req` agree; returns the speculative run.
fn same_output(g: &Gemma, req: &GenerateRequest, spec: Speculation, what: &str) -> gemma::Generation {
    let want = run(g, req);
    let mut s = req.clone();
    s.speculation = spec;
    let got = run(g, &s);
    assert_eq!((&got.tokens, &got.text, &got.finish), (&want.tokens, &want.text, &want.finish), "{what}");
    assert_eq!(want.speculation.drafted, 0);
    got
}

fn ngram(max: usize) -> Speculation {
    Speculation { mode: SpecMode::Ngram, draft_max: max, prediction: Vec::new(), draft_model: None }
}

fn check_model(g: &Gemma, prompt: &[u32], max_new: usize, what: &str) {
    let mut req = g.request(prompt);
    req.params = SamplingParams::greedy();
    req.max_new_tokens = max_new;
    req.stop_ids.clear();
    // Greedy, n-gram drafts.
    let got = same_output(g, &req, ngram(6), &format!("{what}: greedy, ngram"));
    eprintln!("{what}: ngram drafted {} accepted {} in {} verify steps for {} tokens", got.speculation.drafted, got.speculation.accepted, got.speculation.steps, got.tokens.len());
    // The plain output as the prediction: every draft is accepted.
    let plain = run(g, &req);
    let spec = Speculation { mode: SpecMode::Off, draft_max: 5, prediction: plain.tokens.clone(), draft_model: None };
    let got = same_output(g, &req, spec, &format!("{what}: greedy, prediction"));
    assert!(got.speculation.accepted * 2 >= plain.tokens.len(), "{what}: a correct prediction was mostly rejected: {:?}", got.speculation);
    assert!(got.speculation.steps < plain.tokens.len(), "{what}: no fewer forwards with a correct prediction");
    // A wrong prediction changes nothing either.
    let spec = Speculation { mode: SpecMode::Ngram, draft_max: 4, prediction: plain.tokens.iter().map(|t| (t + 1) % 200).collect(), draft_model: None };
    same_output(g, &req, spec, &format!("{what}: greedy, wrong prediction"));
    // Seeded sampling with penalties draws the same tokens.
    req.params = SamplingParams { temperature: 0.9, top_k: 40, top_p: 0.95, seed: 11, repetition_penalty: 1.1, ..SamplingParams::default() };
    req.presence_penalty = 0.3;
    same_output(g, &req, ngram(8), &format!("{what}: sampled, ngram"));
    let spec = Speculation { mode: SpecMode::Ngram, draft_max: 8, prediction: plain.tokens.clone(), draft_model: None };
    same_output(g, &req, spec, &format!("{what}: sampled, prediction"));
}

#[test]
fn speculative_output_equals_plain_decoding_on_every_generation() {
    for name in ["tiny-gemma1", "tiny-gemma2", "tiny-gemma3", "tiny-gemma3n", "tiny-gemma4", "tiny-gemma4-moe", "tiny-gemma4-unified"] {
        let g = Gemma::load(testdata(name)).unwrap();
        // A prompt that repeats itself, so n-gram drafts exist.
        let unit: Vec<u32> = (0..9).map(|i| 5 + (i * 7) % 40).collect();
        let prompt: Vec<u32> = [2u32].into_iter().chain(unit.iter().copied().cycle().take(30)).collect();
        check_model(&g, &prompt, 24, name);
    }
}

/// Stops inside an accepted draft end the output where plain decoding
/// ends it (a stop id, a stop string, the token limit), and the session
/// holds what plain decoding leaves: a next turn reuses it the same way.
#[test]
fn stops_limits_and_sessions_match_plain_decoding() {
    let g = Gemma::load(testdata("tiny-gemma3")).unwrap();
    let prompt: Vec<u32> = [2u32].into_iter().chain((0..40).map(|i| 5 + (i % 6) * 3)).collect();
    let mut req = g.request(&prompt);
    req.stop_ids.clear();
    req.max_new_tokens = 20;
    let plain = run(&g, &req);
    for cut in [1, 3, 7] {
        let mut r = req.clone();
        r.stop_ids = vec![plain.tokens[cut]];
        same_output(&g, &r, Speculation { mode: SpecMode::Ngram, draft_max: 8, prediction: plain.tokens.clone(), draft_model: None }, &format!("stop id at {cut}"));
        let mut r = req.clone();
        r.max_new_tokens = cut;
        same_output(&g, &r, Speculation { mode: SpecMode::Ngram, draft_max: 8, prediction: plain.tokens.clone(), draft_model: None }, &format!("limit {cut}"));
    }
    if plain.text.chars().count() > 6 {
        let mut r = req.clone();
        r.stop_strings = vec![plain.text.chars().skip(3).take(2).collect()];
        same_output(&g, &r, Speculation { mode: SpecMode::Ngram, draft_max: 8, prediction: plain.tokens.clone(), draft_model: None }, "stop string");
    }
    // Sessions: a second turn on the same session computes as much as after plain decoding.
    let spec = Speculation { mode: SpecMode::Ngram, draft_max: 8, prediction: plain.tokens.clone(), draft_model: None };
    let mut s_req = req.clone();
    s_req.speculation = spec;
    let (mut a, mut b) = (g.new_session(), g.new_session());
    g.generate(&mut a, &req, &mut |_| true).unwrap();
    g.generate(&mut b, &s_req, &mut |_| true).unwrap();
    assert_eq!(a.tokens, b.tokens, "the session's tokens");
    assert_eq!(a.cache.len(), b.cache.len());
    let mut next = prompt.clone();
    next.extend_from_slice(&plain.tokens);
    next.extend_from_slice(&[9, 10, 11]);
    let mut r2 = req.clone();
    r2.prompt = next;
    let x = g.generate(&mut a, &r2, &mut |_| true).unwrap();
    let y = g.generate(&mut b, &r2, &mut |_| true).unwrap();
    assert_eq!((x.tokens, x.prompt_tokens_computed), (y.tokens, y.prompt_tokens_computed));
}

/// A draft model (`SpecMode::Draft`): the model itself (every greedy
/// draft accepted), its bf16 copy and a Q8_0 copy drafting for it; outputs
/// unchanged, greedy and sampled; a draft with another tokenizer is refused.
#[test]
fn draft_models_leave_the_output_unchanged() {
    let dir = testdata("tiny-gemma3");
    let g = Gemma::load(&dir).unwrap();
    let prompt: Vec<u32> = [2u32].into_iter().chain((0..20).map(|i| 5 + (i * 3) % 17)).collect();
    let mut req = g.request(&prompt);
    req.params = SamplingParams::greedy();
    req.max_new_tokens = 24;
    req.stop_ids.clear();
    let half = g.tokenizer.vocab_size() / 2;
    for (what, dtype, vocab) in [("itself", None, 0), ("bf16", Some(gemma::DType::BF16), 0), ("q8_0", Some(gemma::DType::Q8_0), 0), ("itself, half the ids", None, half)] {
        let d = Gemma::load_with(&dir, &gemma::LoadOptions { dtype, ..Default::default() }, &mut |_, _| {}).unwrap().into_draft_for(&g, vocab).unwrap();
        let spec = Speculation { mode: SpecMode::Draft, draft_max: 5, prediction: Vec::new(), draft_model: Some(d) };
        let got = same_output(&g, &req, spec.clone(), &format!("draft {what}, greedy"));
        eprintln!("draft {what}: {:?} for {} tokens", got.speculation, got.tokens.len());
        if what == "itself" {
            assert_eq!(got.speculation.accepted, got.speculation.drafted, "the model drafting for itself: every greedy draft is right");
            assert!(got.speculation.steps * 3 < got.tokens.len() * 2);
            // With penalties: the draft penalizes as the sampler does.
            let mut penalized = req.clone();
            penalized.params.repetition_penalty = 1.5;
            (penalized.presence_penalty, penalized.frequency_penalty) = (0.5, 0.3);
            let got = same_output(&g, &penalized, spec.clone(), "draft itself, penalties");
            assert_eq!(got.speculation.accepted, got.speculation.drafted, "penalized: every greedy draft is right");
        }
        let mut sampled = req.clone();
        sampled.params = SamplingParams { temperature: 0.7, top_k: 20, seed: 9, ..SamplingParams::default() };
        same_output(&g, &sampled, spec, &format!("draft {what}, sampled"));
    }
    let other = Gemma::load(testdata("tiny-gemma1")).unwrap();
    if other.tokenizer.vocab_size() != g.tokenizer.vocab_size() {
        let e = other.into_draft_for(&g, 0).unwrap_err().to_string();
        assert!(e.contains("tokenizer"), "{e}");
    }
    let emb = Gemma::load(testdata("tiny-embeddinggemma")).unwrap();
    assert!(emb.into_draft_for(&g, 0).is_err());
}

/// Sampling with speculation follows the target's distribution: 2,000
/// seeded runs (top-k 6, temperature 1) with the model drafting greedily
/// for itself — the draft taken only when the target's own draw equals it —
/// against the exact distribution of the first two tokens that the
/// sampler hands out (`Sampler::distribution` of the target's logits),
/// by a chi-square test at p = 0.001; the draft was both taken and refused.
#[test]
fn speculative_sampling_follows_the_target_distribution() {
    let dir = testdata("tiny-gemma3");
    let g = Gemma::load(&dir).unwrap();
    let prompt: Vec<u32> = vec![2, 9, 14, 5, 21, 9];
    let params = |seed| SamplingParams { temperature: 1.0, top_k: 6, seed, ..SamplingParams::default() };
    let logits_after = |ctx: &[u32]| g.model.forward(ctx, &mut g.model.new_cache(), gemma::LogitsMode::Last).unwrap();
    let mut sampler = gemma::Sampler::new(params(0)).unwrap();
    let mut expect = std::collections::BTreeMap::new();
    for (t1, p1) in sampler.distribution(&logits_after(&prompt)) {
        let ctx: Vec<u32> = prompt.iter().copied().chain([t1]).collect();
        for (t2, p2) in sampler.distribution(&logits_after(&ctx)) {
            expect.insert((t1, t2), p1 * p2);
        }
    }
    let draft = Gemma::load(&dir).unwrap().into_draft_for(&g, 0).unwrap();
    let spec = Speculation { mode: SpecMode::Draft, draft_max: 3, prediction: Vec::new(), draft_model: Some(draft) };
    let n = 2000;
    let (mut counts, mut drafted, mut accepted) = (std::collections::BTreeMap::new(), 0, 0);
    for seed in 10_000..10_000 + n as u64 {
        let mut req = g.request(&prompt);
        req.params = params(seed);
        req.max_new_tokens = 3;
        req.stop_ids.clear();
        req.speculation = spec.clone();
        let out = run(&g, &req);
        *counts.entry((out.tokens[0], out.tokens[1])).or_insert(0usize) += 1;
        (drafted, accepted) = (drafted + out.speculation.drafted, accepted + out.speculation.accepted);
    }
    assert!(counts.keys().all(|k| expect.contains_key(k)), "a pair the distribution does not allow");
    // Bins expected 5 times or more; the rest pooled into one.
    let (mut chi2, mut bins, mut pooled) = (0.0, 0usize, (0.0, 0usize));
    for (k, &p) in &expect {
        let (e, o) = (p * n as f64, counts.get(k).copied().unwrap_or(0));
        if e >= 5.0 {
            chi2 += (o as f64 - e).powi(2) / e;
            bins += 1;
        } else {
            pooled = (pooled.0 + e, pooled.1 + o);
        }
    }
    if pooled.0 > 0.0 {
        chi2 += (pooled.1 as f64 - pooled.0).powi(2) / pooled.0;
        bins += 1;
    }
    // The chi-square's 0.999 quantile (Wilson–Hilferty).
    let df = (bins - 1) as f64;
    let crit = df * (1.0 - 2.0 / (9.0 * df) + 3.09 * (2.0 / (9.0 * df)).sqrt()).powi(3);
    eprintln!("chi2 {chi2:.1} over {bins} bins (critical {crit:.1}); drafts {accepted}/{drafted} taken");
    assert!(chi2 < crit, "chi2 {chi2:.1} >= {crit:.1} over {bins} bins");
    assert!(accepted > 0 && accepted < drafted, "{accepted} of {drafted} drafts taken");
}

/// A draft model scoring part of its vocabulary — the first ids, the
/// single characters and bytes after them, and every id of the context —
/// drafts the argmax of those ids in its full logits, token after token
/// (its head's input is the full forward's, bit for bit), on a soft-capped
/// Gemma 2 and a Gemma 3, the cached prefix reused after partly rejected
/// drafts; with penalties, the argmax of the penalized logits.
#[test]
fn a_draft_vocabulary_drafts_the_argmax_of_the_ids_it_scores() {
    for (name, penalty) in [("tiny-gemma2", 1.0), ("tiny-gemma3", 1.0), ("tiny-gemma3", 1.4)] {
        let dir = testdata(name);
        let g = Gemma::load(&dir).unwrap();
        let vocab = g.tokenizer.vocab_size();
        let n = vocab / 3;
        let single = |i: usize| g.tokenizer.id_to_token(i as u32).is_some_and(|t| t.chars().count() == 1 || (t.len() == 6 && t.starts_with("<0x")));
        let chars: Vec<usize> = (n..vocab).filter(|&i| single(i)).collect();
        let draft = Gemma::load(&dir).unwrap().into_draft_for(&g, n).unwrap();
        let gemma::speculative::DraftModel::Model(lm) = &draft else { panic!("not a draft model") };
        assert_eq!(lm.vocab(), n + chars.len(), "{name}");
        let prompt: Vec<u32> = [2u32].into_iter().chain((0..11).map(|i| if i % 4 == 3 { (vocab - 5 - i) as u32 } else { 7 + (i as u32 * 5) % 23 })).collect();
        let penalties = gemma::speculative::DraftPenalties { repetition: penalty, prompt_len: prompt.len(), ..Default::default() };
        let mut d = gemma::speculative::Drafter::new(Speculation { mode: SpecMode::Draft, draft_max: 6, prediction: Vec::new(), draft_model: Some(draft.clone()) }).with_penalties(penalties);
        let mut context = prompt.clone();
        for round in 0..3 {
            let got = d.draft(&context, None);
            let mut want = Vec::new();
            let mut ctx = context.clone();
            while want.len() < got.len().max(1) {
                let mut logits = g.model.forward(&ctx, &mut g.model.new_cache(), gemma::LogitsMode::Last).unwrap();
                let mut seen: Vec<u32> = ctx.clone();
                seen.sort_unstable();
                seen.dedup();
                for &t in &seen {
                    let l = &mut logits[t as usize];
                    *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
                }
                let scored = |i: usize| i < n || chars.binary_search(&i).is_ok() || seen.binary_search(&(i as u32)).is_ok();
                let best = (0..vocab).filter(|&i| scored(i)).fold(0, |b, i| if logits[i] > logits[b] { i } else { b }) as u32;
                want.push(best);
                ctx.push(best);
            }
            assert_eq!(got, want, "{name}, penalty {penalty}, round {round}");
            // Take two drafted tokens and a different one, as a partly
            // rejected step leaves the context.
            context.extend_from_slice(&got[..2]);
            context.push((got[2] + 1) % n as u32);
        }
    }
}

/// Gemma 4 MTP assistants (`SpecMode::Mtp`, plain and centroid heads)
/// drafting for tiny-gemma4: outputs unchanged, greedy and sampled, with
/// a prediction searched first; an assistant for another shape is refused.
#[test]
fn mtp_assistants_leave_the_output_unchanged() {
    let g = Gemma::load(testdata("tiny-gemma4")).unwrap();
    let prompt: Vec<u32> = [2u32].into_iter().chain((0..14).map(|i| 5 + (i * 7) % 31)).collect();
    let mut req = g.request(&prompt);
    req.params = SamplingParams::greedy();
    req.max_new_tokens = 24;
    req.stop_ids.clear();
    for name in ["tiny-gemma4-assistant", "tiny-gemma4-assistant-ordered"] {
        assert!(gemma::is_assistant(&testdata(name)));
        let d = g.assistant_draft(&testdata(name)).unwrap();
        assert_eq!(d.mode(), SpecMode::Mtp);
        let spec = Speculation { mode: SpecMode::Mtp, draft_max: 4, prediction: Vec::new(), draft_model: Some(d) };
        let got = same_output(&g, &req, spec.clone(), &format!("{name}, greedy"));
        eprintln!("{name}: {:?} for {} tokens", got.speculation, got.tokens.len());
        assert!(got.speculation.drafted > 0, "{name}: the assistant drafted nothing");
        let mut sampled = req.clone();
        sampled.params = SamplingParams { temperature: 0.8, top_k: 30, seed: 5, ..SamplingParams::default() };
        same_output(&g, &sampled, spec.clone(), &format!("{name}, sampled"));
        // A correct prediction first, the assistant where it has none.
        let plain = run(&g, &req);
        let half: Vec<u32> = plain.tokens[..12].to_vec();
        let got = same_output(&g, &req, Speculation { prediction: half, ..spec }, &format!("{name}, prediction"));
        assert!(got.speculation.accepted >= 8, "{name}: {:?}", got.speculation);
    }
    assert!(!gemma::is_assistant(&testdata("tiny-gemma4")));
    let g3 = Gemma::load(testdata("tiny-gemma3")).unwrap();
    let e = g3.assistant_draft(&testdata("tiny-gemma4-assistant")).unwrap_err().to_string();
    assert!(e.contains("Gemma 4"), "{e}");
}

#[test]
fn real_model_speculative_output_equals_plain_decoding() {
    let path = gemma::hub::default_model_path();
    if !path.is_file() {
        eprintln!("\n!!!!!!!!!! SKIPPED: real model not found at {} — run scripts/fetch-model.sh !!!!!!!!!!\n", path.display());
        assert!(std::env::var_os("GEMMA_REQUIRE_REAL_MODEL").is_none(), "the real model is required (GEMMA_REQUIRE_REAL_MODEL is set)");
        return;
    }
    let g = Gemma::load(&path).unwrap();
    let text = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n    return a * b\n\ndef div(a, b):\n";
    let prompt = g.encode_prompt(text).unwrap();
    check_model(&g, &prompt, 40, "gemma-3-270m Q4_K_M");
}

//! The subcommands: argument handling and printing over the `gemma` library.

use crate::args::{
    BenchArgs, ChatArgs, Command, DetokenizeArgs, EvalArgs, GenerateArgs, InspectArgs, ModelArgs, PerplexityArgs, QuantizeArgs, SamplingArgs, ServeArgs,
    TokenizeArgs,
};
use crate::progress;
use anyhow::{bail, Context, Result};
use gemma::{ChatMessage, Gemma, GenerateRequest, LoadOptions};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run one subcommand.
pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Generate(a) => generate(a),
        Command::Chat(a) => chat(a),
        Command::Perplexity(a) => perplexity(a),
        Command::Inspect(a) => inspect(a),
        Command::Tokenize(a) => tokenize(a),
        Command::Embed(a) => embed(a),
        Command::Detokenize(a) => detokenize(a),
        Command::Quantize(a) => quantize(a),
        Command::Bench(a) => bench(a),
        Command::Synth(a) => crate::synth::synth(a),
        Command::Serve(a) => serve(a),
        Command::Eval(a) => eval(a),
        Command::Finetune(a) => crate::finetune::finetune(a),
        Command::Merge(a) => crate::finetune::merge(a),
        Command::ExportLora(a) => crate::finetune::export_lora(a),
        Command::Pull(a) => crate::pull::pull(a),
        Command::List(a) => crate::pull::list(a),
        Command::Completions(a) => crate::pull::completions(a),
    }
}

/// `(name, folder)` of each `--lora NAME=DIR`.
pub(crate) type NamedAdapters = Vec<(String, PathBuf)>;

/// `--lora` values: the one adapter applied to every request (DIR) and the
/// named ones requests pick (NAME=DIR, `gemma serve` only).
pub(crate) fn lora_args(m: &ModelArgs) -> Result<(Option<PathBuf>, NamedAdapters)> {
    let (mut plain, mut named) = (Vec::new(), Vec::new());
    for v in &m.lora {
        match v.split_once('=') {
            Some((name, dir)) if !std::path::Path::new(v).exists() && gemma_server::valid_adapter_name(name) => named.push((name.to_string(), PathBuf::from(dir))),
            _ => plain.push(PathBuf::from(v)),
        }
    }
    if plain.len() > 1 {
        bail!("--lora DIR can be given once (an adapter applied to everything); for several, name them: --lora NAME=DIR (gemma serve)");
    }
    if !plain.is_empty() && !named.is_empty() {
        bail!("give either one --lora DIR (applied to every request) or named --lora NAME=DIR adapters, not both");
    }
    Ok((plain.pop(), named))
}

pub(crate) fn load(m: &ModelArgs) -> Result<Gemma> {
    load_allowing(m, false)
}

/// [`load`]; `allow_named`: NAME=DIR adapters are the caller's to load.
fn load_allowing(m: &ModelArgs, allow_named: bool) -> Result<Gemma> {
    let (lora, named) = lora_args(m)?;
    if !named.is_empty() && !allow_named {
        bail!("--lora NAME=DIR (per-request adapters) is for gemma serve; here give --lora DIR");
    }
    let path = crate::pull::resolve(m.model.as_deref())?;
    let t0 = Instant::now();
    let pb = progress::bar("loading");
    let gemma = Gemma::load_with(&path, &LoadOptions { dtype: m.dtype, lora, hugepages: m.hugepages, mmproj: m.mmproj.clone(), image_tokens: m.image_tokens }, &mut |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })
    .with_context(|| format!("cannot load model from {}", path.display()))?;
    pb.finish_and_clear();
    let c = &gemma.model.config;
    eprintln!(
        "loaded {} ({} layers, hidden {}, weights {}) in {:.2}s",
        c.family.name(),
        c.num_layers(),
        c.hidden_size,
        gemma.weights_summary(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(v) = &gemma.vision {
        eprintln!("(vision tower loaded: {}; `--chat --image FILE`)", v.spec.describe());
    } else if c.has_towers {
        eprintln!("(the checkpoint's config names vision/audio towers this build does not load, or their weights are absent: only the text model was loaded)");
    }
    let mut gemma = gemma;
    if let Some(kind) = m.kv_type {
        gemma.model.set_kv_type(kind).context("--kv-type")?;
    }
    Ok(gemma)
}

/// The checkpoint's defaults overridden by the flags given.
/// The model `--draft` names, checked against `gemma`'s tokenizer.
pub(crate) fn load_draft(spec: &crate::args::SpecArgs, gemma: &Gemma) -> Result<Option<gemma::speculative::DraftModel>> {
    let Some(name) = spec.draft.as_deref() else { return Ok(None) };
    let path = crate::pull::resolve(Some(name))?;
    let t0 = Instant::now();
    if gemma::is_assistant(&path) {
        let d = gemma.assistant_draft(&path).with_context(|| format!("cannot use the assistant in {} as a drafter", path.display()))?;
        eprintln!("MTP assistant: {} ({d:?}) in {:.2}s", path.display(), t0.elapsed().as_secs_f64());
        return Ok(Some(d));
    }
    let d = Gemma::load(&path).with_context(|| format!("cannot load the draft model from {}", path.display()))?;
    let summary = format!("{} layers, hidden {}, weights {}", d.model.config.num_layers(), d.model.config.hidden_size, d.weights_summary());
    let d = d.into_draft_for(gemma, spec.draft_vocab)?;
    let vocab = match &d {
        gemma::speculative::DraftModel::Model(m) => m.vocab(),
        gemma::speculative::DraftModel::Assistant(_) => 0,
    };
    eprintln!("draft model: {} ({summary}; scores {vocab} ids and those of the context) in {:.2}s", path.display(), t0.elapsed().as_secs_f64());
    Ok(Some(d))
}

fn request(gemma: &Gemma, prompt: &[u32], s: &SamplingArgs, draft: Option<&gemma::speculative::DraftModel>) -> Result<GenerateRequest> {
    let mut r = gemma.request(prompt);
    let p = &mut r.params;
    if let Some(t) = s.temperature {
        p.temperature = t;
    }
    if let Some(k) = s.top_k {
        p.top_k = k;
    }
    if let Some(x) = s.top_p {
        p.top_p = x;
    }
    if let Some(x) = s.min_p {
        p.min_p = x;
    }
    if let Some(x) = s.repeat_penalty {
        p.repetition_penalty = x;
    }
    p.seed = match s.seed {
        Some(seed) => seed,
        None => {
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
            if !p.is_greedy() {
                eprintln!("seed: {seed}");
            }
            seed
        }
    };
    p.validate()?;
    if let Some(n) = s.max_tokens {
        r.max_new_tokens = n;
    }
    r.stop_strings = s.stop.clone();
    r.speculation.mode = s.spec.mode(draft).map_err(anyhow::Error::msg)?;
    r.speculation.draft_max = s.spec.draft_max;
    r.speculation.draft_model = draft.cloned();
    if let Some(f) = &s.prediction_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read prediction file {} (it must be UTF-8 text)", f.display()))?;
        r.speculation.prediction = gemma.tokenizer.encode(&text, false)?;
    }
    Ok(r)
}

/// Stream a generation to stdout; returns the generated text.
fn stream(gemma: &Gemma, session: &mut gemma::Session, req: &GenerateRequest) -> Result<String> {
    let mut out = std::io::stdout().lock();
    let mut io_err = None;
    let t0 = Instant::now();
    let g = gemma.generate(session, req, &mut |piece| match out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => true,
        Err(e) => {
            io_err = Some(e);
            false
        }
    })?;
    if let Some(e) = io_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("cannot write to stdout");
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    eprintln!(
        "\n[{} prompt tokens ({} computed), {} generated in {:.2}s, {:.1} tok/s, finish: {:?}]",
        g.prompt_tokens,
        g.prompt_tokens_computed,
        g.tokens.len(),
        dt,
        g.tokens.len() as f64 / dt.max(1e-9),
        g.finish
    );
    let sp = g.speculation;
    if sp.steps > 0 {
        eprintln!(
            "[speculative: {} drafted, {} accepted ({:.0}%), {} tokens in {} forwards]",
            sp.drafted,
            sp.accepted,
            100.0 * sp.accepted as f64 / sp.drafted.max(1) as f64,
            g.tokens.len(),
            sp.steps + 1
        );
    }
    Ok(g.text)
}

fn generate(a: GenerateArgs) -> Result<()> {
    let prompt = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("cannot read prompt file {} (it must be UTF-8 text)", f.display()))?,
        (None, None) => bail!("give --prompt or --prompt-file"),
    };
    let gemma = load(&a.model)?;
    let mut media = Vec::new();
    let ids = if !a.image.is_empty() {
        let t0 = std::time::Instant::now();
        let images = a.image.iter().map(|p| gemma.encode_image_file(p, a.pan_and_scan)).collect::<gemma::Result<Vec<_>>>()?;
        eprintln!("encoded {} image{} in {:.2}s", images.len(), if images.len() == 1 { "" } else { "s" }, t0.elapsed().as_secs_f64());
        let mut content: Vec<serde_json::Value> = images.iter().map(|_| serde_json::json!({"type": "image"})).collect();
        content.push(serde_json::json!({"type": "text", "text": prompt}));
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(serde_json::json!({"role": "system", "content": s}));
        }
        msgs.push(serde_json::json!({"role": "user", "content": content}));
        let (ids, m) = gemma.encode_chat_images(&serde_json::Value::Array(msgs), &images, &serde_json::Map::new())?;
        media = m;
        ids
    } else if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::new("system", s));
        }
        msgs.push(ChatMessage::new("user", prompt));
        gemma.encode_chat(&msgs)?
    } else {
        gemma.encode_prompt(&prompt)?
    };
    let draft = load_draft(&a.sampling.spec, &gemma)?;
    let mut req = request(&gemma, &ids, &a.sampling, draft.as_ref())?;
    req.media = media;
    if let Some(grammar) = grammar(&a.grammar)? {
        let c = gemma.compile_grammar(&grammar)?;
        eprintln!("grammar ({}) compiled in {:.1} ms", grammar.kind(), c.compile_seconds * 1e3);
        req.constraint = Some(c);
    }
    stream(&gemma, &mut gemma.new_session(), &req)?;
    println!();
    if let Some(c) = &req.constraint {
        let n = c.counts();
        eprintln!(
            "[grammar: {} of {} steps took the model's own choice unmasked; {} full masks, {:.0} µs each on average]",
            n.skipped,
            n.checks.max(n.masks),
            n.masks,
            n.mask_seconds / n.masks.max(1) as f64 * 1e6
        );
    }
    Ok(())
}

/// The grammar the flags ask for, read and parsed.
fn grammar(a: &crate::args::GrammarArgs) -> Result<Option<gemma::Grammar>> {
    if let Some(f) = &a.json_schema {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read the JSON schema {}", f.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?;
        return Ok(Some(gemma::Grammar::JsonSchema(v)));
    }
    if a.json {
        return Ok(Some(gemma::Grammar::JsonObject));
    }
    if let Some(r) = &a.regex {
        return Ok(Some(gemma::Grammar::Regex(r.clone())));
    }
    if let Some(f) = &a.grammar {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read the grammar {}", f.display()))?;
        return Ok(Some(gemma::Grammar::Lark(text)));
    }
    Ok(None)
}

fn chat(a: ChatArgs) -> Result<()> {
    let gemma = load(&a.model)?;
    let draft = load_draft(&a.sampling.spec, &gemma)?;
    if gemma.tokenizer.chat_template.builtin {
        eprintln!("(the model ships no chat template: using the built-in Gemma template)");
    }
    let mut session = gemma.new_session();
    // Hugging Face-shaped messages: a user turn with images holds content parts.
    let mut history: Vec<serde_json::Value> = Vec::new();
    if let Some(s) = &a.system {
        history.push(serde_json::json!({"role": "system", "content": s}));
    }
    let base = history.clone();
    // Every image of the conversation in order, and those for the next message.
    let (mut images, mut pending) = (Vec::new(), Vec::new());
    eprintln!("chat: type a message; /reset clears the history; {}Ctrl-D exits.", if gemma.takes_images() { "/image PATH attaches an image to the next message; " } else { "" });
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read stdin (it must be UTF-8 text)")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/reset" => {
                history = base.clone();
                images.clear();
                pending.clear();
                session.reset();
                eprintln!("(history cleared)");
                continue;
            }
            "/exit" | "/quit" => break,
            _ => {}
        }
        if let Some(path) = text.strip_prefix("/image ") {
            // A bad file is reported and the chat goes on.
            match gemma.encode_image_file(std::path::Path::new(path.trim()), a.pan_and_scan) {
                Ok(im) => {
                    pending.push(im);
                    eprintln!("(image {} attached to the next message)", pending.len());
                }
                Err(e) => eprintln!("error: {e}"),
            }
            continue;
        }
        let user = if pending.is_empty() {
            serde_json::json!({"role": "user", "content": text})
        } else {
            let mut parts: Vec<serde_json::Value> = pending.iter().map(|_| serde_json::json!({"type": "image"})).collect();
            parts.push(serde_json::json!({"type": "text", "text": text}));
            images.append(&mut pending);
            serde_json::json!({"role": "user", "content": parts})
        };
        history.push(user);
        let (ids, media) = gemma.encode_chat_images(&serde_json::Value::Array(history.clone()), &images, &serde_json::Map::new())?;
        let mut req = request(&gemma, &ids, &a.sampling, draft.as_ref())?;
        req.media = media;
        let reply = stream(&gemma, &mut session, &req)?;
        println!();
        history.push(serde_json::json!({"role": "assistant", "content": reply}));
    }
    Ok(())
}

fn perplexity(a: PerplexityArgs) -> Result<()> {
    let gemma = load(&a.model)?;
    let windows = if let Some(f) = &a.file {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {} (it must be UTF-8 text)", f.display()))?;
        let ids = gemma.tokenizer.encode(&text, false)?;
        gemma::windows_with_bos(&ids, gemma.tokenizer.bos_id, a.ctx)?
    } else if let Some(f) = &a.tokens {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let ids = text
            .split_whitespace()
            .enumerate()
            .map(|(i, w)| w.parse::<u32>().with_context(|| format!("{}: item {} (`{w}`) is not a token id", f.display(), i + 1)))
            .collect::<Result<Vec<u32>>>()?;
        gemma::windows_exact(&ids, a.ctx)?
    } else {
        bail!("give --file or --tokens");
    };
    let pb = progress::bar("scoring");
    let t0 = Instant::now();
    let p = gemma::perplexity(&gemma.model, &windows, &mut |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    if a.json {
        println!("{}", serde_json::json!({"tokens": p.tokens, "nll": p.nll, "ppl": p.ppl}));
    } else {
        println!("perplexity {:.4} (mean NLL {:.6} over {} tokens, {} windows of ctx {})", p.ppl, p.nll, p.tokens, windows.len(), a.ctx);
    }
    eprintln!("scored {} tokens in {:.2}s", p.tokens, t0.elapsed().as_secs_f64());
    Ok(())
}

fn embed(a: crate::args::EmbedArgs) -> Result<()> {
    let mut texts = a.text.clone();
    if let Some(f) = &a.file {
        let body = std::fs::read_to_string(f).with_context(|| format!("cannot read {} (it must be UTF-8 text)", f.display()))?;
        texts.extend(body.lines().filter(|l| !l.trim().is_empty()).map(String::from));
    }
    if texts.is_empty() {
        bail!("nothing to embed: give --text or a --file with lines");
    }
    let gemma = load(&a.model)?;
    if !gemma.is_embedding_model() {
        eprintln!("(not an embedding model: mean-pooled, normalized hidden states of a causal model)");
    }
    let opts = gemma::EmbedOptions { prompt_name: a.prompt_name.clone(), dimensions: a.dimensions, ..Default::default() };
    let t0 = std::time::Instant::now();
    let out = gemma.embed(&texts, &opts)?;
    let mut stdout = std::io::stdout().lock();
    if a.json {
        let all: Vec<&Vec<f32>> = out.iter().map(|e| &e.values).collect();
        writeln!(stdout, "{}", serde_json::to_string(&all)?)?;
    } else {
        for e in &out {
            writeln!(stdout, "{}", e.values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" "))?;
        }
    }
    let tokens: usize = out.iter().map(|e| e.tokens).sum();
    eprintln!("[{} texts, {tokens} tokens, {} dimensions, {:.2}s]", out.len(), out.first().map_or(0, |e| e.values.len()), t0.elapsed().as_secs_f64());
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    if a.variants {
        return inspect_variants();
    }
    let gemma = load(&a.model)?;
    let c = &gemma.model.config;
    let w = &gemma.model.weights;
    let name = gemma::variants::identify(c)
        .map(|v| format!("{} {}", v.family.name(), v.size))
        .unwrap_or_else(|| format!("{} (custom size)", c.family.name()));
    let mut out = std::io::stdout().lock();
    writeln!(out, "model:            {name}")?;
    writeln!(out, "architecture:     {}", c.architecture)?;
    writeln!(out, "layers:           {}", c.num_layers())?;
    writeln!(out, "hidden size:      {}", c.hidden_size)?;
    if c.layers.iter().any(|l| l.intermediate_size != c.layers[0].intermediate_size) {
        writeln!(out, "intermediate:     {} (per layer)", c.layers.iter().map(|l| l.intermediate_size.to_string()).collect::<Vec<_>>().join(" "))?;
    } else {
        writeln!(out, "intermediate:     {}", c.layers.first().map_or(c.intermediate_size, |l| l.intermediate_size))?;
    }
    writeln!(out, "heads:            {} query, {} key/value, head dim {}", c.num_heads, c.num_kv_heads, c.head_dim)?;
    if let Some(g) = c.layers.iter().find(|l| l.head_dim != c.head_dim || l.num_kv_heads != c.num_kv_heads) {
        writeln!(out, "global layers:    {} key/value, head dim {}{}, RoPE on {:.0}% of pairs", g.num_kv_heads, g.head_dim, if g.k_eq_v { ", values = keys" } else { "" }, g.rope_partial * 100.0)?;
    }
    let shared: Vec<String> = c.layers.iter().enumerate().filter_map(|(l, s)| s.kv_source.map(|src| format!("{l}←{src}"))).collect();
    if !shared.is_empty() {
        writeln!(out, "shared KV:        {}", shared.join(" "))?;
    }
    if c.per_layer_input_size > 0 {
        writeln!(out, "per-layer embeds: {} per layer", c.per_layer_input_size)?;
    }
    if let Some(a) = c.altup {
        writeln!(out, "AltUp:            {} streams, active {}, LAuReL rank {}", a.streams, a.active, c.laurel_rank)?;
    }
    let sparse: Vec<String> = c.layers.iter().enumerate().filter(|(_, l)| l.gate_sparsity_k.is_some()).map(|(i, _)| i.to_string()).collect();
    if !sparse.is_empty() {
        writeln!(out, "gate sparsity:    layers {}", sparse.join(" "))?;
    }
    if let Some(m) = c.moe {
        writeln!(out, "experts:          {} per layer, top {}, width {} (beside the dense MLP)", m.experts, m.top_k, m.intermediate_size)?;
    }
    if let Some(v) = &gemma.vision {
        writeln!(out, "vision tower:     {}", v.spec.describe())?;
    } else if c.has_towers {
        writeln!(out, "towers:           vision/audio towers in the config are not loaded (text only)")?;
    }
    writeln!(out, "vocabulary:       {} (tokenizer: {})", c.vocab_size, gemma.tokenizer.vocab_size())?;
    writeln!(out, "context:          {}", c.max_position_embeddings)?;
    writeln!(out, "layer pattern:    {}", c.layers.iter().map(|l| l.attention.letter()).collect::<String>())?;
    for (kind, layer) in
        [("global", c.layers.iter().find(|l| !l.attention.is_sliding())), ("local", c.layers.iter().find(|l| l.attention.is_sliding()))]
    {
        if let Some(l) = layer {
            let window = match l.attention {
                gemma::AttentionKind::Sliding { window } => format!(", window {window}"),
                gemma::AttentionKind::Global => String::new(),
            };
            writeln!(out, "rope ({kind}):     theta {}, linear factor {}{window}", l.rope_theta, l.rope_linear_factor)?;
        }
    }
    writeln!(out, "attention scale:  {}", c.attn_scale)?;
    writeln!(out, "softcaps:         attention {:?}, final {:?}", c.attn_softcap, c.final_softcap)?;
    writeln!(out, "embedding scale:  {}", c.embed_scale)?;
    writeln!(out, "norms:            {}{}", if c.sandwich_norms { "pre+post (sandwich)" } else { "pre" }, if c.qk_norm { ", qk-norm" } else { "" })?;
    writeln!(out, "tied output head: {}", w.lm_head.is_none())?;
    writeln!(out, "weights:          {} (config dtype: {})", gemma.weights_summary(), c.dtype.map_or("unset".into(), |d| d.to_string()))?;
    writeln!(out, "embedding dtype:  {}", w.dtype())?;
    writeln!(out, "parameters:       {} ({:.1}M)", w.parameter_count(), w.parameter_count() as f64 / 1e6)?;
    writeln!(out, "weight bytes:     {} ({:.1} MiB)", w.bytes(), w.bytes() as f64 / (1 << 20) as f64)?;
    writeln!(out, "chat template:    {}", if gemma.tokenizer.chat_template.builtin { "built-in Gemma" } else { "from the model" })?;
    writeln!(out, "stop ids:         {:?}", gemma.stop_ids())?;
    Ok(())
}

/// `gemma inspect --variants`: the published sizes, from their configs.
fn inspect_variants() -> Result<()> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mut out = std::io::stdout().lock();
    writeln!(out, "| model | --variant | layers | hidden | parameters | bf16 | q8_0 | q4_k |")?;
    writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for v in gemma::variants::VARIANTS {
        let c = v.parse()?;
        let n = c.parameter_count();
        writeln!(
            out,
            "| {} {} | {} | {} | {} | {:.2}B | {:.2} GiB | {:.2} GiB | {:.2} GiB |",
            v.family.name(),
            v.size,
            gemma::synth::slug(v),
            v.num_layers,
            v.hidden_size,
            n as f64 / 1e9,
            gib(c.weight_bytes(gemma::DType::BF16)),
            gib(c.weight_bytes(gemma::DType::Q8_0)),
            gib(c.weight_bytes(gemma::DType::Q4_K)),
        )?;
    }
    writeln!(out, "\n(--variant: the name `gemma synth` and `gemma bench --variant` take.)")?;
    writeln!(out, "\n(text models only; every parameter at that type, weights alone: add the KV cache and activations. A Q4_K_M file is larger than the q4_k column:\n llama.cpp keeps some matrices at Q6_K and the embedding at Q6_K or Q8_0, which dominates small models.)")?;
    Ok(())
}

fn read_text(text: &Option<String>, file: &Option<std::path::PathBuf>) -> Result<String> {
    match (text, file) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("cannot read {} (it must be UTF-8 text)", f.display())),
        (None, None) => bail!("give the input inline or with --file"),
    }
}

fn tokenize(a: TokenizeArgs) -> Result<()> {
    let text = read_text(&a.text, &a.file)?;
    let gemma = load(&a.model)?;
    let ids = gemma.encode_prompt(&text)?;
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        let words: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", words.join(" "));
    }
    Ok(())
}

fn detokenize(a: DetokenizeArgs) -> Result<()> {
    let raw = read_text(&a.ids, &a.file)?;
    let ids = raw
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| !w.is_empty())
        .map(|w| w.parse::<u32>().with_context(|| format!("`{w}` is not a token id")))
        .collect::<Result<Vec<u32>>>()?;
    let gemma = load(&a.model)?;
    let text = if a.keep_special { gemma.tokenizer.decode(&ids, false)? } else { gemma.tokenizer.decode_text(&ids)? };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}

fn quantize(a: QuantizeArgs) -> Result<()> {
    let plan = gemma::quantize::QuantPlan::parse(&a.qtype)?;
    let path = crate::pull::resolve(Some(&a.model))?;
    let t0 = Instant::now();
    let pb = progress::bar("quantizing");
    let g = Gemma::load_with(&path, &LoadOptions::default(), &mut |_, _| {}).with_context(|| format!("cannot load model from {}", path.display()))?;
    let report = gemma::quantize::write_gguf(&g, &path, &plan, &a.out, &mut |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    if g.takes_images() {
        let mm = gemma::mmproj_write::default_path(&a.out);
        let bytes = gemma::mmproj_write::write_mmproj(&g, &mm, a.mmproj_type)?;
        eprintln!("wrote {} (the vision tower, {:.1} MiB, matrices {}): pass it as --mmproj", mm.display(), bytes as f64 / (1 << 20) as f64, a.mmproj_type);
    }
    eprintln!(
        "wrote {} ({:.1} MiB, {} tensors: {}) in {:.1}s",
        a.out.display(),
        report.bytes as f64 / (1 << 20) as f64,
        report.tensors,
        report.type_counts.iter().map(|(t, n)| format!("{n} {t}")).collect::<Vec<_>>().join(", "),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn bench(mut a: BenchArgs) -> Result<()> {
    let synthesized = match &a.variant {
        Some(v) => Some(crate::synth::temp_model(v, &a.qtype)?),
        None => None,
    };
    if let Some(m) = &synthesized {
        a.model.model = Some(m.path.display().to_string());
    }
    let t0 = Instant::now();
    let gemma = load(&a.model)?;
    let load_s = t0.elapsed().as_secs_f64();
    let threads = gemma_kernels::pool::global().threads();
    let mut results = Vec::new();
    let context = gemma.model.config.max_position_embeddings;
    for &d in &a.n_depth {
        for (&n, prompt) in a.n_prompt.iter().map(|n| (n, true)).chain(a.n_gen.iter().map(|n| (n, false))).filter(|(&n, _)| n > 0) {
            if d + n > context {
                bail!("depth {d} + {n} tokens is more than the model's context of {context} positions");
            }
            results.push(if prompt {
                gemma::bench::bench_prompt(&gemma, n, d, a.reps.max(1))?
            } else {
                gemma::bench::bench_gen(&gemma, n, d, a.reps.max(1))?
            });
        }
    }
    let path = gemma.path.display().to_string();
    let size = gemma.model.weights.bytes();
    let params = gemma.model.weights.parameter_count();
    let rss = gemma::bench::peak_rss_bytes();
    if a.json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                let (avg_ts, stddev_ts) = r.ts_mean_std();
                let (avg_s, stddev_s) = r.s_mean_std();
                serde_json::json!({
                    "build_commit": env!("CARGO_PKG_VERSION"),
                    "model_filename": path,
                    "model_type": format!("{} {}", gemma.model.config.family.name(), gemma.file_type.clone().unwrap_or_else(|| gemma.model.weights.dtype().to_string())),
                    "model_size": size,
                    "model_n_params": params,
                    "n_threads": threads,
                    "n_prompt": r.n_prompt,
                    "n_gen": r.n_gen,
                    "n_depth": r.n_depth,
                    "avg_ns": (avg_s * 1e9) as u64,
                    "stddev_ns": (stddev_s * 1e9) as u64,
                    "avg_ts": avg_ts,
                    "stddev_ts": stddev_ts,
                    "samples_ns": r.samples_s.iter().map(|s| (s * 1e9) as u64).collect::<Vec<_>>(),
                    "samples_ts": r.samples_ts(),
                    "load_time_s": load_s,
                    "peak_rss_bytes": rss,
                    "random_weights_of": a.variant,
                    "weight_bytes_per_token": gemma.model.weights.bytes_per_token(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    // The GGUF file type (Q4_K_M) where there is one, else the weights' dtype.
    let weights_label = gemma.file_type.clone().unwrap_or_else(|| gemma.model.weights.dtype().to_string());
    println!("| model | size | params | threads | test | t/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in &results {
        let (m, s) = r.ts_mean_std();
        let mut test = if r.n_prompt > 0 { format!("pp{}", r.n_prompt) } else { format!("tg{}", r.n_gen) };
        if r.n_depth > 0 {
            test += &format!(" @ d{}", r.n_depth);
        }
        println!(
            "| {} {} | {:.2} MiB | {:.2} M | {threads} | {test} | {m:.2} ± {s:.2} |",
            gemma.model.config.family.name(),
            weights_label,
            size as f64 / (1 << 20) as f64,
            params as f64 / 1e6
        );
    }
    println!();
    println!("load time {load_s:.2} s, peak RSS {}", rss.map_or("unknown".into(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64)));
    if let Some(v) = &a.variant {
        println!("{v}: {}", crate::synth::RANDOM_NOTE);
    }
    if a.roofline {
        let bw = gemma::bench::read_bandwidth();
        let per_token = gemma.model.weights.bytes_per_token() as f64;
        let ceiling = bw / per_token;
        println!(
            "roofline: read bandwidth {:.1} GB/s ({threads} threads), {:.1} MB of weights read per token, decode ceiling {ceiling:.1} tok/s",
            bw / 1e9,
            per_token / 1e6
        );
        for r in results.iter().filter(|r| r.n_gen > 0 && r.n_depth == 0) {
            let (m, _) = r.ts_mean_std();
            println!("roofline: tg{} at {m:.1} tok/s is {:.0}% of the ceiling", r.n_gen, 100.0 * m / ceiling);
        }
    }
    Ok(())
}

fn serve(a: ServeArgs) -> Result<()> {
    let gemma = Arc::new(load_allowing(&a.model, true)?);
    let draft = load_draft(&a.spec, &gemma)?;
    let mode = a.spec.mode(draft.as_ref()).map_err(anyhow::Error::msg)?;
    let adapters = gemma_server::adapters::Registry::default();
    for (name, dir) in lora_args(&a.model)?.1 {
        adapters.load(&name, &dir, &gemma.model.config).with_context(|| format!("--lora {name}={}", dir.display()))?;
        eprintln!("adapter {name}: {}", dir.display());
    }
    let model_id = a.model_id.clone().unwrap_or_else(|| {
        let p = gemma.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "gemma".into());
        p.strip_suffix(".gguf").map(str::to_string).unwrap_or(p)
    });
    let engine = Arc::new(gemma_engine::Engine::start(
        Arc::clone(&gemma),
        gemma_engine::EngineConfig {
            max_batch: a.max_concurrent.max(1),
            max_queue: a.max_queue,
            prefill_chunk: a.prefill_chunk,
            max_input_tokens: a.max_input_tokens,
            max_total_tokens: a.max_total_tokens,
            prefix_cache_bytes: a.prefix_cache_mb << 20,
            max_images: a.max_images,
        },
    )?);
    let vertex_port = std::env::var("AIP_HTTP_PORT").ok().and_then(|p| p.parse::<u16>().ok());
    let host = a.host.clone().unwrap_or_else(|| if vertex_port.is_some() { "0.0.0.0".into() } else { "127.0.0.1".into() });
    let port = vertex_port.unwrap_or(a.port);
    let config = gemma_server::ServerConfig {
        model_id,
        api_key: a.api_key.clone().filter(|k| !k.is_empty()),
        max_body_bytes: a.max_body_bytes.unwrap_or(if gemma.takes_images() { 32 << 20 } else { 2 << 20 }),
        predict_route: std::env::var("AIP_PREDICT_ROUTE").ok().filter(|r| r.starts_with('/')),
        health_route: std::env::var("AIP_HEALTH_ROUTE").ok().filter(|r| r.starts_with('/')),
        max_new_tokens: a.max_new_tokens,
        enable_thinking: a.enable_thinking,
        pan_and_scan: a.pan_and_scan,
        image_urls: a.allow_image_urls,
        max_image_bytes: a.max_image_bytes,
        speculation: gemma::Speculation { mode, draft_max: a.spec.draft_max, prediction: Vec::new(), draft_model: draft },
    };
    let state = Arc::new(gemma_server::AppState { engine, metrics: Default::default(), config, adapters });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await.with_context(|| format!("cannot listen on {host}:{port}"))?;
        eprintln!(
            "serving on http://{} (OpenAI: /v1/chat/completions, /v1/completions; TGI: /generate, /generate_stream; /metrics; /openapi.json)",
            listener.local_addr()?
        );
        let drain = Duration::try_from_secs_f64(a.drain_delay).map_err(|_| anyhow::anyhow!("--drain-delay must be a non-negative number of seconds"))?;
        gemma_server::serve_draining(listener, state, gemma_server::shutdown_signal(), drain, Duration::from_secs(a.shutdown_grace)).await?;
        eprintln!("shut down");
        anyhow::Ok(())
    })
}

fn eval(a: EvalArgs) -> Result<()> {
    use gemma_engine::eval::{self, ItemResult};
    let mut items = eval::read_task(&a.task)?;
    if let Some(n) = a.limit {
        items.truncate(n);
    }
    let gemma = Arc::new(load(&a.model)?);
    let ctx = gemma.model.config.max_position_embeddings;
    let engine = gemma_engine::Engine::start(
        Arc::clone(&gemma),
        gemma_engine::EngineConfig {
            max_batch: a.batch.max(1),
            // Every request is queued at once (several per multiple-choice item).
            max_queue: items.iter().map(|(_, i)| if let eval::TaskItem::Choice(c) = i { c.choices.len() } else { 1 }).sum::<usize>() + 1,
            max_input_tokens: ctx,
            max_total_tokens: ctx,
            ..Default::default()
        },
    )?;
    let pb = progress::bar("evaluating");
    let t0 = Instant::now();
    let report = eval::evaluate(&engine, &items, &mut |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    let dt = t0.elapsed().as_secs_f64();
    if a.verbose {
        for r in &report.items {
            match r {
                ItemResult::Choice { line, loglikelihoods, correct, .. } => eprintln!("line {line}: {loglikelihoods:?} {}", if *correct { "right" } else { "wrong" }),
                ItemResult::Generate { line, text, correct } => eprintln!("line {line}: {text:?} {}", if *correct { "right" } else { "wrong" }),
            }
        }
    }
    if let Some(path) = &a.samples {
        let mut out = String::new();
        for r in &report.items {
            match r {
                ItemResult::Choice { line, loglikelihoods, scored, correct, correct_norm } => {
                    for (i, ((ids, from), ll)) in scored.iter().zip(loglikelihoods).enumerate() {
                        let o = serde_json::json!({"line": line, "choice": i, "ids": ids, "scored_from": from, "loglikelihood": ll,
                            "correct": correct, "correct_norm": correct_norm});
                        out.push_str(&format!("{o}\n"));
                    }
                }
                ItemResult::Generate { line, text, correct } => {
                    out.push_str(&format!("{}\n", serde_json::json!({"line": line, "text": text, "correct": correct})));
                }
            }
        }
        std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if a.json {
        let mut o = serde_json::json!({"n": report.n});
        if let (Some(acc), Some(norm)) = (report.acc, report.acc_norm) {
            o["acc"] = serde_json::json!(acc);
            o["acc_norm"] = serde_json::json!(norm);
        }
        if let Some(em) = report.exact_match {
            o["exact_match"] = serde_json::json!(em);
        }
        println!("{o}");
    } else {
        println!("| metric | value | items |");
        println!("| --- | ---: | ---: |");
        if let (Some(acc), Some(norm)) = (report.acc, report.acc_norm) {
            println!("| acc | {acc:.4} | {} |", report.n_choice);
            println!("| acc_norm | {norm:.4} | {} |", report.n_choice);
        }
        if let Some(em) = report.exact_match {
            println!("| exact_match | {em:.4} | {} |", report.n_generate);
        }
    }
    eprintln!("evaluated {} items in {dt:.2}s ({:.2} items/s)", report.n, report.n as f64 / dt.max(1e-9));
    Ok(())
}

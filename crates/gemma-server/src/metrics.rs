//! Prometheus metrics, named as TGI names them (`tgi_*`) so existing TGI
//! dashboards and alerts work unchanged; `gemma_grammar_*` count the
//! constrained-decoding work.

use gemma_engine::EngineStats;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use gemma::GrammarStats;
use std::sync::{Arc, Mutex};

/// A histogram with fixed upper bounds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Cumulative-to-be counts per bound, plus +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut acc = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            acc += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {acc}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", self.count, self.sum, self.count);
    }
}

const SECONDS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const TOKENS: &[f64] = &[1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0];

/// Histograms of finished requests.
#[derive(Debug)]
struct Histograms {
    duration: Histogram,
    queue: Histogram,
    inference: Histogram,
    ttft: Histogram,
    per_token: Histogram,
    input: Histogram,
    generated: Histogram,
    batch: Histogram,
}

/// All counters and histograms of the server.
#[derive(Debug)]
pub struct Metrics {
    requests: AtomicU64,
    success: AtomicU64,
    failure: AtomicU64,
    h: Mutex<Histograms>,
    /// Mask work of every constrained sequence (shared by their constraints).
    pub grammar: Arc<GrammarStats>,
    grammar_compile: Mutex<Histogram>,
}

/// What a finished request reports.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// Wall time of the whole request, seconds.
    pub total: f64,
    /// Time waiting for a slot.
    pub queue: f64,
    /// Time from admission to the end.
    pub inference: f64,
    /// Time to the first token.
    pub ttft: f64,
    /// Prompt tokens.
    pub input: usize,
    /// Generated tokens.
    pub generated: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            success: AtomicU64::new(0),
            failure: AtomicU64::new(0),
            h: Mutex::new(Histograms {
                duration: Histogram::new(SECONDS),
                queue: Histogram::new(SECONDS),
                inference: Histogram::new(SECONDS),
                ttft: Histogram::new(SECONDS),
                per_token: Histogram::new(SECONDS),
                input: Histogram::new(TOKENS),
                generated: Histogram::new(TOKENS),
                batch: Histogram::new(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            }),
            grammar: Arc::new(GrammarStats::default()),
            grammar_compile: Mutex::new(Histogram::new(SECONDS)),
        }
    }
}

impl Metrics {
    /// A request arrived.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request failed (validation, overload, generation error).
    pub fn failed(&self) {
        self.failure.fetch_add(1, Ordering::Relaxed);
    }

    /// A grammar was compiled in `seconds`.
    pub fn grammar_compiled(&self, seconds: f64) {
        self.grammar_compile.lock().unwrap_or_else(|e| e.into_inner()).observe(seconds);
    }

    /// A request completed.
    pub fn finished(&self, f: Finished, batch: usize) {
        self.success.fetch_add(1, Ordering::Relaxed);
        let mut h = self.h.lock().unwrap_or_else(|e| e.into_inner());
        h.duration.observe(f.total);
        h.queue.observe(f.queue);
        h.inference.observe(f.inference);
        h.ttft.observe(f.ttft);
        if f.generated > 1 {
            h.per_token.observe((f.inference - f.ttft).max(0.0) / (f.generated - 1) as f64);
        }
        h.input.observe(f.input as f64);
        h.generated.observe(f.generated as f64);
        h.batch.observe(batch as f64);
    }

    /// The Prometheus text exposition; `model` labels vLLM's series.
    pub fn render(&self, engine: &EngineStats, model: &str) -> String {
        let mut out = String::new();
        // vLLM's names, which the Gateway API Inference Extension's endpoint
        // picker reads from pods that do not declare another engine.
        let label = model.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        for (name, help, v) in [
            ("vllm:num_requests_waiting", "Requests waiting to be processed", engine.queued.load(Ordering::Relaxed) as f64),
            ("vllm:num_requests_running", "Requests in the running batch", engine.running.load(Ordering::Relaxed) as f64),
            ("vllm:kv_cache_usage_perc", "KV cache usage: 1 means 100 percent", engine.kv_usage()),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{model_name=\"{label}\"}} {v}");
        }
        for (name, help, v) in [
            ("tgi_request_count", "Requests received", self.requests.load(Ordering::Relaxed)),
            ("tgi_request_success", "Requests completed", self.success.load(Ordering::Relaxed)),
            ("tgi_request_failure", "Requests that failed", self.failure.load(Ordering::Relaxed)),
            ("gemma_prefix_cache_hit_tokens", "Prompt tokens reused from the prefix cache", engine.cached_tokens.load(Ordering::Relaxed)),
            ("gemma_images_encoded_total", "Images and pan-and-scan crops the vision tower encoded", engine.images_encoded.load(Ordering::Relaxed)),
            ("vllm:spec_decode_num_draft_tokens_total", "Draft tokens verified (speculative decoding)", engine.drafted_tokens.load(Ordering::Relaxed)),
            ("vllm:spec_decode_num_accepted_tokens_total", "Draft tokens accepted", engine.accepted_tokens.load(Ordering::Relaxed)),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let name = "gemma_image_encode_seconds_total";
        let secs = engine.image_encode_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "# HELP {name} Time the scheduler spent encoding images\n# TYPE {name} counter\n{name} {secs}");
        for (name, help, v) in [
            ("tgi_queue_size", "Requests waiting for a slot", engine.queued.load(Ordering::Relaxed) as u64),
            ("tgi_batch_current_size", "Sequences in the running batch", engine.running.load(Ordering::Relaxed) as u64),
            ("gemma_prefix_cache_bytes", "Bytes of keys and values the prefix cache holds", engine.prefix_cache_bytes.load(Ordering::Relaxed) as u64),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP tgi_batch_steps Scheduler steps run\n# TYPE tgi_batch_steps counter\ntgi_batch_steps {}",
            engine.steps.load(Ordering::Relaxed)
        );
        let h = self.h.lock().unwrap_or_else(|e| e.into_inner());
        h.duration.render(&mut out, "tgi_request_duration", "Request duration in seconds");
        h.queue.render(&mut out, "tgi_request_queue_duration", "Time waiting for a slot in seconds");
        h.inference.render(&mut out, "tgi_request_inference_duration", "Time from admission to the end in seconds");
        h.ttft.render(&mut out, "tgi_request_time_to_first_token", "Time from admission to the first token in seconds");
        h.per_token.render(&mut out, "tgi_request_mean_time_per_token_duration", "Mean time per output token after the first, seconds");
        h.input.render(&mut out, "tgi_request_input_length", "Prompt tokens");
        h.generated.render(&mut out, "tgi_request_generated_tokens", "Generated tokens");
        h.batch.render(&mut out, "tgi_batch_current_size_at_finish", "Batch size when a request finished");
        let g = self.grammar.counts();
        for (name, help, v) in [
            ("gemma_grammar_masks_total", "Full grammar masks computed", g.masks as f64),
            ("gemma_grammar_mask_seconds_total", "Seconds computing full grammar masks", g.mask_seconds),
            ("gemma_grammar_checks_total", "Single-token grammar checks of an unmasked choice", g.checks as f64),
            ("gemma_grammar_masks_skipped_total", "Steps whose unmasked choice fit the grammar (no mask built)", g.skipped as f64),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let c = self.grammar_compile.lock().unwrap_or_else(|e| e.into_inner());
        c.render(&mut out, "gemma_grammar_compile_duration", "Grammar compile time in seconds");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.request();
        m.finished(Finished { total: 0.2, queue: 0.0, inference: 0.2, ttft: 0.02, input: 10, generated: 5 }, 1);
        let text = m.render(&EngineStats::default(), "gemma");
        assert!(text.contains("tgi_request_count 1"));
        assert!(text.contains("tgi_request_duration_bucket{le=\"0.1\"} 0"));
        assert!(text.contains("tgi_request_duration_bucket{le=\"0.25\"} 1"));
        assert!(text.contains("tgi_request_duration_bucket{le=\"+Inf\"} 1"));
        assert!(text.contains("tgi_request_input_length_sum 10"));
        assert!(text.contains("vllm:num_requests_waiting{model_name=\"gemma\"} 0\n"));
    }

    #[test]
    fn vllm_series_follow_the_engine() {
        let m = Metrics::default();
        let e = EngineStats::default();
        e.queued.store(3, Ordering::SeqCst);
        e.running.store(2, Ordering::SeqCst);
        e.kv_capacity.store(4 * 1000, Ordering::SeqCst);
        e.kv_tokens.store(1000, Ordering::SeqCst);
        let text = m.render(&e, "my \"model\"");
        for line in ["vllm:num_requests_waiting{model_name=\"my \\\"model\\\"\"} 3", "vllm:num_requests_running{model_name=\"my \\\"model\\\"\"} 2", "vllm:kv_cache_usage_perc{model_name=\"my \\\"model\\\"\"} 0.25"] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.contains("# TYPE vllm:kv_cache_usage_perc gauge"));
    }
}

//! Prefix reuse: the KV caches of finished prefills, kept (LRU, bounded in
//! bytes) so that a request whose prompt starts with tokens already
//! computed — a shared system prompt, a chat history one turn shorter, an
//! agent's tool list — starts from a copy of that cache instead of
//! recomputing it.
//!
//! Outputs stay bit-identical to running without the cache: an entry holds
//! only positions its own prefill computed (never generated tokens, which
//! the decode kernels compute with different rounding), and a reused prefix
//! ends on a multiple of the prefill chunk, so every later position is
//! computed in the very chunks it would have been without reuse.
//!
//! Sliding-window layers keep a ring of `window + MAX_CHUNK` positions, so
//! an entry can be rolled back by at most `MAX_CHUNK` positions
//! (`KvCache::max_rollback`); a prompt that leaves an entry earlier than
//! that does not reuse it, and a longer entry supersedes a shorter one only
//! within that reach (so a shared system prompt stays reusable after a
//! conversation grew past it). Models without sliding layers have no such
//! limit (llama.cpp instead re-processes the whole prompt for
//! sliding-window models). Entries of an adapter unloaded at run time stay
//! until evicted (their memory is the cache's, counted; the adapter's own
//! weights stay alive with them, not counted).
//!
//! Media (images' soft tokens) are part of the key: a prefix is shared only
//! up to the first run whose content differs (two images behind the same
//! placeholder ids never share keys and values), and it ends where the
//! prompt's own chunking ends a chunk (`gemma_model::chunk_end`, which never
//! splits a run), so reuse stays bit-identical with images too.

use gemma::LoraAdapter;
use gemma_model::KvCache;
use std::sync::Arc;

/// One stored prefill.
struct Entry {
    /// The prompt tokens whose keys and values `cache` holds.
    tokens: Vec<u32>,
    cache: KvCache,
    /// Its media runs (keys and values depend on them).
    media: Vec<Run>,
    /// The adapter the prefill ran with (keys and values depend on it).
    adapter: Option<Arc<LoraAdapter>>,
    /// Logical time of the last use (LRU).
    used: u64,
}

/// The store.
#[derive(Default)]
pub(crate) struct PrefixCache {
    entries: Vec<Entry>,
    /// Most bytes held (0: off).
    budget: usize,
    bytes: usize,
    clock: u64,
}

/// A media run of a prompt: its first position, length and content key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub at: usize,
    pub len: usize,
    pub key: [u8; 32],
}

/// Length of the common prefix of `a` and `b`: their tokens agree, and so
/// does every media run that starts within it.
fn common_prefix(a: &[u32], am: &[Run], b: &[u32], bm: &[Run]) -> usize {
    let mut n = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    for r in am.iter().filter(|r| !bm.contains(r)).chain(bm.iter().filter(|r| !am.contains(r))) {
        n = n.min(r.at);
    }
    n
}

/// The last chunk boundary at or before `n` when `prompt_len` tokens with
/// media `runs` are prefilled in chunks of `chunk` (0 when there is none).
fn boundary(n: usize, prompt_len: usize, runs: &[Run], chunk: usize) -> usize {
    if runs.is_empty() {
        return n / chunk * chunk;
    }
    let mut spans: Vec<(usize, usize)> = runs.iter().map(|r| (r.at, r.at + r.len)).collect();
    spans.sort_unstable();
    let (mut pos, mut last) = (0, 0);
    while pos < prompt_len {
        pos = gemma_model::chunk_end(pos, prompt_len, chunk, &spans);
        if pos > n {
            break;
        }
        last = pos;
    }
    last
}

fn same_adapter(a: &Option<Arc<LoraAdapter>>, b: Option<&Arc<LoraAdapter>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

impl PrefixCache {
    /// A store of at most `budget` bytes (0 turns reuse off).
    pub(crate) fn new(budget: usize) -> Self {
        Self { budget, ..Self::default() }
    }

    /// The longest reusable prefix of `prompt` (at most `limit` tokens, a
    /// multiple of `chunk`): a copy of the cache holding it, and its length.
    pub(crate) fn lookup(&mut self, prompt: &[u32], media: &[Run], adapter: Option<&Arc<LoraAdapter>>, limit: usize, chunk: usize) -> Option<(KvCache, usize)> {
        if self.budget == 0 || chunk == 0 {
            return None;
        }
        let mut best: Option<(usize, usize)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if !same_adapter(&e.adapter, adapter) {
                continue;
            }
            let n = boundary(common_prefix(&e.tokens, &e.media, prompt, media).min(limit), prompt.len(), media, chunk);
            // Sliding layers can be rolled back by at most MAX_CHUNK positions.
            if n > 0 && e.tokens.len() - n <= e.cache.max_rollback() && best.is_none_or(|(_, b)| n > b) {
                best = Some((i, n));
            }
        }
        let (i, n) = best?;
        self.clock += 1;
        let e = &mut self.entries[i];
        e.used = self.clock;
        let mut cache = e.cache.clone();
        cache.truncate(n).then_some((cache, n))
    }

    /// Keep a copy of `cache`, which holds exactly `tokens` (a finished prefill).
    pub(crate) fn insert(&mut self, tokens: &[u32], media: &[Run], cache: &KvCache, adapter: Option<&Arc<LoraAdapter>>) {
        let size = cache.bytes();
        if self.budget == 0 || size > self.budget || tokens.len() != cache.len() {
            return;
        }
        // An entry this one extends (or repeats) is superseded, when the new
        // one can be rolled back to every prefix the old one served.
        let reach = cache.max_rollback();
        let before = self.entries.len();
        let extends = |e: &Entry| common_prefix(&e.tokens, &e.media, tokens, media) == e.tokens.len();
        self.entries.retain(|e| !(same_adapter(&e.adapter, adapter) && extends(e) && tokens.len() >= e.tokens.len() && tokens.len() - e.tokens.len() <= reach));
        if self.entries.len() != before {
            self.bytes = self.entries.iter().map(|e| e.cache.bytes()).sum();
        }
        // Some other entry already serves this prompt: nothing new to keep.
        let served = |e: &Entry| common_prefix(&e.tokens, &e.media, tokens, media) == tokens.len() && e.tokens.len() - tokens.len() <= e.cache.max_rollback();
        if self.entries.iter().any(|e| same_adapter(&e.adapter, adapter) && served(e)) {
            return;
        }
        while self.bytes + size > self.budget {
            let Some(oldest) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.used).map(|(i, _)| i) else { break };
            let e = self.entries.swap_remove(oldest);
            self.bytes -= e.cache.bytes();
        }
        self.clock += 1;
        self.bytes += size;
        self.entries.push(Entry { tokens: tokens.to_vec(), media: media.to_vec(), cache: cache.clone(), adapter: adapter.cloned(), used: self.clock });
    }

    /// Bytes held now.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

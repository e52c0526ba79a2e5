//! Known Gemma sizes, used to name a loaded model (and, later, to fill in
//! values that some file formats omit).

use crate::config::{Family, GemmaConfig};

/// One published Gemma text model size.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Generation.
    pub family: Family,
    /// Marketing name of the size, e.g. "2B".
    pub size: &'static str,
    /// Number of layers.
    pub num_layers: usize,
    /// Residual width.
    pub hidden_size: usize,
}

/// The published text models.
pub const VARIANTS: &[Variant] = &[
    Variant { family: Family::Gemma1, size: "2B", num_layers: 18, hidden_size: 2048 },
    Variant { family: Family::Gemma1, size: "7B", num_layers: 28, hidden_size: 3072 },
    Variant { family: Family::Gemma2, size: "2B", num_layers: 26, hidden_size: 2304 },
    Variant { family: Family::Gemma2, size: "9B", num_layers: 42, hidden_size: 3584 },
    Variant { family: Family::Gemma2, size: "27B", num_layers: 46, hidden_size: 4608 },
    Variant { family: Family::Gemma3, size: "270M", num_layers: 18, hidden_size: 640 },
    Variant { family: Family::Gemma3, size: "1B", num_layers: 26, hidden_size: 1152 },
    Variant { family: Family::Gemma3, size: "4B", num_layers: 34, hidden_size: 2560 },
    Variant { family: Family::Gemma3, size: "12B", num_layers: 48, hidden_size: 3840 },
    Variant { family: Family::Gemma3, size: "27B", num_layers: 62, hidden_size: 5376 },
    // Gemma 3n: E4B is transformers' Gemma3nTextConfig default; E2B has 30 layers.
    Variant { family: Family::Gemma3n, size: "E2B", num_layers: 30, hidden_size: 2048 },
    Variant { family: Family::Gemma3n, size: "E4B", num_layers: 35, hidden_size: 2048 },
    // Gemma 4: layer counts and widths as third-party fixtures of the
    // published configs give them (not checked against the Hub here).
    Variant { family: Family::Gemma4, size: "E2B", num_layers: 35, hidden_size: 1536 },
    Variant { family: Family::Gemma4, size: "E4B", num_layers: 42, hidden_size: 2560 },
    Variant { family: Family::Gemma4, size: "26B-A4B", num_layers: 30, hidden_size: 2816 },
    Variant { family: Family::Gemma4, size: "31B", num_layers: 60, hidden_size: 5376 },
    // The 12B "unified" model (Gemma4UnifiedForConditionalGeneration), as
    // transformers' convert_gemma4_unified_weights.py gives its text config.
    Variant { family: Family::Gemma4, size: "12B (unified)", num_layers: 48, hidden_size: 3840 },
];

/// The published variant matching `cfg`, if any.
pub fn identify(cfg: &GemmaConfig) -> Option<&'static Variant> {
    VARIANTS.iter().find(|v| v.family == cfg.family && v.num_layers == cfg.num_layers() && v.hidden_size == cfg.hidden_size)
}

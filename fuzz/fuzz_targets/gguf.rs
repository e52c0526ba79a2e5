//! The GGUF reader: any bytes give a parsed file or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = gemma_formats::GgufHeader::parse(data) {
        for t in &f.tensors {
            let _ = (t.elements(), t.shape());
        }
    }
});

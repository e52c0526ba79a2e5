//! The Flax msgpack reader: parse a `flax_model.msgpack`, then load every array.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ck) = gemma_formats::FlaxCheckpoint::from_bytes(std::path::Path::new("fuzz.msgpack"), data.to_vec()) else { return };
    let names: Vec<String> = ck.names().map(str::to_string).collect();
    for n in names {
        let _ = ck.load(&n);
    }
});

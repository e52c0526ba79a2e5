//! GGUF reader: round trip with the writer, and clear errors (never panics,
//! never out-of-bounds reads) on truncated, corrupt and hostile files.

use gemma_core::DType;
use gemma_formats::gguf_write::sample_file;
use gemma_formats::{GgufFile, GgufHeader, GgufValue};

fn err(bytes: &[u8]) -> String {
    GgufHeader::parse(bytes).expect_err("must be rejected")
}

#[test]
fn round_trip_of_every_value_type_and_tensors() {
    let b = sample_file();
    let h = GgufHeader::parse(&b).unwrap();
    assert_eq!(h.version, 3);
    let m = &h.metadata;
    assert_eq!(m["u8"], GgufValue::U8(7));
    assert_eq!(m["i16"], GgufValue::I16(-700));
    assert_eq!(m["i64"], GgufValue::I64(-(1 << 40)));
    assert_eq!(m["f64"], GgufValue::F64(2.25));
    assert_eq!(m["str"].as_str(), Some("héllo"));
    assert_eq!(m["nested"].as_array().unwrap()[0].as_array().unwrap()[0].as_str(), Some("a"));
    assert_eq!(h.tensors.len(), 2);
    assert_eq!(h.tensors[0].shape(), vec![2, 32]);
    assert_eq!(h.tensors[1].dtype, DType::Q8_0);
    assert_eq!(h.data_offset % 32, 0);
    // Through a memory map, bytes come back unchanged.
    let p = std::env::temp_dir().join(format!("gemma-rt-{}.gguf", std::process::id()));
    std::fs::write(&p, &b).unwrap();
    let f = GgufFile::open(&p).unwrap();
    let t = f.tensor("a.weight").unwrap();
    let bytes = f.tensor_bytes(t);
    assert_eq!(f32::from_le_bytes(bytes.as_slice()[4..8].try_into().unwrap()), 1.0);
}

#[test]
fn wrong_magic_and_version() {
    let mut b = sample_file();
    b[0] = b'X';
    assert!(err(&b).contains("not a GGUF file"));
    let mut b = sample_file();
    b[4] = 1;
    assert!(err(&b).contains("version 1"));
    assert!(err(b"GG").contains("past the end"));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let b = sample_file();
    let h = GgufHeader::parse(&b).unwrap();
    // Past the end of the last tensor only alignment padding follows.
    let needed = h.tensors.iter().map(|t| h.data_offset + t.offset + t.size).max().unwrap() as usize;
    for len in 0..b.len() {
        let r = std::panic::catch_unwind(|| GgufHeader::parse(&b[..len]));
        if len < needed {
            assert!(matches!(r, Ok(Err(_))), "truncated to {len} bytes");
        } else {
            assert!(matches!(r, Ok(Ok(_))), "only padding cut at {len} bytes");
        }
    }
    assert!(err(&b[..needed - 1]).contains("truncated"));
}

/// Offset of the tensor directory entry of the first tensor in the sample.
fn first_tensor_entry(b: &[u8]) -> usize {
    let pat = b"a.weight";
    b.windows(pat.len()).position(|w| w == pat).unwrap() + pat.len()
}

#[test]
fn unknown_quant_type_absurd_dims_and_offsets() {
    let b = sample_file();
    let at = first_tensor_entry(&b); // n_dims u32, dims 2×u64, type u32, offset u64
    let mut x = b.clone();
    x[at + 4 + 16..at + 4 + 16 + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(err(&x).contains("ggml type 99"));
    let mut x = b.clone();
    x[at + 4..at + 12].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(&x).contains("absurd dimensions"));
    let mut x = b.clone();
    x[at + 24..at + 32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err(&x).contains("past the end"));
    let mut x = b.clone();
    x[at + 24..at + 32].copy_from_slice(&3u64.to_le_bytes());
    assert!(err(&x).contains("not aligned"));
    let mut x = b.clone();
    x[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    assert!(err(&x).contains("dimensions"));
}

#[test]
fn absurd_counts_and_lengths() {
    let b = sample_file();
    let mut x = b.clone();
    x[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    assert!(err(&x).contains("tensor count"));
    let mut x = b.clone();
    x[16..24].copy_from_slice(&(1u64 << 50).to_le_bytes()); // kv count
    assert!(err(&x).contains("metadata count"));
    let mut x = b.clone();
    x[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes()); // first key length
    assert!(err(&x).contains("string length"));
}

#[test]
fn mutation_fuzzing_finds_no_crash() {
    let seeds = vec![sample_file()];
    assert_eq!(gemma_formats::fuzz::fuzz(&seeds, 20_000, 42), None);
}

/// Reading into huge-page-backed memory gives the same file as mapping it.
#[test]
fn hugepage_copy_equals_the_map() {
    let dir = std::env::temp_dir().join(format!("gemma-gguf-hp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sample.gguf");
    std::fs::write(&path, sample_file()).unwrap();
    let (a, b) = (GgufFile::open(&path).unwrap(), GgufFile::open_with(&path, true).unwrap());
    assert_eq!(a.header.metadata, b.header.metadata);
    for t in &a.header.tensors {
        let u = b.tensor(&t.name).unwrap();
        assert_eq!(a.tensor_bytes(t).as_slice(), b.tensor_bytes(u).as_slice(), "{}", t.name);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Empty tokenizer arrays keep the element type llama.cpp reads them with
/// (an empty `tokenizer.ggml.merges` written as u32 made llama.cpp refuse
/// the file).
#[test]
fn empty_tokenizer_arrays_keep_their_element_type() {
    let mut w = gemma_formats::GgufWriter::new();
    for k in ["tokenizer.ggml.merges", "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "other.list"] {
        w.set(k, GgufValue::Array(vec![]));
    }
    let b = w.to_bytes();
    for (k, elem) in [("tokenizer.ggml.merges", 8u32), ("tokenizer.ggml.tokens", 8), ("tokenizer.ggml.scores", 6), ("tokenizer.ggml.token_type", 5), ("other.list", 4)] {
        // key (u64 length + bytes), value type 9, element type, count 0
        let at = b.windows(k.len()).position(|x| x == k.as_bytes()).unwrap() + k.len();
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        assert_eq!((u32_at(at), u32_at(at + 4)), (9, elem), "{k}");
        assert_eq!(u64::from_le_bytes(b[at + 8..at + 16].try_into().unwrap()), 0, "{k}");
    }
    let h = GgufHeader::parse(&b).unwrap();
    assert_eq!(h.metadata["tokenizer.ggml.merges"], GgufValue::Array(vec![]));
}

//! Shared helpers of the fuzz targets: a per-process scratch folder and
//! the testdata paths.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `testdata/NAME` of the repository.
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(name)
}

/// A scratch folder of this process (files are overwritten per input).
pub fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("gemma-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch folder");
    d
}

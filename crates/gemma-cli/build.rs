//! Records the git commit the binary was built from (for `gemma --version`);
//! "unknown" outside a git checkout (e.g. a source tarball).

fn main() {
    if let Ok(c) = std::env::var("GEMMA_GIT_COMMIT") {
        println!("cargo:rustc-env=GEMMA_GIT_COMMIT={c}");
        println!("cargo:rerun-if-env-changed=GEMMA_GIT_COMMIT");
        return;
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
        .map(|_| "-modified")
        .unwrap_or("");
    println!("cargo:rustc-env=GEMMA_GIT_COMMIT={commit}{dirty}");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/index");
    println!("cargo:rerun-if-env-changed=GEMMA_GIT_COMMIT");
}

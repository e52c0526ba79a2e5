//! Progress bars on stderr; indicatif draws nothing when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar with a message, for `done/total` style callbacks.
pub fn bar(message: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    pb.set_style(ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} ({elapsed})").expect("valid template").progress_chars("=> "));
    pb.set_message(message);
    pb
}

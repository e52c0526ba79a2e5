//! User stop strings over streamed text: text that could still grow into a
//! stop string is held back, and generation ends before the stop string.

/// Tracks generated text against a set of stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    text: String,
    emitted: usize,
}

/// Result of adding a piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCheck {
    /// Text that is now safe to show.
    pub emit: String,
    /// The stop string that matched, if any (generation must end).
    pub stopped: Option<String>,
}

impl StopStrings {
    /// A tracker for these stop strings (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), text: String::new(), emitted: 0 }
    }

    /// Add generated text.
    pub fn push(&mut self, piece: &str) -> StopCheck {
        self.text.push_str(piece);
        // Earliest complete match. Held-back text never ends in a partial
        // stop string that began earlier, so matches start at or after `emitted`.
        let found =
            self.stops.iter().filter_map(|s| self.text[self.emitted..].find(s.as_str()).map(|i| (i + self.emitted, s))).min_by_key(|(i, _)| *i);
        if let Some((at, s)) = found {
            let emit = self.text[self.emitted..at].to_string();
            self.emitted = at;
            self.text.truncate(at);
            return StopCheck { emit, stopped: Some(s.clone()) };
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let mut safe = self.text.len();
        for s in &self.stops {
            for k in (1..s.len()).rev() {
                if self.text.len() >= k && s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                    safe = safe.min(self.text.len() - k);
                    break;
                }
            }
        }
        let safe = safe.max(self.emitted);
        let emit = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        StopCheck { emit, stopped: None }
    }

    /// Release held-back text at the end of generation.
    pub fn finish(&mut self) -> String {
        let rest = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        rest
    }

    /// All text kept so far (without any stop string).
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_before_the_stop_string_across_pieces() {
        let mut s = StopStrings::new(&["END".to_string()]);
        let mut shown = String::new();
        for piece in ["hello E", "N", "D more"] {
            let c = s.push(piece);
            shown.push_str(&c.emit);
            if c.stopped.is_some() {
                break;
            }
        }
        assert_eq!(shown, "hello ");
        assert_eq!(s.text(), "hello ");
    }

    #[test]
    fn releases_false_alarms() {
        let mut s = StopStrings::new(&["END".to_string()]);
        assert_eq!(s.push("abc E").emit, "abc ");
        assert_eq!(s.push("x").emit, "Ex");
        assert_eq!(s.push("EN").emit, "");
        assert_eq!(s.finish(), "EN");
    }

    #[test]
    fn no_stops_passes_everything() {
        let mut s = StopStrings::new(&[]);
        assert_eq!(s.push("a").emit, "a");
        assert_eq!(s.push("日本").emit, "日本");
    }
}

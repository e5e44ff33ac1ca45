//! Peer-supplied text in the log, and how much of the log one peer gets.
//!
//! A PSK identity (or a device's plaintext) is whatever the peer sent: a
//! newline in it would start a forged log line, an ANSI escape would
//! rewrite the operator's terminal, and 128 bytes of it per datagram would
//! let a flood fill the disk. So such text goes through [`Untrusted`]
//! (escaped like `str::escape_debug`, truncated), and warnings that any
//! stranger can trigger go through a [`Throttle`].

use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// Characters of peer text shown in a warning.
const SHORT: usize = 64;
/// Characters of a device's plaintext shown at debug level.
const LONG: usize = 512;

/// Peer-supplied text for the log: control characters, quotes and
/// backslashes escaped as Rust's `escape_debug` does (`\n`, `\u{1b}`), so
/// a line never ends or changes colour inside it, and cut after a bound
/// with "…".
pub struct Untrusted<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Untrusted<'a> {
    /// An identity or name: at most 64 characters shown.
    pub fn new(text: &'a str) -> Untrusted<'a> {
        Untrusted { text, max: SHORT }
    }

    /// A message body for debug logs: at most 512 characters shown.
    pub fn long(text: &'a str) -> Untrusted<'a> {
        Untrusted { text, max: LONG }
    }
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.text.chars().enumerate() {
            if i == self.max {
                return f.write_str("…");
            }
            write!(f, "{}", c.escape_debug())?;
        }
        Ok(())
    }
}

/// At most one line per period for one kind of warning, however many
/// peers trigger it. One throttle per kind, not per address: a map of
/// addresses would itself grow with a spoofed flood.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if a line may be logged at `now` (`n` lines were left out
    /// since the last one, for the line to say so); `None` to stay quiet.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_appear_raw() {
        let shown = Untrusted::new("a\nERROR forged\r\u{1b}[31m\t\"\\\u{202e}é").to_string();
        assert_eq!(shown, r#"a\nERROR forged\r\u{1b}[31m\t\"\\\u{202e}é"#);
        assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        let shown = Untrusted::new(&"é".repeat(100)).to_string();
        assert_eq!(shown, format!("{}…", "é".repeat(64)));
        assert_eq!(Untrusted::new(&"x".repeat(64)).to_string(), "x".repeat(64));
        assert_eq!(
            Untrusted::long(&"y".repeat(600))
                .to_string()
                .chars()
                .count(),
            513
        );
    }

    #[test]
    fn throttle_admits_one_line_per_period_and_counts_the_rest() {
        let start = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(1));
        assert_eq!(t.admit(start), Some(0));
        for ms in [1, 200, 999] {
            assert_eq!(t.admit(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(t.admit(start + Duration::from_secs(1)), Some(3));
        assert_eq!(t.admit(start + Duration::from_millis(1500)), None);
        assert_eq!(t.admit(start + Duration::from_secs(3)), Some(1));
    }
}

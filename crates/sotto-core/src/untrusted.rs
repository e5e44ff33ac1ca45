//! Strings from the network, made safe to log.
//!
//! A user name, a PSK identity or a path arrives from whoever is on the
//! other end. Logged raw, a newline forges a log line, an ANSI escape
//! rewrites the operator's terminal, and a 60 KB name turns one warning
//! into 60 KB of log. [`Untrusted`] prints a bounded prefix with every
//! control and non-printing character escaped, so a log line stays one
//! line of predictable size whatever the peer sent.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Characters of peer text shown in a warning.
pub const LOGGED_CHARS: usize = 64;
/// Characters of a device's plaintext shown at debug level.
const LONG: usize = 512;

/// Peer-supplied text for the log: every character as Rust's
/// `escape_debug` shows it (`\n`, `\u{1b}`, bidi overrides, quotes and
/// backslashes escaped), so a line never ends or changes colour inside it,
/// and cut after a bound with "…".
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Untrusted<'a> {
    /// A name, identity or path: at most [`LOGGED_CHARS`] characters shown.
    pub fn new(text: &'a str) -> Untrusted<'a> {
        Untrusted {
            text,
            max: LOGGED_CHARS,
        }
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

/// A per-second allowance of log lines for one kind of event that peers
/// can trigger at will (rate-limited logins, unknown identities): past it,
/// lines are counted instead of written, and the next line that is written
/// says how many were dropped. Lock-free; one per call site.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u64,
    /// Whole seconds since the epoch (high 32 bits) and lines written in
    /// that second (low 32 bits), updated together.
    window: AtomicU64,
    suppressed: AtomicU64,
}

impl LogBudget {
    pub const fn new(per_second: u32) -> LogBudget {
        LogBudget {
            per_second: per_second as u64,
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if a line may be written now, `n` being how many were
    /// suppressed since the last one written; `None` to stay quiet.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }

    fn allow_at(&self, second: u64) -> Option<u64> {
        let second = second & 0xffff_ffff;
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (at, used) = (current >> 32, current & 0xffff_ffff);
            let used = if at == second { used } else { 0 };
            if used >= self.per_second {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let next = (second << 32) | (used + 1);
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_log_raw() {
        let forged = "bob\n2026-12-02T00:00:00Z INFO admin logged in\u{1b}[2J";
        let shown = Untrusted::new(forged).to_string();
        assert!(!shown.contains('\n'));
        assert!(!shown.contains('\u{1b}'));
        assert!(shown.starts_with("bob\\n2026"));
        assert!(shown.contains("\\u{1b}"));
    }

    #[test]
    fn long_strings_are_cut_with_an_ellipsis() {
        let name = "é".repeat(60_000);
        let shown = Untrusted::new(&name).to_string();
        assert_eq!(shown, format!("{}…", "é".repeat(LOGGED_CHARS)));
        assert_eq!(Untrusted::new(&"x".repeat(64)).to_string(), "x".repeat(64));
        let body = Untrusted::long(&"y".repeat(600)).to_string();
        assert_eq!(body.chars().count(), LONG + 1);
    }

    #[test]
    fn ordinary_names_print_as_they_are() {
        assert_eq!(Untrusted::new("Zoë (clone 1)").to_string(), "Zoë (clone 1)");
        assert_eq!(Untrusted::new("a\\b").to_string(), "a\\\\b");
        assert_eq!(
            Untrusted::new("evil\u{202e}txt").to_string(),
            "evil\\u{202e}txt"
        );
    }

    #[test]
    fn a_budget_allows_so_many_lines_a_second_and_counts_the_rest() {
        let budget = LogBudget::new(2);
        assert_eq!(budget.allow_at(10), Some(0));
        assert_eq!(budget.allow_at(10), Some(0));
        assert_eq!(budget.allow_at(10), None);
        assert_eq!(budget.allow_at(10), None);
        assert_eq!(budget.allow_at(11), Some(2), "reports what it dropped");
        assert_eq!(budget.allow_at(11), Some(0));
    }
}

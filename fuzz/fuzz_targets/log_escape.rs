//! `Untrusted`, through which every peer-supplied string reaches the log
//! (names, PSK identities, paths, a device's plaintext). The promise of
//! docs/SECURITY.md, checked for any input: the text stays on one line,
//! carries no control character or bidi override that could forge a line
//! or rewrite a terminal, and its size is bounded whatever the peer sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_core::untrusted::{LOGGED_CHARS, Untrusted};

/// Characters of a device's plaintext shown at debug level.
const LONG: usize = 512;
/// The longest escape of one character, `\u{10ffff}`.
const WIDEST_ESCAPE: usize = 10;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(&Untrusted::new(&text).to_string(), &text, LOGGED_CHARS);
    check(&Untrusted::long(&text).to_string(), &text, LONG);
});

fn check(shown: &str, text: &str, max: usize) {
    for c in shown.chars() {
        assert!(!c.is_control(), "{c:?} in the log for {text:?}");
        assert!(
            !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'),
            "bidi control {c:?} in the log for {text:?}"
        );
    }
    let chars = shown.chars().count();
    assert!(
        chars <= max * WIDEST_ESCAPE + 1,
        "{chars} characters logged"
    );
    let cut = text.chars().count() > max;
    assert_eq!(shown.ends_with('…') && cut, cut, "a cut text says so");
    if !cut {
        // Nothing was left out: unescaping gives the text back.
        let expected: String = text.chars().flat_map(char::escape_debug).collect();
        assert_eq!(shown, expected);
    }
}

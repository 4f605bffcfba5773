//! Escaping of untrusted strings for logs and terminals.
//!
//! Strings from outside (shipment ids before validation, file names, device
//! descriptions, error text from a sink) must not carry control characters into
//! a log line or an operator's terminal: CR/LF forge log lines, ESC drives the
//! terminal, bidi overrides make text read differently from what it is. Wrap
//! such a string in [`Untrusted`] wherever it is printed or logged; it prints
//! printable text as it is and everything else as a `\u{…}` escape.

use std::fmt;

/// Displays a string with control, format and bidi characters escaped.
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Characters that are never printed raw.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        // Bidi embeddings/overrides/isolates and marks (Unicode TR9).
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        // Zero-width and line/paragraph separators.
        || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                c if needs_escape(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

/// The escaped form as an owned string (for table cells and JSON-free output).
pub fn untrusted(s: &str) -> String {
    Untrusted(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(untrusted("S1"), "S1");
        assert_eq!(
            untrusted("a\r\nX-Evil: 1\x1b[31m"),
            "a\\u{d}\\u{a}X-Evil: 1\\u{1b}[31m"
        );
        assert_eq!(untrusted("abc\u{202E}fdp.exe"), "abc\\u{202e}fdp.exe");
        assert_eq!(untrusted("back\\slash"), "back\\\\slash");
        assert_eq!(untrusted("Jörg"), "Jörg");
        assert!(!untrusted("\u{7f}\u{85}\u{2028}")
            .chars()
            .any(char::is_control));
    }
}

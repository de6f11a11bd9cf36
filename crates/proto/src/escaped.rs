//! Client-supplied text made safe for a log line.
//!
//! A user name or a path comes from the client and may hold any character but NUL and
//! CR/LF pairs the framing split on — ESC, BEL, a lone CR, DEL, C1 controls. Written raw, such
//! text repaints a terminal (`ESC[31m`), or starts what looks like a new, forged log line
//! (`CR` + `… user=admin logged in`). Every log field that carries client text goes through
//! [`Escaped`], in every log format:
//!
//! - `field = %Escaped(x)`: the text with every control character (C0, DEL, C1) written as
//!   `\n`, `\r`, `\t`, `\0` or `\u{1b}`, and `\` as `\\`, so that the escapes are unambiguous;
//! - `field = ?Escaped(x)`: the same in double quotes, `"` as `\"` — what the event log uses,
//!   so that a space cannot forge another `key=value` field in the text format (the JSON
//!   format drops the quotes and keeps the escapes). The escapes are those of Rust's `Debug`
//!   for strings, so `?Escaped(name)` writes what `?name` wrote for a plain name.

use std::fmt::{self, Write as _};

/// Formats `T`'s `Display` text with control characters escaped; see the module docs.
#[derive(Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            EscapingWriter {
                inner: formatter,
                quote: false
            },
            "{}",
            self.0
        )
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_char('"')?;
        write!(
            EscapingWriter {
                inner: formatter,
                quote: true
            },
            "{}",
            self.0
        )?;
        formatter.write_char('"')
    }
}

struct EscapingWriter<'a, 'b> {
    inner: &'a mut fmt::Formatter<'b>,
    /// Inside double quotes: `"` is escaped too.
    quote: bool,
}

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Runs of ordinary characters are written in one piece.
        let mut start = 0;
        for (index, character) in text.char_indices() {
            let needs_escape =
                character.is_control() || character == '\\' || (self.quote && character == '"');
            if needs_escape {
                self.inner.write_str(&text[start..index])?;
                match character {
                    '\n' => self.inner.write_str("\\n")?,
                    '\r' => self.inner.write_str("\\r")?,
                    '\t' => self.inner.write_str("\\t")?,
                    '\0' => self.inner.write_str("\\0")?,
                    '\\' => self.inner.write_str("\\\\")?,
                    '"' => self.inner.write_str("\\\"")?,
                    other => write!(self.inner, "\\u{{{:x}}}", u32::from(other))?,
                }
                start = index + character.len_utf8();
            }
        }
        self.inner.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else_changes() {
        let forged = "x\u{1b}[31mRED\rFAKE user=admin\n\u{7}\0\u{7f}\u{9b}é\\";
        assert_eq!(
            Escaped(forged).to_string(),
            "x\\u{1b}[31mRED\\rFAKE user=admin\\n\\u{7}\\0\\u{7f}\\u{9b}é\\\\"
        );
        assert_eq!(Escaped("/a b/\"c\"").to_string(), "/a b/\"c\"");
        assert_eq!(format!("{:?}", Escaped("/a b/\"c\"")), "\"/a b/\\\"c\\\"\"");
    }

    #[test]
    fn the_quoted_form_is_rust_debug_for_strings() {
        for text in [
            "bob",
            "e\u{1b}vil\"",
            "tab\there",
            "back\\slash",
            "cr\rlf\n",
            "",
        ] {
            assert_eq!(format!("{:?}", Escaped(text)), format!("{text:?}"));
        }
    }

    #[test]
    fn no_control_character_survives_any_input() {
        let every_char: String = (0u32..0x200).filter_map(char::from_u32).collect();
        for text in [
            Escaped(&every_char).to_string(),
            format!("{:?}", Escaped(&every_char)),
        ] {
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
    }
}

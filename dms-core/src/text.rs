//! Text a peer supplied, made printable before it reaches the application or a log.
//!
//! Such text (a DISCONNECT or REP error detail, a ZMTP `ERROR` reason, a QUIC close
//! reason, an announced identity) is arbitrary: a peer can put ANSI escape sequences,
//! carriage returns, newlines (a forged log line) or NUL bytes in it. Every receiver
//! shows it with its control characters (Unicode `Cc`) replaced by U+FFFD, as
//! `docs/PROTOCOL.md` §9 says of DMS details.
//!
//! ```
//! use dms_core::text::{printable, printable_lossy};
//!
//! assert_eq!(printable("bye\r\n\u{1b}[31mFAKE\0"), "bye\u{fffd}\u{fffd}\u{fffd}[31mFAKE\u{fffd}");
//! assert_eq!(printable("plain text"), "plain text");
//! assert_eq!(printable_lossy(b"a\xff\nb"), "a\u{fffd}\u{fffd}b");
//! ```

use std::borrow::Cow;

/// `text` with every control character replaced by U+FFFD (borrowed when it has none).
pub fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// `bytes` decoded as UTF-8 (invalid sequences as U+FFFD), then [`printable`].
pub fn printable_lossy(bytes: &[u8]) -> String {
    printable(&String::from_utf8_lossy(bytes)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{printable, printable_lossy};

    #[test]
    fn control_characters_become_replacement_characters_other_text_stays() {
        let shown = printable("a\u{1b}[2Jb\r\nc\0d\u{7f}e\\n é");
        assert_eq!(
            shown,
            "a\u{fffd}[2Jb\u{fffd}\u{fffd}c\u{fffd}d\u{fffd}e\\n é"
        );
        assert!(matches!(
            printable("no controls"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(
            !printable_lossy(b"\x1b\x00\r\n\xc3")
                .chars()
                .any(char::is_control)
        );
    }
}

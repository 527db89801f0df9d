//! A parser of the Prometheus text exposition format (version 0.0.4), the samples only:
//! `name{label="value",...} value [timestamp]` a line, `#` lines (HELP, TYPE, comments)
//! and blank lines skipped. The text comes from another process and is treated as
//! hostile: the parser is linear in its input, never panics, and names the line of the
//! first error.

use std::collections::BTreeMap;

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// The metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    pub(crate) name: String,
    /// The labels, by name (a label given twice is an error).
    pub(crate) labels: BTreeMap<String, String>,
    /// The value (`NaN`, `+Inf` and `-Inf` included).
    pub(crate) value: f64,
    /// The optional timestamp, in ms since the epoch.
    pub(crate) timestamp_ms: Option<i64>,
}

/// A line that is not a sample of the text format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub(crate) struct ParseError {
    /// The line, from 1.
    pub(crate) line: usize,
    /// What is wrong with it.
    pub(crate) kind: ParseErrorKind,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseErrorKind {
    /// The line does not start with a metric name.
    #[error("expected a metric name")]
    MetricName,
    /// A label name is missing or malformed.
    #[error("expected a label name")]
    LabelName,
    /// A label name is not followed by `=`.
    #[error("expected '=' after label {0:?}")]
    Equals(String),
    /// A label value does not start with `"`.
    #[error("expected '\"' to open the value of label {0:?}")]
    OpenQuote(String),
    /// A label value is not closed before the end of the line.
    #[error("unterminated value of label {0:?}")]
    Unterminated(String),
    /// A label value holds an escape other than `\\`, `\"`, `\n`.
    #[error("bad escape '\\{escape}' in the value of label {label:?}")]
    Escape {
        /// The label.
        label: String,
        /// The character after the backslash.
        escape: char,
    },
    /// A label is given twice.
    #[error("label {0:?} given twice")]
    DuplicateLabel(String),
    /// The label set is not closed by `}`, or a label is not followed by `,`.
    #[error("expected ',' or '}}' after the value of label {0:?}")]
    LabelEnd(String),
    /// The value is missing.
    #[error("expected a value after the metric name and labels")]
    MissingValue,
    /// The value is not a number.
    #[error("bad value {0:?}")]
    Value(String),
    /// The timestamp is not an integer.
    #[error("bad timestamp {0:?}")]
    Timestamp(String),
    /// Something follows the timestamp.
    #[error("unexpected {0:?} after the timestamp")]
    Trailing(String),
}

/// Longest excerpt of the input an error quotes (a hostile line can be megabytes long).
const QUOTE_MAX: usize = 64;

/// Parses a whole exposition; the first bad line is the error.
pub(crate) fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index.saturating_add(1);
        let trimmed = line.trim_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let sample = parse_line(trimmed).map_err(|kind| ParseError {
            line: line_no,
            kind,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

/// Parses one sample line (not blank, not a comment, trimmed).
pub(crate) fn parse_line(line: &str) -> Result<Sample, ParseErrorKind> {
    let mut cursor = Cursor { rest: line };
    let name = cursor
        .take_while_name(is_metric_start, is_metric_char)
        .ok_or(ParseErrorKind::MetricName)?
        .to_owned();
    let mut labels = BTreeMap::new();
    let blank_after_name = cursor.skip_blanks();
    let braced = cursor.eat('{');
    if braced {
        parse_labels(&mut cursor, &mut labels)?;
    }
    cursor.skip_blanks();
    let value_text = cursor.word();
    if value_text.is_empty() {
        return Err(ParseErrorKind::MissingValue);
    }
    if !blank_after_name && !braced {
        // `name!` and the like: the name ended on a character that is not a blank.
        return Err(ParseErrorKind::MetricName);
    }
    let value = parse_value(value_text).ok_or_else(|| ParseErrorKind::Value(quote(value_text)))?;
    cursor.skip_blanks();
    let timestamp_text = cursor.word();
    let timestamp_ms = if timestamp_text.is_empty() {
        None
    } else {
        Some(
            timestamp_text
                .parse::<i64>()
                .map_err(|_| ParseErrorKind::Timestamp(quote(timestamp_text)))?,
        )
    };
    cursor.skip_blanks();
    if !cursor.rest.is_empty() {
        return Err(ParseErrorKind::Trailing(quote(cursor.rest)));
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

/// Parses `label="value",...}` (the `{` already eaten).
fn parse_labels(
    cursor: &mut Cursor<'_>,
    labels: &mut BTreeMap<String, String>,
) -> Result<(), ParseErrorKind> {
    loop {
        cursor.skip_blanks();
        if cursor.eat('}') {
            return Ok(()); // `{}` or a trailing comma
        }
        let label = cursor
            .take_while_name(is_label_start, is_label_char)
            .ok_or(ParseErrorKind::LabelName)?
            .to_owned();
        cursor.skip_blanks();
        if !cursor.eat('=') {
            return Err(ParseErrorKind::Equals(label));
        }
        cursor.skip_blanks();
        if !cursor.eat('"') {
            return Err(ParseErrorKind::OpenQuote(label));
        }
        let value = cursor.quoted(&label)?;
        if labels.contains_key(&label) {
            return Err(ParseErrorKind::DuplicateLabel(label));
        }
        cursor.skip_blanks();
        let more = cursor.eat(',');
        let end = !more && cursor.eat('}');
        labels.insert(label.clone(), value);
        if end {
            return Ok(());
        }
        if !more {
            return Err(ParseErrorKind::LabelEnd(label));
        }
    }
}

/// A sample value: a Go-style float (`NaN`, `+Inf`, `-Inf`, `1e3`, `-0.5`).
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        // Rust's parser also takes "infinity" and the like: only digits, signs, dots and
        // exponents get that far.
        _ if text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E')) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// The start of `text`, at most [`QUOTE_MAX`] characters, for an error message.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

fn is_metric_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn is_label_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// What is left of a line.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    /// Skips spaces and tabs; whether there were any.
    fn skip_blanks(&mut self) -> bool {
        let before = self.rest.len();
        self.rest = self.rest.trim_start_matches([' ', '\t']);
        self.rest.len() != before
    }

    /// Eats `c` if it comes next.
    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// Takes a name: one `start` character, then `more` characters.
    fn take_while_name(
        &mut self,
        start: fn(char) -> bool,
        more: fn(char) -> bool,
    ) -> Option<&'a str> {
        let mut chars = self.rest.char_indices();
        match chars.next() {
            Some((_, c)) if start(c) => {}
            _ => return None,
        }
        let end = chars
            .find(|&(_, c)| !more(c))
            .map_or(self.rest.len(), |(i, _)| i);
        let (name, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(name)
    }

    /// Takes everything up to the next blank.
    fn word(&mut self) -> &'a str {
        let end = self.rest.find([' ', '\t']).unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        word
    }

    /// Takes a label value up to its closing `"` (the opening one already eaten),
    /// unescaping `\\`, `\"` and `\n`.
    fn quoted(&mut self, label: &str) -> Result<String, ParseErrorKind> {
        let mut value = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = self.rest.get(i.saturating_add(1)..).unwrap_or_default();
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escape)) => {
                        return Err(ParseErrorKind::Escape {
                            label: label.to_owned(),
                            escape,
                        });
                    }
                    None => break,
                },
                c => value.push(c),
            }
        }
        Err(ParseErrorKind::Unterminated(label.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn good_lines() {
        let text = "\
# HELP dms_requests_total requests by outcome
# TYPE dms_requests_total counter
dms_requests_total{node=\"/a/b/c/d/e/F/f-1\",outcome=\"ok\"} 3

dms_peers_ready{node=\"/a/b/c/d/e/F/f-1\"} 0
   dms_up 1 1700000000000
dms_ratio -1.5e-3
dms_nan NaN
dms_inf +Inf
dms_ninf{x=\"y\",} -Inf
dms_empty{} 7
dms_spaced { a = \"1\" , b=\"2\" }\t42
ns:sub_metric 5
";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 10);
        assert_eq!(samples[0].name, "dms_requests_total");
        assert_eq!(
            samples[0].labels,
            labels(&[("node", "/a/b/c/d/e/F/f-1"), ("outcome", "ok")])
        );
        assert!((samples[0].value - 3.0).abs() < f64::EPSILON);
        assert_eq!(samples[0].timestamp_ms, None);
        assert_eq!(samples[2].name, "dms_up");
        assert_eq!(samples[2].timestamp_ms, Some(1_700_000_000_000));
        assert!((samples[3].value + 0.0015).abs() < 1e-12);
        assert!(samples[4].value.is_nan());
        assert_eq!(samples[5].value, f64::INFINITY);
        assert_eq!(samples[6].value, f64::NEG_INFINITY);
        assert_eq!(samples[6].labels, labels(&[("x", "y")]));
        assert!(samples[7].labels.is_empty());
        assert_eq!(samples[8].labels, labels(&[("a", "1"), ("b", "2")]));
        assert!((samples[8].value - 42.0).abs() < f64::EPSILON);
        assert_eq!(samples[9].name, "ns:sub_metric");
    }

    #[test]
    fn escaped_label_values() {
        let line = r#"m{a="say \"hi\"",b="back\\slash",c="two\nlines",d="{},= #"} 1"#;
        let sample = parse_line(line).unwrap();
        assert_eq!(
            sample.labels,
            labels(&[
                ("a", "say \"hi\""),
                ("b", "back\\slash"),
                ("c", "two\nlines"),
                ("d", "{},= #"),
            ])
        );
        // Unicode in values is kept as it is.
        let sample = parse_line("m{a=\"é✓\"} 2").unwrap();
        assert_eq!(sample.labels["a"], "é✓");
    }

    #[test]
    fn garbage_lines_name_their_line() {
        let cases: &[(&str, ParseErrorKind)] = &[
            ("1abc 2", ParseErrorKind::MetricName),
            ("{a=\"b\"} 2", ParseErrorKind::MetricName),
            ("m! 2", ParseErrorKind::MetricName),
            ("m", ParseErrorKind::MissingValue),
            ("m{a=\"b\"}", ParseErrorKind::MissingValue),
            ("m twelve", ParseErrorKind::Value("twelve".into())),
            ("m infinity", ParseErrorKind::Value("infinity".into())),
            ("m 1 soon", ParseErrorKind::Timestamp("soon".into())),
            ("m 1 2 3", ParseErrorKind::Trailing("3".into())),
            ("m{1=\"b\"} 2", ParseErrorKind::LabelName),
            ("m{a\"b\"} 2", ParseErrorKind::Equals("a".into())),
            ("m{a=b} 2", ParseErrorKind::OpenQuote("a".into())),
            ("m{a=\"b} 2", ParseErrorKind::Unterminated("a".into())),
            ("m{a=\"b\\", ParseErrorKind::Unterminated("a".into())),
            (
                "m{a=\"\\t\"} 2",
                ParseErrorKind::Escape {
                    label: "a".into(),
                    escape: 't',
                },
            ),
            (
                "m{a=\"1\",a=\"2\"} 2",
                ParseErrorKind::DuplicateLabel("a".into()),
            ),
            ("m{a=\"1\" b=\"2\"} 2", ParseErrorKind::LabelEnd("a".into())),
            ("m{a=\"1\"", ParseErrorKind::LabelEnd("a".into())),
        ];
        for (line, kind) in cases {
            let text = format!("# ok\ngood 1\n{line}\ngood 2\n");
            let error = parse(&text).unwrap_err();
            assert_eq!(error.line, 3, "{line:?}");
            assert_eq!(&error.kind, kind, "{line:?}");
            assert!(error.to_string().starts_with("line 3: "), "{error}");
        }
        // Not text at all: an HTML page, a binary blob made text.
        assert!(parse("<html><body>hi</body></html>").is_err());
        assert!(parse("\u{0}\u{1}\u{fffd}\u{fffd}").is_err());
    }

    #[test]
    fn huge_input_is_linear_and_errors_are_short() {
        // 200,000 good lines parse (a 4 MiB scrape is about as many).
        let mut text = String::new();
        for i in 0..200_000 {
            text.push_str(&format!("dms_x{{node=\"/n/{i}\"}} {i}\n"));
        }
        let samples = parse(&text).unwrap();
        assert_eq!(samples.len(), 200_000);
        assert!((samples[199_999].value - 199_999.0).abs() < f64::EPSILON);
        // One 4 MiB line of garbage: an error, quoted short.
        let line = format!("m {}", "9x".repeat(2 << 20));
        let error = parse(&line).unwrap_err();
        assert_eq!(error.line, 1);
        assert!(error.to_string().len() < 200, "{error}");
        // A 4 MiB label value that never closes, and one made of escapes.
        let open = format!("m{{a=\"{}", "z".repeat(4 << 20));
        assert_eq!(
            parse(&open).unwrap_err().kind,
            ParseErrorKind::Unterminated("a".into())
        );
        let escapes = format!("m{{a=\"{}\"}} 1", "\\\\".repeat(1 << 20));
        assert_eq!(parse(&escapes).unwrap()[0].labels["a"].len(), 1 << 20);
        // A hundred thousand labels on one line.
        let mut many = String::from("m{");
        for i in 0..100_000 {
            many.push_str(&format!("l{i}=\"v\","));
        }
        many.push_str("} 1");
        assert_eq!(parse(&many).unwrap()[0].labels.len(), 100_000);
    }
}

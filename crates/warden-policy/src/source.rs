//! Policy texts as the caller hands them over, and errors that point back into them.

use std::fmt;

use warden_core::NamespacePath;

/// The policies of one file or one API document, attached to one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySource {
    /// The namespace the policies apply to (and everything below it).
    pub namespace: NamespacePath,
    /// Where the text comes from, so a person can find it: `acme/platform/tools.cedar`
    /// (relative to the policy directory) or `api:acme/platform`.
    pub origin: String,
    pub text: String,
}

impl PolicySource {
    pub fn new(
        namespace: NamespacePath,
        origin: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        PolicySource {
            namespace,
            origin: origin.into(),
            text: text.into(),
        }
    }
}

/// A policy (or schema extension) that cannot be used, located in its source.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct PolicyError {
    pub origin: String,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
    pub message: String,
}

impl PolicyError {
    pub(crate) fn at(
        origin: &str,
        lines: &LineIndex<'_>,
        offset: usize,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = lines.line_col(offset);
        PolicyError {
            origin: origin.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Maps byte offsets in a text to 1-based lines and columns.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    pub(crate) fn line_col(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1) - 1;
        let start = self.starts[line];
        // Offsets from Cedar are char boundaries; be lenient if one is not.
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line as u32 + 1, column as u32 + 1)
    }
}

/// One policy's text inside its source: `text[start..end]`, from its first token (an
/// annotation or the effect) through its terminating `;`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

/// Splits a Cedar policy text into its policies so that each one can be parsed on its own
/// and its errors and line numbers mapped back into the source. A `;` ends a policy unless
/// it is inside a string or a `//` comment: Cedar has no other use for it. Text after the
/// last `;` that is not blank or a comment is returned as a span too, so the parser
/// reports what is missing.
pub(crate) fn split_policies(text: &str) -> Vec<Span> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = memchr_newline(bytes, i);
                continue;
            }
            b'"' => {
                start.get_or_insert(i);
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b';' => {
                let s = start.take().unwrap_or(i);
                spans.push(Span {
                    start: s,
                    end: i + 1,
                });
            }
            b if b.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    if let Some(s) = start {
        spans.push(Span {
            start: s,
            end: text.len(),
        });
    }
    spans
}

fn memchr_newline(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| from + p)
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.origin, self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_strings_and_comments() {
        let text = "// a; comment\n@id(\"a;b\")\npermit(principal, action, resource);\n\n  forbid(principal, action, resource) when { \"x;\\\"y\" == \"\" };\n// end;\n";
        let spans = split_policies(text);
        assert_eq!(spans.len(), 2);
        assert!(text[spans[0].start..spans[0].end].starts_with("@id(\"a;b\")"));
        assert!(text[spans[1].start..spans[1].end].starts_with("forbid"));
        assert!(text[spans[1].start..spans[1].end].ends_with("};"));
    }

    #[test]
    fn unterminated_tail_is_kept() {
        let spans = split_policies(
            "permit(principal, action, resource);\npermit(principal, action, resource)\n",
        );
        assert_eq!(spans.len(), 2);
    }

    #[test]
    fn lines_and_columns_are_one_based() {
        let idx = LineIndex::new("ab\ncdé\nf");
        assert_eq!(idx.line_col(0), (1, 1));
        assert_eq!(idx.line_col(3), (2, 1));
        assert_eq!(idx.line_col(5), (2, 3));
        assert_eq!(idx.line_col(7), (2, 4));
        assert_eq!(idx.line_col(8), (3, 1));
    }
}

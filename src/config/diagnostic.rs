//! Config errors that point at the problem: `path:line:col: message`, the source line and a
//! caret under the offending value. All problems of a load are collected and shown together.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One problem in one config file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The source line, with a value that must not be echoed (a literal secret) masked.
    pub source_line: String,
    /// Width of the caret run under the source line (at least 1).
    pub width: usize,
}

/// A config file's text, kept to turn byte offsets into lines and columns.
#[derive(Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: Arc<str>,
    /// Lines of the file before `text` (a file is parsed in parts, one per `[[credential]]`).
    pub lines_before: usize,
}

impl SourceFile {
    pub fn new(path: &Path, text: String) -> Self {
        Self::part(path, text, 0)
    }

    /// A part of a file that starts after `lines_before` lines.
    pub fn part(path: &Path, text: String, lines_before: usize) -> Self {
        Self {
            path: path.to_owned(),
            text: text.into(),
            lines_before,
        }
    }

    /// A diagnostic at byte range `span` of this file; an unknown span points at the file start.
    pub fn diagnostic(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        let message = message.into();
        let span = span.unwrap_or(0..0);
        let start = floor_char_boundary(&self.text, span.start.min(self.text.len()));
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line = self.lines_before + self.text[..start].matches('\n').count() + 1;
        let column = self.text[line_start..start].chars().count() + 1;
        let mut source_line = self.text[line_start..line_end]
            .trim_end_matches('\r')
            .to_owned();
        let end = floor_char_boundary(&self.text, span.end.clamp(start, line_end));
        let width = self.text[start..end].chars().count().max(1);
        if message.contains("literal secret") {
            // Never print a secret back, even the operator's own: mask the value on the line.
            let masked: String = source_line
                .char_indices()
                .map(|(i, c)| {
                    if i >= start - line_start && i < end - line_start && !c.is_whitespace() {
                        '*'
                    } else {
                        c
                    }
                })
                .collect();
            source_line = masked;
        }
        Diagnostic {
            path: self.path.clone(),
            line,
            column,
            message,
            source_line,
            width,
        }
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )?;
        let gutter = self.line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        let pad: String = self
            .source_line
            .chars()
            .take(self.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{:gutter$} | {pad}{}", "", "^".repeat(self.width))
    }
}

/// Everything wrong with a set of config files.
#[derive(Debug, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{d}")?;
        }
        write!(
            f,
            "{} error{} in config",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_at_line_and_column_with_a_caret() {
        let file = SourceFile::new(
            Path::new("a.toml"),
            "x = 1\nvault = { name = \"bao2\" }\n".into(),
        );
        let start = file.text.find("\"bao2\"").unwrap();
        let d = file.diagnostic(Some(start..start + 6), "unknown vault");
        assert_eq!((d.line, d.column), (2, 18));
        let shown = d.to_string();
        assert!(shown.starts_with("a.toml:2:18: unknown vault\n"), "{shown}");
        assert!(shown.ends_with("  |                  ^^^^^^"), "{shown}");
    }

    #[test]
    fn masks_a_literal_secret_on_the_source_line() {
        let file = SourceFile::new(Path::new("a.toml"), "token = \"hunter2\"\n".into());
        let d = file.diagnostic(Some(8..17), "a literal secret is not allowed");
        assert!(!d.to_string().contains("hunter2"));
    }
}

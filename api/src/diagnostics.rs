//! Spec errors that say where: file, line, column and key.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem found in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the spec came from, as the user named it.
    pub file: String,
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
    /// The dotted key the problem is at (`components.api.limits.memory`),
    /// empty for the document as a whole.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a spec, in the order they appear in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The problems; never empty.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        let file = self
            .diagnostics
            .first()
            .map_or("the spec", |d| d.file.as_str());
        write!(
            f,
            "{file} is not a valid app spec ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics against one source text.
pub(crate) struct Collector<'a> {
    file: &'a str,
    text: &'a str,
    doc: Option<&'a Spanned<DeTable<'a>>>,
    found: Vec<(usize, Diagnostic)>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Collector {
            file,
            text,
            doc: None,
            found: Vec::new(),
        }
    }

    /// Uses `doc` to name the key at each problem's position.
    pub(crate) fn with_document(mut self, doc: &'a Spanned<DeTable<'a>>) -> Self {
        self.doc = Some(doc);
        self
    }

    /// Records a problem at `span` (or the document's start when unknown).
    pub(crate) fn at(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let offset = span.map_or(0, |s| s.start.min(self.text.len()));
        let (line, column) = line_and_column(self.text, offset);
        let key = self
            .doc
            .map(|doc| key_path_at(doc.get_ref(), offset).join("."))
            .unwrap_or_default();
        self.found.push((
            offset,
            Diagnostic {
                file: self.file.to_string(),
                line,
                column,
                key,
                message: message.into(),
            },
        ));
    }

    /// Records a TOML or serde error, falling back to `fallback` for its position.
    pub(crate) fn toml_error(&mut self, err: &toml::de::Error, fallback: Range<usize>) {
        let span = err
            .span()
            .filter(|s| s.start != 0 || s.end != 0)
            .unwrap_or(fallback);
        self.at(Some(span), tidy(err.message()));
    }

    /// True while no problem has been recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The problems found, sorted by position, or `Ok` when there are none.
    pub(crate) fn finish(mut self) -> Result<(), SpecError> {
        if self.found.is_empty() {
            return Ok(());
        }
        self.found.sort_by_key(|(offset, _)| *offset);
        self.found.dedup_by(|a, b| a.1 == b.1);
        Err(SpecError {
            diagnostics: self.found.into_iter().map(|(_, d)| d).collect(),
        })
    }
}

/// Makes serde's messages read like ours ("unknown field `replica`, expected
/// one of …" stays; trailing whitespace and newlines go).
fn tidy(message: &str) -> String {
    message.trim().replace('\n', " ")
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The dotted path of keys whose key or value covers `offset`.
///
/// Tables written as `[section]` headers do not always span their whole
/// body, so nested tables are searched even when their span misses.
fn key_path_at(table: &DeTable<'_>, offset: usize) -> Vec<String> {
    let covers = |span: Range<usize>| span.start <= offset && offset < span.end.max(span.start + 1);
    for (key, value) in table.iter() {
        let inner = value_path_at(value.get_ref(), offset);
        if covers(key.span()) || covers(value.span()) || !inner.is_empty() {
            let mut path = vec![key.get_ref().to_string()];
            path.extend(inner);
            return path;
        }
    }
    Vec::new()
}

fn value_path_at(value: &DeValue<'_>, offset: usize) -> Vec<String> {
    match value {
        DeValue::Table(table) => key_path_at(table, offset),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let span = item.span();
                let inner = value_path_at(item.get_ref(), offset);
                if (span.start <= offset && offset < span.end) || !inner.is_empty() {
                    let mut path = vec![i.to_string()];
                    path.extend(inner);
                    return path;
                }
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// The span of the value at `path` in `doc`, if it is there.
pub(crate) fn span_of(doc: &Spanned<DeTable<'_>>, path: &[&str]) -> Option<Range<usize>> {
    let mut table = doc.get_ref();
    let mut span = doc.span();
    for (i, part) in path.iter().enumerate() {
        let (_, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        span = value.span();
        if i + 1 < path.len() {
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => return None,
            }
        }
    }
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        assert_eq!(line_and_column("abc", 0), (1, 1));
        assert_eq!(line_and_column("abc\nde", 5), (2, 2));
        assert_eq!(line_and_column("é\nx", 3), (2, 1));
    }
}

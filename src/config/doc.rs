//! The commented config files as documentation: each setting with the comment above it.
//!
//! Shipped files (etc/faas/NAME.toml) follow one layout, which the man page faas.toml(5) and the
//! tests rely on: an introduction (comment paragraphs before the first setting), then every
//! setting as `key = default` directly under a comment that explains it. A comment block that
//! ends in `# key = example`, followed by a blank line, documents a setting that is unset by
//! default. `[table]` headers may carry a comment too.

/// One documented item of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Table the item is in (`None` at the top level); for a table header, its own name.
    pub table: Option<String>,
    /// Key name; `None` for a table header.
    pub key: Option<String>,
    /// The value as written (the default, or an example when `unset`).
    pub value: String,
    /// The comment above, as paragraphs of joined lines.
    pub doc: Vec<String>,
    /// A commented-out setting: unset by default, `value` is an example.
    pub unset: bool,
}

impl Entry {
    /// Dotted key (`executor.python`); the table name for a table header.
    pub fn path(&self) -> String {
        match (&self.table, &self.key) {
            (Some(t), Some(k)) => format!("{t}.{k}"),
            (None, Some(k)) => k.clone(),
            (Some(t), None) => t.clone(),
            (None, None) => String::new(),
        }
    }
}

/// A parsed config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Doc {
    /// Paragraphs before the first setting.
    pub intro: Vec<String>,
    pub entries: Vec<Entry>,
}

/// Parses a commented config file; errors name the line that breaks the layout.
pub fn parse(text: &str) -> Result<Doc, String> {
    let mut doc = Doc::default();
    let mut block: Vec<String> = Vec::new();
    let mut table: Option<String> = None;
    let mut started = false;
    // A blank line at the end closes a final commented-out setting.
    for (n, raw) in text.lines().chain(std::iter::once("")).enumerate() {
        let line = raw.trim();
        if let Some(comment) = line.strip_prefix('#') {
            block.push(comment.strip_prefix(' ').unwrap_or(comment).to_string());
        } else if line.is_empty() {
            if block.is_empty() {
                continue;
            }
            let last = block.last().cloned().unwrap_or_default();
            if let Some((key, value)) = setting(&last) {
                block.pop();
                doc.entries.push(Entry {
                    table: table.clone(),
                    key: Some(key.into()),
                    value: value.into(),
                    doc: paragraphs(&block),
                    unset: true,
                });
            } else if !started {
                doc.intro.extend(paragraphs(&block));
            } else {
                return Err(format!(
                    "line {n}: comment not attached to a setting (remove the blank line after it)"
                ));
            }
            block.clear();
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            started = true;
            table = Some(name.trim().to_string());
            doc.entries.push(Entry {
                table: table.clone(),
                key: None,
                value: String::new(),
                doc: paragraphs(&block),
                unset: false,
            });
            block.clear();
        } else if let Some((key, value)) = setting(line) {
            started = true;
            doc.entries.push(Entry {
                table: table.clone(),
                key: Some(key.into()),
                value: value.into(),
                doc: paragraphs(&block),
                unset: false,
            });
            block.clear();
        } else {
            return Err(format!("line {}: not a setting: {raw}", n + 1));
        }
    }
    Ok(doc)
}

/// `key = value` with a bare key.
fn setting(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    bare.then(|| (key, value.trim()))
}

/// Comment lines joined into paragraphs (an empty comment line separates them).
fn paragraphs(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(cur.join(" "));
                cur.clear();
            }
        } else {
            cur.push(line.trim());
        }
    }
    if !cur.is_empty() {
        out.push(cur.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layout() {
        let doc = parse(
            "# Intro one\n# more.\n#\n# Para two.\n\n# The port.\nport = 1\n\n# Tbl.\n[t]\n\n\
             # A path.\n# path = \"/x\"\n\n# Name.\nname = \"a\"\n",
        )
        .unwrap();
        assert_eq!(doc.intro, vec!["Intro one more.", "Para two."]);
        let paths: Vec<String> = doc.entries.iter().map(Entry::path).collect();
        assert_eq!(paths, vec!["port", "t", "t.path", "t.name"]);
        assert!(doc.entries[2].unset);
        assert_eq!(doc.entries[2].value, "\"/x\"");
        assert_eq!(doc.entries[3].doc, vec!["Name."]);
    }

    #[test]
    fn stray_comment_is_an_error() {
        assert!(parse("a = 1\n\n# Stray.\n\nb = 2\n").is_err());
        assert!(parse("a = 1\n# Stray.").is_err());
        let doc = parse("a = 1\n# Path.\n# p = 1").unwrap();
        assert!(doc.entries[1].unset);
    }
}

//! Finds the line a key path was written on, so issues can say "line 12".
//!
//! figment keeps no positions, so this scans the text itself. It understands the shapes
//! config files are written in (TOML headers, `key = value`, dotted keys, inline tables;
//! YAML block mappings by indentation and flow mappings) and is deliberately forgiving:
//! when it cannot place a key it returns the line of the nearest enclosing table, or
//! nothing. A wrong guess costs a line number, never a wrong verdict.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub(crate) struct Locator {
    /// Dotted key path (no list indices) → 1-based line of its first occurrence.
    lines: HashMap<String, usize>,
}

impl Locator {
    pub(crate) fn new(text: &str, yaml: bool) -> Self {
        let mut locator = Locator::default();
        if yaml {
            locator.scan_yaml(text);
        } else {
            locator.scan_toml(text);
        }
        locator
    }

    /// The line of `path` (`sinks.audit.retry.max_attempts`, `pipelines.p.to[1]`), or of its
    /// nearest enclosing key that could be found.
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        let segments = path_segments(path);
        (1..=segments.len())
            .rev()
            .find_map(|n| self.lines.get(&segments[..n].join(".")).copied())
    }

    fn record(&mut self, segments: &[String], line: usize) {
        self.lines.entry(segments.join(".")).or_insert(line);
    }

    fn scan_toml(&mut self, text: &str) {
        let mut table: Vec<String> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if let Some(header) = content.strip_prefix('[') {
                let header = header.strip_prefix('[').unwrap_or(header);
                if let Some((segments, _)) = parse_key(header.as_bytes(), b']', false) {
                    table = segments;
                    self.record(&table, line);
                }
                continue;
            }
            let Some((segments, consumed)) = parse_key(content.as_bytes(), b'=', false) else {
                continue;
            };
            let mut path = table.clone();
            path.extend(segments);
            self.record(&path, line);
            let rest = content[consumed..].trim_start();
            if let Some(inner) = rest.strip_prefix('{') {
                self.scan_inline(inner, path, line, b'=', false);
            }
        }
    }

    fn scan_yaml(&mut self, text: &str) {
        let mut stack: Vec<(usize, String)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.trim_start();
            let indent = raw.len() - content.len();
            if content.is_empty()
                || content.starts_with('#')
                || content.starts_with('-')
                || content.starts_with("...")
            {
                continue;
            }
            let Some((segments, consumed)) = parse_key(content.as_bytes(), b':', true) else {
                continue;
            };
            while stack.last().is_some_and(|(level, _)| *level >= indent) {
                stack.pop();
            }
            let mut path: Vec<String> = stack.iter().map(|(_, key)| key.clone()).collect();
            path.extend(segments.iter().cloned());
            self.record(&path, line);
            stack.push((indent, segments.join(".")));
            let rest = content[consumed..].trim_start();
            if let Some(inner) = rest.strip_prefix('{') {
                self.scan_inline(inner, path, line, b':', true);
            }
        }
    }

    /// Records the keys of an inline table / flow mapping; `text` starts after its `{`.
    fn scan_inline(&mut self, text: &str, prefix: Vec<String>, line: usize, sep: u8, yaml: bool) {
        let bytes = text.as_bytes();
        let mut stack = vec![prefix];
        let mut i = 0;
        let mut expecting_key = true;
        while i < bytes.len() {
            let Some(current) = stack.last().cloned() else {
                return;
            };
            if expecting_key {
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                expecting_key = false;
                if let Some((segments, consumed)) = parse_key(&bytes[i..], sep, yaml) {
                    let mut path = current;
                    path.extend(segments);
                    self.record(&path, line);
                    i += consumed;
                    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    if bytes.get(i) == Some(&b'{') {
                        stack.push(path);
                        expecting_key = true;
                        i += 1;
                    }
                }
                continue;
            }
            match bytes[i] {
                b'"' | b'\'' => i = skip_string(bytes, i),
                b'{' => {
                    stack.push(current);
                    expecting_key = true;
                    i += 1;
                }
                b'}' => {
                    stack.pop();
                    i += 1;
                }
                b',' => {
                    expecting_key = true;
                    i += 1;
                }
                _ => i += 1,
            }
        }
    }
}

/// Splits `a.b[2].c` into `["a", "b", "c"]`.
pub(crate) fn path_segments(path: &str) -> Vec<String> {
    path.split('.')
        .filter(|segment| !segment.is_empty())
        .map(|segment| match segment.find('[') {
            Some(bracket) => segment[..bracket].to_string(),
            None => segment.to_string(),
        })
        .collect()
}

/// Index just past the string starting at `start` (a `"` or `'`).
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        if quote == b'"' && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// Parses a (possibly dotted, possibly quoted) key followed by `sep`; returns its segments
/// and the number of bytes consumed, separator included.
fn parse_key(bytes: &[u8], sep: u8, yaml: bool) -> Option<(Vec<String>, usize)> {
    let mut segments = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        let start = i;
        match bytes.get(i)? {
            b'"' | b'\'' => {
                i = skip_string(bytes, i);
                let inner = bytes.get(start + 1..i.saturating_sub(1))?;
                segments.push(String::from_utf8_lossy(inner).into_owned());
            }
            _ => {
                while i < bytes.len() && is_bare_key_byte(bytes[i], yaml, sep) {
                    i += 1;
                }
                let key = String::from_utf8_lossy(&bytes[start..i]).trim().to_string();
                if key.is_empty() {
                    return None;
                }
                segments.push(key);
            }
        }
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'.') if !yaml => i += 1,
            Some(&found) if found == sep => {
                if yaml && !matches!(bytes.get(i + 1), None | Some(b' ' | b'\t' | b',' | b'}')) {
                    return None;
                }
                return Some((segments, i + 1));
            }
            _ => return None,
        }
    }
}

fn is_bare_key_byte(byte: u8, yaml: bool, sep: u8) -> bool {
    if yaml {
        // YAML plain keys may hold spaces and dots; stop at structure.
        !matches!(byte, b':' | b'#' | b'{' | b'}' | b'[' | b']' | b',') && byte != sep
    } else {
        byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_headers_keys_and_inline_tables() {
        let text = "\
# comment
[server]
listen = \"x\"

[sinks.audit]
type = \"webhook\"
retry = { max_attempts = 0, initial = \"1s\" }
tables = [
  \"public.orders\",
]
plugins.p.path = \"x.wasm\"
";
        let locator = Locator::new(text, false);
        assert_eq!(locator.line("server.listen"), Some(3));
        assert_eq!(locator.line("server.missing"), Some(2));
        assert_eq!(locator.line("sinks.audit.type"), Some(6));
        assert_eq!(locator.line("sinks.audit.retry.initial"), Some(7));
        assert_eq!(locator.line("sinks.audit.tables[0]"), Some(8));
        assert_eq!(locator.line("sinks.audit.plugins.p.path"), Some(11));
        assert_eq!(locator.line("queues.x"), None);
    }

    #[test]
    fn yaml_block_and_flow_mappings() {
        let text = "\
server:
  listen: 127.0.0.1:8080
sinks:
  audit:
    type: webhook
    url: http://example.com/hook
    retry: {max_attempts: 0, initial: 1s}
  console:
    type: stdout
";
        let locator = Locator::new(text, true);
        assert_eq!(locator.line("server.listen"), Some(2));
        assert_eq!(locator.line("sinks.audit.url"), Some(6));
        assert_eq!(locator.line("sinks.audit.retry.max_attempts"), Some(7));
        assert_eq!(locator.line("sinks.console.type"), Some(9));
        assert_eq!(locator.line("sinks.console.path"), Some(8));
    }
}

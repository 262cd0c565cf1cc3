//! Finds the line of a field in a config file, for validation errors (which
//! are found after decoding, when serde's positions are gone). One linear
//! scan over block-style YAML, the form config files are written in; a value
//! in flow style (`[a, b]`, `{k: v}`) is located at its key's line.

use std::collections::HashMap;

/// Dotted field paths (`iptables.masqueradeBit`, `nodePortAddresses[1]`)
/// mapped to their 1-based lines in the first YAML document.
pub(crate) struct FieldLines(HashMap<String, usize>);

struct Entry {
    indent: usize,
    path: String,
    /// A sequence item (`- `) rather than a key.
    item: bool,
}

impl FieldLines {
    pub(crate) fn scan(text: &str) -> FieldLines {
        let mut lines = HashMap::new();
        let mut stack: Vec<Entry> = Vec::new();
        let mut items: HashMap<String, usize> = HashMap::new();
        let mut seen_content = false;
        // Lines more indented than this belong to a block scalar.
        let mut block_scalar: Option<usize> = None;
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let body = raw.trim_start_matches(' ');
            let mut indent = raw.len() - body.len();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            if let Some(parent) = block_scalar {
                if indent > parent {
                    continue;
                }
                block_scalar = None;
            }
            if indent == 0 && (is_marker(body, "---") || is_marker(body, "...")) {
                if seen_content {
                    break; // only the first document is decoded
                }
                continue;
            }
            seen_content = true;
            let mut rest = body;
            // `- ` items, possibly several on one line (`- - a`).
            while rest == "-" || rest.starts_with("- ") {
                while stack
                    .last()
                    .is_some_and(|e| e.indent > indent || (e.indent == indent && e.item))
                {
                    stack.pop();
                }
                let parent = stack.last().map_or("", |e| e.path.as_str()).to_string();
                let index = items.entry(parent.clone()).or_insert(0);
                let path = format!("{parent}[{index}]");
                *index += 1;
                lines.entry(path.clone()).or_insert(line_no);
                stack.push(Entry {
                    indent,
                    path,
                    item: true,
                });
                let after = rest[1..].trim_start_matches(' ');
                indent += rest.len() - after.len();
                rest = after;
            }
            let Some((key, value)) = split_key(rest) else {
                continue;
            };
            while stack.last().is_some_and(|e| e.indent >= indent) {
                stack.pop();
            }
            let path = match stack.last() {
                Some(e) => format!("{}.{key}", e.path),
                None => key.to_string(),
            };
            lines.entry(path.clone()).or_insert(line_no);
            // A new mapping restarts item numbering below this key.
            items.remove(&path);
            let value = value.trim();
            if value.starts_with('|') || value.starts_with('>') {
                block_scalar = Some(indent);
            }
            stack.push(Entry {
                indent,
                path,
                item: false,
            });
        }
        FieldLines(lines)
    }

    /// The line of `field`, else of its nearest enclosing key found in the
    /// file (`nodePortAddresses[1]` written as `[a, b]` → the key's line).
    pub(crate) fn line_of(&self, field: &str) -> Option<usize> {
        let mut path = field;
        loop {
            if let Some(&line) = self.0.get(path) {
                return Some(line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

fn is_marker(body: &str, marker: &str) -> bool {
    body.strip_prefix(marker)
        .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
}

/// `key: value` / `"key": value` → (key, value); None for anything else.
fn split_key(s: &str) -> Option<(&str, &str)> {
    let (key, after) = if let Some(q) = s.strip_prefix(['"', '\'']) {
        let quote = s.as_bytes()[0] as char;
        let end = q.find(quote)?;
        (&q[..end], q[end + 1..].trim_start_matches(' '))
    } else {
        let mut at = None;
        for (i, _) in s.match_indices(':') {
            let next = s[i + 1..].chars().next();
            if next.is_none_or(|c| c == ' ' || c == '\t') {
                at = Some(i);
                break;
            }
        }
        let i = at?;
        (s[..i].trim_end(), &s[i..])
    };
    let value = after.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with([' ', '\t'])) || key.starts_with('#') {
        return None;
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_items_and_falls_back_to_parents() {
        let text = "\
apiVersion: v1
# comment
iptables:
  masqueradeBit: 32
  syncPeriod: 1s
nodePortAddresses:
- 10.0.0.0/8
- 1.2.3.4
detectLocal:
  \"bridgeInterface\": x
ipvs:
  excludeCIDRs: [a, b]
logging:
  options: |
    iptables:
      masqueradeBit: 1
clusterCIDR: 10.0.0.0/8
---
mode: late
";
        let f = FieldLines::scan(text);
        assert_eq!(f.line_of("iptables.masqueradeBit"), Some(4));
        assert_eq!(f.line_of("iptables.syncPeriod"), Some(5));
        assert_eq!(f.line_of("iptables.minSyncPeriod"), Some(3), "parent");
        assert_eq!(f.line_of("nodePortAddresses[0]"), Some(7));
        assert_eq!(f.line_of("nodePortAddresses[1]"), Some(8));
        assert_eq!(f.line_of("detectLocal.bridgeInterface"), Some(10));
        assert_eq!(f.line_of("ipvs.excludeCIDRs[1]"), Some(12));
        assert_eq!(f.line_of("clusterCIDR"), Some(17), "block scalar skipped");
        assert_eq!(f.line_of("mode"), None, "second document ignored");
    }

    #[test]
    fn sequences_at_the_key_indent_and_item_mappings() {
        let text = "a:\n- x: 1\n  y: 2\n- x: 3\nb: 4\n";
        let f = FieldLines::scan(text);
        assert_eq!(f.line_of("a[0].y"), Some(3));
        assert_eq!(f.line_of("a[1].x"), Some(4));
        assert_eq!(f.line_of("b"), Some(5));
    }
}

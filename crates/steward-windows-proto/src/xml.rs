//! Hardened XML input and escaping output shared by the SOAP and SyncML codecs.
//!
//! Input comes from unauthenticated devices, so parsing is bounded before any tree is built:
//! DTDs (and with them entity declarations) are refused outright, never expanded; the node count and
//! the element depth are capped. roxmltree is namespace-aware, so callers match elements by
//! (namespace URI, local name) and never by the prefix a client happened to choose.

use thiserror::Error;

/// Most nodes a single inbound document may hold. A real enrollment request has ~100 nodes and a large
/// SyncML message a few thousand; this leaves room while bounding memory per request.
pub const MAX_NODES: u32 = 200_000;
/// Deepest element nesting accepted. SyncML nests Atomic/Sequence at most a few levels; SOAP ~8.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum XmlError {
    #[error("document type declarations are not allowed")]
    Dtd,
    #[error("document is not well-formed XML: {0}")]
    Malformed(String),
    #[error("document nests elements deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("document has too many nodes")]
    TooLarge,
}

/// Parses `text` with the limits above. Returns a namespace-aware DOM borrowing from `text`.
pub fn parse(text: &str) -> Result<roxmltree::Document<'_>, XmlError> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| match e {
        roxmltree::Error::DtdDetected => XmlError::Dtd,
        roxmltree::Error::NodesLimitReached => XmlError::TooLarge,
        other => XmlError::Malformed(other.to_string()),
    })?;
    if depth(doc.root_element()) > MAX_DEPTH {
        return Err(XmlError::TooDeep);
    }
    Ok(doc)
}

/// Element depth of the subtree rooted at `node`, iteratively (no recursion on attacker input).
fn depth(node: roxmltree::Node<'_, '_>) -> usize {
    let mut max = 0;
    let mut stack = vec![(node, 1usize)];
    while let Some((n, d)) = stack.pop() {
        max = max.max(d);
        if d > MAX_DEPTH {
            return d;
        }
        stack.extend(n.children().filter(|c| c.is_element()).map(|c| (c, d + 1)));
    }
    max
}

/// First child element of `node` with the given namespace URI and local name.
pub fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    ns: &str,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(ns))
}

/// Trimmed text of the first child element `ns:name`, if present and non-empty.
pub fn child_text<'a>(node: roxmltree::Node<'a, '_>, ns: &str, name: &str) -> Option<&'a str> {
    child(node, ns, name)
        .and_then(|c| c.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Escapes text for element content or attribute values (both quote kinds, so it is safe in either).
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['<', '>', '&', '"', '\'']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for ch in text.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_dtd_and_entities() {
        let billion = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><a>&lol;</a>"#;
        assert_eq!(parse(billion).err(), Some(XmlError::Dtd));
    }

    #[test]
    fn rejects_deep_nesting() {
        let deep = format!("{}{}", "<a>".repeat(MAX_DEPTH + 5), "</a>".repeat(MAX_DEPTH + 5));
        assert_eq!(parse(&deep).err(), Some(XmlError::TooDeep));
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(parse("<a><b></a>"), Err(XmlError::Malformed(_))));
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"<x a="1">&'"#), "&lt;x a=&quot;1&quot;&gt;&amp;&apos;");
        assert!(matches!(escape("plain"), std::borrow::Cow::Borrowed(_)));
    }
}

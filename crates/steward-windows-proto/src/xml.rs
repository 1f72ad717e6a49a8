//! Hardened XML input and escaping output shared by the SOAP and SyncML codecs.
//!
//! Input comes from unauthenticated devices, so every document is bounded *while it is read*,
//! before any tree is built: [`parse_with`] first runs a single linear pass over the bytes
//! ([`prescan`]) that refuses DTDs (and with them entity declarations, never expanded) and enforces
//! every [`XmlLimits`] cap, and only a document that passes is handed to roxmltree, with its node
//! cap as a second bound. roxmltree is namespace-aware, so callers match elements by
//! (namespace URI, local name) and never by the prefix a client happened to choose.
//!
//! Why a pre-scan, and why hand-written. roxmltree (0.21) does work that grows faster than the
//! input in three places (release build, one core of the development machine):
//! - its duplicate-attribute check compares each attribute with every earlier one of the same
//!   element: the probe Discover with 37,000 distinct attributes on one element (254 KiB, under the
//!   enrollment body cap) took 3.1 s to parse, 6.9 s on the server path (`message_id_of` then
//!   `parse_request`);
//! - namespace declarations: each declaring element copies the declarations in scope and checks
//!   every copy against its own, and duplicates on one element are found the same way: 10,000
//!   children each declaring one prefix under a root with 2,000 declarations (190 KB) took 60 s,
//!   18,500 declarations on one element 1.2 s;
//! - the duplicate-attribute check compares namespace URIs in full: a 1 MiB URI bound to a prefix
//!   that 32 attributes use on each of 300 elements took 3.2 s.
//!
//! roxmltree offers only a node cap, and quick-xml 0.42 only a depth cap and a cap on namespace
//! bindings in scope (in `NsReader`), so no maintained crate gives the limits below. Counting them
//! with quick-xml's tokenizer in front of roxmltree would be a second tokenizer all the same, whose
//! reading of the bytes we would have to reconcile with roxmltree's, and it measured 2–5× slower
//! than the scanner here for the same counting pass (e.g. 610 MB/s against 1.1 GB/s on the real
//! RequestSecurityToken, 290 MB/s against 730 MB/s on a 760 KB SyncML Results). The scanner below
//! needs only the few XML 1.0 productions that say where markup starts and ends, and refuses (never
//! skips) anything it cannot delimit, so a document roxmltree would read differently can only be
//! rejected, never let through uncounted. With it, the probe is refused in about 2 µs; documents
//! just under every limit parse in ~30 ms at worst (4 MiB); real documents parse within about 20 %
//! of the time they took before, the pre-scan costing about what the post-parse depth walk it
//! replaces did.

use thiserror::Error;

// ---- Limits ----
//
// Reference sizes (the real captures in shared/fixtures/windows/win10-19043-fleet-poc/): the
// RequestSecurityToken is 4.5 KB with 53 elements, 7 namespace declarations (6 on its busiest
// element), at most 2 attributes per element and a longest name of 24 bytes
// (`wsse:BinarySecurityToken`; our RSTR's `RequestSecurityTokenResponseCollection` is 38). A large
// SyncML message (an inventory Results) holds a few thousand elements and, because Windows writes
// `xmlns="syncml:metinf"` on every Meta child, about two namespace declarations per item.

/// Most nodes (elements, text runs, comments, processing instructions) a single inbound document may
/// hold, enforced by roxmltree itself. A real enrollment request has ~100 nodes and a large SyncML
/// message a few thousand; this leaves room while bounding memory per request.
pub const MAX_NODES: u32 = 200_000;
/// Most elements in one document. A real enrollment request has ~50 and a large SyncML message a
/// few thousand; 100,000 is 20× that and bounds the DOM to a few MB.
pub const MAX_ELEMENTS: usize = 100_000;
/// Deepest element nesting accepted. SyncML nests Atomic/Sequence at most a few levels; SOAP ~8.
pub const MAX_DEPTH: usize = 32;
/// Most attributes on one element, namespace declarations not counted. Real elements carry at most
/// 3 (`parm name value datatype`; `BinarySecurityToken ValueType EncodingType` has 2); the cap
/// bounds roxmltree's quadratic duplicate check to 496 comparisons per element.
pub const MAX_ATTRIBUTES_PER_ELEMENT: usize = 32;
/// Most attributes in one document, namespace declarations not counted. A provisioning document
/// has ~150 and SOAP requests ~10; SyncML uses almost none outside embedded `Format xml` data.
pub const MAX_ATTRIBUTES: usize = 20_000;
/// Longest element or attribute name in bytes, prefix, colon and local part together (so it also
/// caps prefixes, including those declared with `xmlns:`). The longest real name is 38 bytes.
/// Names only cost linear work in roxmltree; the cap keeps error messages and logs short.
pub const MAX_NAME_LEN: usize = 256;
/// Most namespace declarations (`xmlns`, `xmlns:p`) on one element. The real GetPolicies and
/// RequestSecurityToken declare 6 on one element; roxmltree finds duplicates on an element by
/// comparing each declaration with every earlier one.
pub const MAX_NAMESPACES_PER_ELEMENT: usize = 16;
/// Most namespace declarations in scope at one element (its own plus its ancestors'). Real documents
/// have at most ~10 in scope. roxmltree copies the in-scope set into every element that declares a
/// namespace, checking each copy against the new declarations, so this bounds that quadratic step.
pub const MAX_NAMESPACES_IN_SCOPE: usize = 32;
/// Most namespace declarations in one document. Windows declares `syncml:metinf` on each Meta child,
/// so a SyncML message of a few thousand items carries a few thousand; SOAP requests ~10.
pub const MAX_NAMESPACES: usize = 10_000;
/// Longest namespace URI in bytes. The longest real one (WS-Security utility) is 82 bytes;
/// roxmltree compares URIs in full when it checks for duplicate attributes.
pub const MAX_NAMESPACE_URI_LEN: usize = 1024;
/// Most character data in one document (text and CDATA, counted before entity decoding, which never
/// makes text longer). Windows sends at most its MaxMsgSize per SyncML message (512 KiB by default)
/// and chunks larger objects; 16 MiB is 4× the server's default management body cap. Bodies are
/// capped by the HTTP layer first; callers that configure a larger body cap pass a larger value here.
pub const MAX_TEXT_BYTES: usize = 16 * 1024 * 1024;

/// The caps [`parse_with`] enforces. [`XmlLimits::default()`] (and [`parse`]) use the `MAX_*`
/// constants of this module; a caller with configured limits builds its own, e.g.
/// `XmlLimits { max_text_bytes: body_cap, ..XmlLimits::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    /// [`MAX_NODES`]: enforced by roxmltree while it builds the tree.
    pub max_nodes: u32,
    /// [`MAX_ELEMENTS`].
    pub max_elements: usize,
    /// [`MAX_DEPTH`]: the root element is at depth 1.
    pub max_depth: usize,
    /// [`MAX_ATTRIBUTES_PER_ELEMENT`].
    pub max_attributes_per_element: usize,
    /// [`MAX_ATTRIBUTES`].
    pub max_attributes: usize,
    /// [`MAX_NAME_LEN`]: element names (start and end tags) and attribute names, in bytes.
    pub max_name_len: usize,
    /// [`MAX_NAMESPACES_PER_ELEMENT`].
    pub max_namespaces_per_element: usize,
    /// [`MAX_NAMESPACES_IN_SCOPE`].
    pub max_namespaces_in_scope: usize,
    /// [`MAX_NAMESPACES`].
    pub max_namespaces: usize,
    /// [`MAX_NAMESPACE_URI_LEN`]: the value of an `xmlns` attribute, in bytes as written.
    pub max_namespace_uri_len: usize,
    /// [`MAX_TEXT_BYTES`].
    pub max_text_bytes: usize,
}

impl XmlLimits {
    /// The `MAX_*` constants of this module.
    pub const DEFAULT: Self = Self {
        max_nodes: MAX_NODES,
        max_elements: MAX_ELEMENTS,
        max_depth: MAX_DEPTH,
        max_attributes_per_element: MAX_ATTRIBUTES_PER_ELEMENT,
        max_attributes: MAX_ATTRIBUTES,
        max_name_len: MAX_NAME_LEN,
        max_namespaces_per_element: MAX_NAMESPACES_PER_ELEMENT,
        max_namespaces_in_scope: MAX_NAMESPACES_IN_SCOPE,
        max_namespaces: MAX_NAMESPACES,
        max_namespace_uri_len: MAX_NAMESPACE_URI_LEN,
        max_text_bytes: MAX_TEXT_BYTES,
    };
}

impl Default for XmlLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a document was refused. Every limit has its own variant, so callers can say which one was
/// hit (SOAP fault reason, SyncML status, HTTP 400 body) and logs show it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum XmlError {
    #[error("document type declarations are not allowed")]
    Dtd,
    #[error("document is not well-formed XML: {0}")]
    Malformed(String),
    #[error("document nests elements deeper than the depth limit (default {MAX_DEPTH} levels)")]
    TooDeep,
    #[error("document has too many nodes")]
    TooLarge,
    #[error("document has more than {max} elements")]
    TooManyElements { max: usize },
    #[error("an element has more than {max} attributes")]
    TooManyAttributesOnElement { max: usize },
    #[error("document has more than {max} attributes")]
    TooManyAttributes { max: usize },
    #[error("an element or attribute name is longer than {max} bytes")]
    NameTooLong { max: usize },
    #[error("an element declares more than {max} namespaces")]
    TooManyNamespacesOnElement { max: usize },
    #[error("more than {max} namespace declarations are in scope at one element")]
    TooManyNamespacesInScope { max: usize },
    #[error("document declares more than {max} namespaces")]
    TooManyNamespaces { max: usize },
    #[error("a namespace URI is longer than {max} bytes")]
    NamespaceUriTooLong { max: usize },
    #[error("document has more than {max} bytes of text")]
    TooMuchText { max: usize },
}

/// Parses `text` with the default limits ([`XmlLimits::DEFAULT`]). Returns a namespace-aware DOM
/// borrowing from `text`.
pub fn parse(text: &str) -> Result<roxmltree::Document<'_>, XmlError> {
    parse_with(text, &XmlLimits::DEFAULT)
}

/// Parses `text` under `limits`: [`prescan`] first, so a document over any limit is refused in one
/// linear pass before roxmltree sees it, then roxmltree with DTDs refused and the node cap.
pub fn parse_with<'i>(text: &'i str, limits: &XmlLimits) -> Result<roxmltree::Document<'i>, XmlError> {
    prescan(text, limits)?;
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: limits.max_nodes,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(text, opts).map_err(|e| match e {
        roxmltree::Error::DtdDetected => XmlError::Dtd,
        roxmltree::Error::NodesLimitReached => XmlError::TooLarge,
        other => XmlError::Malformed(other.to_string()),
    })
}

/// The pre-scan on its own: checks every limit of `limits` except the node cap (roxmltree's) in a
/// single pass over the bytes, without building anything, and refuses DTDs. Public so callers that
/// only need to know whether a document is acceptable (and the fuzz targets) can run it alone.
///
/// It reads only what decides where markup starts and ends (XML 1.0 §2.4 character data, §2.5
/// comments, §2.6 processing instructions, §2.7 CDATA sections, §2.8 the document type declaration,
/// §3.1 start tags, end tags and attribute values; Namespaces in XML 1.0 §3 for `xmlns`
/// attributes). It is deliberately lenient about everything else (name characters, references,
/// attribute order), which roxmltree checks afterwards; but anything it cannot delimit is refused
/// as malformed rather than skipped, so its counts are never below what roxmltree will build.
/// All delimiters are ASCII and UTF-8 never uses ASCII bytes inside a multi-byte character, so
/// scanning bytes is exact.
pub fn prescan(text: &str, limits: &XmlLimits) -> Result<XmlStats, XmlError> {
    let mut scanner = Scanner {
        b: text.as_bytes(),
        pos: 0,
        limits,
        stats: XmlStats::default(),
        open: Vec::new(),
        in_scope: 0,
    };
    scanner.run()?;
    Ok(scanner.stats)
}

/// What [`prescan`] counted in an accepted document. Upper bounds of what roxmltree builds from it
/// (the fuzz targets check that they match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XmlStats {
    /// Start tags, empty-element tags included.
    pub elements: usize,
    /// Attributes other than namespace declarations.
    pub attributes: usize,
    /// Namespace declarations (`xmlns`, `xmlns:p`).
    pub namespaces: usize,
    /// Bytes of character data and CDATA content, as written (before entity decoding).
    pub text_bytes: usize,
    /// Deepest element nesting; the root element is at depth 1.
    pub depth: usize,
}

/// State of one [`prescan`].
struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    limits: &'a XmlLimits,
    stats: XmlStats,
    /// Namespace declarations of each open element, innermost last; its length is the depth of
    /// the next start tag's parent.
    open: Vec<usize>,
    /// Sum of `open`, plus the declarations of the start tag being read.
    in_scope: usize,
}

/// XML 1.0 §2.3 `S`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Bytes that end a name in a tag: whitespace and the tag's own punctuation. Anything else
/// (including non-ASCII) is taken as part of the name; roxmltree checks the name characters.
fn ends_name(b: u8) -> bool {
    is_space(b) || matches!(b, b'=' | b'/' | b'>' | b'<' | b'"' | b'\'')
}

impl Scanner<'_> {
    fn run(&mut self) -> Result<(), XmlError> {
        while self.pos < self.b.len() {
            let rest = &self.b[self.pos..];
            let Some(lt) = memchr::memchr(b'<', rest) else {
                return self.add_text(rest.len());
            };
            self.add_text(lt)?;
            self.pos += lt;
            let rest = &self.b[self.pos..];
            if rest.starts_with(b"<!--") {
                self.pos = self.find(self.pos + 4, b"-->", "unterminated comment")? + 3;
            } else if rest.starts_with(b"<![CDATA[") {
                let end = self.find(self.pos + 9, b"]]>", "unterminated CDATA section")?;
                self.add_text(end - (self.pos + 9))?;
                self.pos = end + 3;
            } else if rest.starts_with(b"<!DOCTYPE") {
                return Err(XmlError::Dtd);
            } else if rest.starts_with(b"<!") {
                return Err(self.malformed("unknown markup declaration"));
            } else if rest.starts_with(b"<?") {
                self.pos = self.find(self.pos + 2, b"?>", "unterminated processing instruction")? + 2;
            } else if rest.starts_with(b"</") {
                self.end_tag()?;
            } else {
                self.start_tag()?;
            }
        }
        Ok(())
    }

    fn add_text(&mut self, n: usize) -> Result<(), XmlError> {
        self.stats.text_bytes += n;
        if self.stats.text_bytes > self.limits.max_text_bytes {
            return Err(XmlError::TooMuchText {
                max: self.limits.max_text_bytes,
            });
        }
        Ok(())
    }

    /// Offset of the first `needle` at or after `from`.
    fn find(&self, from: usize, needle: &[u8], what: &str) -> Result<usize, XmlError> {
        self.b
            .get(from..)
            .and_then(|rest| memchr::memmem::find(rest, needle))
            .map(|i| from + i)
            .ok_or_else(|| self.malformed(what))
    }

    fn malformed(&self, what: &str) -> XmlError {
        XmlError::Malformed(format!("{what} at byte {}", self.pos))
    }

    fn skip_space(&mut self) {
        while self.b.get(self.pos).copied().is_some_and(is_space) {
            self.pos += 1;
        }
    }

    /// Reads a name at `pos` and checks its length; returns its bytes.
    fn name(&mut self, what: &str) -> Result<&[u8], XmlError> {
        let start = self.pos;
        while self.b.get(self.pos).is_some_and(|&b| !ends_name(b)) {
            self.pos += 1;
        }
        let len = self.pos - start;
        if len == 0 {
            return Err(self.malformed(what));
        }
        if len > self.limits.max_name_len {
            return Err(XmlError::NameTooLong {
                max: self.limits.max_name_len,
            });
        }
        let name = &self.b[start..self.pos];
        // Namespaces in XML 1.0 §3: a QName has at most one colon, with a non-empty prefix and local
        // part. roxmltree splits at the colon and reads `:xmlns` as a default-namespace declaration
        // (found by the xml_parse fuzz target), so anything else is refused here rather than
        // classified differently from roxmltree.
        let colons = name.iter().filter(|&&b| b == b':').count();
        if colons > 1 || (colons == 1 && (name.first() == Some(&b':') || name.last() == Some(&b':'))) {
            return Err(self.malformed("name is not a qualified name"));
        }
        Ok(name)
    }

    /// `</name S? >` (XML 1.0 §3.1 ETag). Whether the name matches its start tag is roxmltree's
    /// check; here it only closes the innermost element.
    fn end_tag(&mut self) -> Result<(), XmlError> {
        self.pos += 2;
        self.name("expected an element name")?;
        self.skip_space();
        if self.b.get(self.pos) != Some(&b'>') {
            return Err(self.malformed("expected '>' to close the end tag"));
        }
        self.pos += 1;
        let declared = self
            .open
            .pop()
            .ok_or_else(|| self.malformed("end tag without a start tag"))?;
        self.in_scope -= declared;
        Ok(())
    }

    /// `<name (S attribute)* S? (> | />)` (XML 1.0 §3.1 STag and EmptyElemTag).
    fn start_tag(&mut self) -> Result<(), XmlError> {
        self.pos += 1;
        self.name("expected an element name")?;
        self.stats.elements += 1;
        if self.stats.elements > self.limits.max_elements {
            return Err(XmlError::TooManyElements {
                max: self.limits.max_elements,
            });
        }
        let depth = self.open.len() + 1;
        if depth > self.limits.max_depth {
            return Err(XmlError::TooDeep);
        }
        self.stats.depth = self.stats.depth.max(depth);
        let (mut attributes, mut declared) = (0usize, 0usize);
        loop {
            self.skip_space();
            match self.b.get(self.pos) {
                None => return Err(self.malformed("unterminated start tag")),
                Some(b'>') => {
                    self.pos += 1;
                    self.open.push(declared);
                    return Ok(());
                }
                Some(b'/') => {
                    if self.b.get(self.pos + 1) != Some(&b'>') {
                        return Err(self.malformed("expected '>' after '/' in a start tag"));
                    }
                    self.pos += 2;
                    // An empty element's declarations go out of scope with it.
                    self.in_scope -= declared;
                    return Ok(());
                }
                Some(_) => {}
            }
            // Namespaces in XML 1.0 §3: `xmlns` and `xmlns:prefix` declare, everything else is an
            // attribute (`xml:lang` and friends included).
            let name = self.name("expected an attribute name")?;
            // roxmltree reads an attribute whose local part is `xmlns` under any other prefix
            // (`p:xmlns`) as a default-namespace declaration, where Namespaces in XML 1.0 §3 makes
            // it an ordinary attribute. Classified either way, one of the two counts would escape
            // a limit (found twice by the xml_parse fuzz target: attributes, then namespace URI
            // length), so it is refused; no device or client writes it.
            if name.ends_with(b":xmlns") && !name.starts_with(b"xmlns:") {
                return Err(self.malformed("an attribute named prefix:xmlns"));
            }
            let is_declaration = name == b"xmlns" || name.starts_with(b"xmlns:");
            self.skip_space();
            if self.b.get(self.pos) != Some(&b'=') {
                return Err(self.malformed("expected '=' after an attribute name"));
            }
            self.pos += 1;
            self.skip_space();
            let quote = match self.b.get(self.pos) {
                Some(&q @ (b'"' | b'\'')) => q,
                _ => return Err(self.malformed("expected a quoted attribute value")),
            };
            let value_start = self.pos + 1;
            let value_end = self
                .b
                .get(value_start..)
                .and_then(|rest| memchr::memchr(quote, rest))
                .map(|i| value_start + i)
                .ok_or_else(|| self.malformed("unterminated attribute value"))?;
            self.pos = value_end + 1;
            if is_declaration {
                self.declaration(&mut declared, value_end - value_start)?;
            } else {
                attributes += 1;
                self.stats.attributes += 1;
                if attributes > self.limits.max_attributes_per_element {
                    return Err(XmlError::TooManyAttributesOnElement {
                        max: self.limits.max_attributes_per_element,
                    });
                }
                if self.stats.attributes > self.limits.max_attributes {
                    return Err(XmlError::TooManyAttributes {
                        max: self.limits.max_attributes,
                    });
                }
            }
        }
    }

    /// Counts one namespace declaration whose URI is `uri_len` bytes long.
    fn declaration(&mut self, declared: &mut usize, uri_len: usize) -> Result<(), XmlError> {
        let l = self.limits;
        if uri_len > l.max_namespace_uri_len {
            return Err(XmlError::NamespaceUriTooLong {
                max: l.max_namespace_uri_len,
            });
        }
        *declared += 1;
        self.stats.namespaces += 1;
        self.in_scope += 1;
        if *declared > l.max_namespaces_per_element {
            return Err(XmlError::TooManyNamespacesOnElement {
                max: l.max_namespaces_per_element,
            });
        }
        if self.in_scope > l.max_namespaces_in_scope {
            return Err(XmlError::TooManyNamespacesInScope {
                max: l.max_namespaces_in_scope,
            });
        }
        if self.stats.namespaces > l.max_namespaces {
            return Err(XmlError::TooManyNamespaces { max: l.max_namespaces });
        }
        Ok(())
    }
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
/// Structure only: a parser still normalizes line ends, and whitespace in attribute values (see
/// [`escape_text`] and [`escape_attr`] for values that must read back unchanged).
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    escape_chars(text, &[])
}

/// [`escape`], plus CR as `&#13;`: end-of-line handling (XML 1.0 §2.11) reads a literal CR as LF,
/// a character reference as itself.
pub fn escape_text(text: &str) -> std::borrow::Cow<'_, str> {
    escape_chars(text, &['\r'])
}

/// [`escape`], plus tab, LF and CR as character references: attribute-value normalization (XML 1.0
/// §3.3.3) reads each literal one as a space, a character reference as itself.
pub fn escape_attr(text: &str) -> std::borrow::Cow<'_, str> {
    escape_chars(text, &['\t', '\n', '\r'])
}

/// Escapes the five markup characters and, as numeric character references, `extra`.
fn escape_chars<'t>(text: &'t str, extra: &[char]) -> std::borrow::Cow<'t, str> {
    let special = |c: char| matches!(c, '<' | '>' | '&' | '"' | '\'') || extra.contains(&c);
    if !text.contains(special) {
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
            c if extra.contains(&c) => {
                out.push_str("&#");
                out.push_str(&u32::from(c).to_string());
                out.push(';');
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests;

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

// ---- Limits: each one just under passes, just over fails, with the defaults ----

/// `n` attributes `a0="" a1="" …` (distinct names, as in the probe).
fn attrs(n: usize) -> String {
    (0..n).map(|i| format!(" a{i:x}=\"\"")).collect()
}

/// `n` declarations `xmlns:p0="urn:0" …` (distinct prefixes).
fn decls(n: usize, tag: &str) -> String {
    (0..n).map(|i| format!(" xmlns:{tag}{i}=\"urn:{i}\"")).collect()
}

/// Asserts that `ok` parses and `over` is refused with `err`, by the pre-scan itself.
fn boundary(ok: &str, over: &str, err: XmlError) {
    if let Err(e) = parse(ok) {
        panic!("just under the limit was refused: {e}");
    }
    assert_eq!(prescan(over, &XmlLimits::DEFAULT).err(), Some(err.clone()));
    assert_eq!(parse(over).err(), Some(err));
}

#[test]
fn element_count() {
    let doc = |n: usize| format!("<r>{}</r>", "<e/>".repeat(n - 1));
    boundary(
        &doc(MAX_ELEMENTS),
        &doc(MAX_ELEMENTS + 1),
        XmlError::TooManyElements { max: MAX_ELEMENTS },
    );
}

#[test]
fn depth_counts_empty_elements_and_is_checked_before_roxmltree() {
    let doc = |n: usize| format!("{}<leaf/>{}", "<a>".repeat(n - 1), "</a>".repeat(n - 1));
    boundary(&doc(MAX_DEPTH), &doc(MAX_DEPTH + 1), XmlError::TooDeep);
    assert_eq!(prescan(&doc(MAX_DEPTH), &XmlLimits::DEFAULT).unwrap().depth, MAX_DEPTH);
}

#[test]
fn attributes_per_element() {
    let doc = |n: usize| format!("<r{}/>", attrs(n));
    boundary(
        &doc(MAX_ATTRIBUTES_PER_ELEMENT),
        &doc(MAX_ATTRIBUTES_PER_ELEMENT + 1),
        XmlError::TooManyAttributesOnElement {
            max: MAX_ATTRIBUTES_PER_ELEMENT,
        },
    );
}

#[test]
fn attributes_in_total() {
    // Full elements of MAX_ATTRIBUTES_PER_ELEMENT each, the rest on the root.
    let doc = |n: usize| {
        let per = MAX_ATTRIBUTES_PER_ELEMENT;
        let full = format!("<e{}/>", attrs(per)).repeat((n - 1) / per);
        format!("<r{}>{full}</r>", attrs((n - 1) % per + 1))
    };
    boundary(
        &doc(MAX_ATTRIBUTES),
        &doc(MAX_ATTRIBUTES + 1),
        XmlError::TooManyAttributes { max: MAX_ATTRIBUTES },
    );
}

#[test]
fn name_lengths() {
    let err = XmlError::NameTooLong { max: MAX_NAME_LEN };
    let name = |n: usize| "n".repeat(n);
    // Element names, in start and end tags.
    let element = |n: usize| format!("<{0}></{0}>", name(n));
    boundary(&element(MAX_NAME_LEN), &element(MAX_NAME_LEN + 1), err.clone());
    // Attribute names.
    let attribute = |n: usize| format!("<r {}=\"1\"/>", name(n));
    boundary(&attribute(MAX_NAME_LEN), &attribute(MAX_NAME_LEN + 1), err.clone());
    // Prefixes count with the name they qualify: in `xmlns:` declarations, and on elements (the
    // prefix here is as long as a declaration allows, so only the element name can be over).
    let declaration = |n: usize| format!("<r xmlns:{}=\"urn:x\"/>", name(n - 6));
    boundary(&declaration(MAX_NAME_LEN), &declaration(MAX_NAME_LEN + 1), err.clone());
    let prefix = name(MAX_NAME_LEN - 6);
    let prefixed = |n: usize| {
        format!(
            "<{prefix}:{} xmlns:{prefix}=\"urn:x\"/>",
            "l".repeat(n - prefix.len() - 1)
        )
    };
    boundary(&prefixed(MAX_NAME_LEN), &prefixed(MAX_NAME_LEN + 1), err.clone());
    // An end tag is checked on its own, before roxmltree compares it with the start tag.
    assert_eq!(parse(&format!("<r></{}>", name(MAX_NAME_LEN + 1))).err(), Some(err));
}

#[test]
fn namespace_declarations_per_element() {
    let doc = |n: usize| format!("<r{}/>", decls(n, "p"));
    boundary(
        &doc(MAX_NAMESPACES_PER_ELEMENT),
        &doc(MAX_NAMESPACES_PER_ELEMENT + 1),
        XmlError::TooManyNamespacesOnElement {
            max: MAX_NAMESPACES_PER_ELEMENT,
        },
    );
}

#[test]
fn namespace_declarations_in_scope() {
    // Four nested elements fill the scope; the limit counts ancestors' declarations.
    let per = MAX_NAMESPACES_IN_SCOPE / 4;
    let doc = |inner: usize| {
        let d = |tag| decls(per, tag);
        format!(
            "<r{}><a{}><b{}><c{}/></b></a></r>",
            d("p"),
            d("q"),
            d("s"),
            decls(inner, "t")
        )
    };
    boundary(
        &doc(MAX_NAMESPACES_IN_SCOPE - 3 * per),
        &doc(MAX_NAMESPACES_IN_SCOPE - 3 * per + 1),
        XmlError::TooManyNamespacesInScope {
            max: MAX_NAMESPACES_IN_SCOPE,
        },
    );
    // Declarations leave scope with their element, empty or not: siblings do not add up.
    let siblings = format!(
        "<r{}><c{}/><c{}></c><c{}/></r>",
        decls(per, "p"),
        decls(per, "q"),
        decls(per, "q"),
        decls(per, "q")
    );
    assert!(parse(&siblings).is_ok());
}

#[test]
fn namespace_declarations_in_total() {
    // The SyncML shape: one default-namespace declaration on each Meta child.
    let doc = |n: usize| format!("<r>{}</r>", "<Type xmlns=\"syncml:metinf\"/>".repeat(n));
    boundary(
        &doc(MAX_NAMESPACES),
        &doc(MAX_NAMESPACES + 1),
        XmlError::TooManyNamespaces { max: MAX_NAMESPACES },
    );
}

#[test]
fn namespace_uri_length() {
    let doc = |n: usize| format!("<p:r xmlns:p=\"{}\" p:a=\"1\"/>", "u".repeat(n));
    boundary(
        &doc(MAX_NAMESPACE_URI_LEN),
        &doc(MAX_NAMESPACE_URI_LEN + 1),
        XmlError::NamespaceUriTooLong {
            max: MAX_NAMESPACE_URI_LEN,
        },
    );
}

#[test]
fn text_in_total_counts_cdata() {
    let doc = |n: usize| {
        let half = n / 2;
        format!("<r>{}<![CDATA[{}]]></r>", "t".repeat(half), "c".repeat(n - half))
    };
    boundary(
        &doc(MAX_TEXT_BYTES),
        &doc(MAX_TEXT_BYTES + 1),
        XmlError::TooMuchText { max: MAX_TEXT_BYTES },
    );
}

#[test]
fn configured_limits_are_honoured() {
    let limits = XmlLimits {
        max_elements: 3,
        max_depth: 2,
        max_attributes_per_element: 1,
        max_text_bytes: 4,
        ..XmlLimits::default()
    };
    assert!(parse_with("<r a='1'><c>abcd</c></r>", &limits).is_ok());
    assert_eq!(
        parse_with("<r><c/><c/><c/></r>", &limits).err(),
        Some(XmlError::TooManyElements { max: 3 })
    );
    assert_eq!(parse_with("<r><c><d/></c></r>", &limits).err(), Some(XmlError::TooDeep));
    assert_eq!(
        parse_with("<r a='1' b='2'/>", &limits).err(),
        Some(XmlError::TooManyAttributesOnElement { max: 1 })
    );
    assert_eq!(
        parse_with("<r>abcde</r>", &limits).err(),
        Some(XmlError::TooMuchText { max: 4 })
    );
    // The node cap is still roxmltree's.
    let nodes = XmlLimits {
        max_nodes: 3,
        ..XmlLimits::default()
    };
    assert_eq!(
        parse_with("<r><c/><c/><c/></r>", &nodes).err(),
        Some(XmlError::TooLarge)
    );
    assert_eq!(XmlLimits::default(), XmlLimits::DEFAULT);
}

/// The black-box probe: one unauthenticated Discover with 37,000 distinct attributes on one element
/// (~256 KiB, under the enrollment body cap) took 7 s of CPU in roxmltree's duplicate-attribute check.
/// It is now refused by the pre-scan at the 33rd attribute, before roxmltree is called: the error is
/// the pre-scan's own, and `prescan` alone returns it.
#[test]
fn probe_document_is_refused_by_the_pre_scan() {
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/windows/win10-19043-fleet-poc/01-discovery.request.xml"
    ))
    .unwrap();
    // Three-letter names, ` abc=""`, as short as 37,000 distinct names get: ~254 KiB in all.
    let letter = |i: usize| char::from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 52]);
    let names: String = (0..37_000)
        .map(|i| format!(" {}{}{}=\"\"", letter(i / 2704), letter(i / 52), letter(i)))
        .collect();
    let probe = fixture.replacen("<request ", &format!("<request{names} "), 1);
    assert!(probe.len() > 250 * 1024 && probe.len() <= 256 * 1024, "{}", probe.len());
    // Distinct names: roxmltree would have accepted it after comparing every pair.
    let unlimited = XmlLimits {
        max_attributes_per_element: usize::MAX,
        max_attributes: usize::MAX,
        ..XmlLimits::DEFAULT
    };
    assert_eq!(
        prescan(&probe, &unlimited).unwrap().attributes,
        37_000 + 2,
        "plus the fixture's two s:mustUnderstand"
    );
    let err = XmlError::TooManyAttributesOnElement {
        max: MAX_ATTRIBUTES_PER_ELEMENT,
    };
    assert_eq!(prescan(&probe, &XmlLimits::DEFAULT).err(), Some(err.clone()));
    assert_eq!(parse(&probe).err(), Some(err.clone()));
    assert_eq!(
        crate::mde2::parse_request(&probe),
        Err(crate::mde2::Mde2Error::Xml(err))
    );
    assert_eq!(crate::mde2::message_id_of(&probe), None);
    // The same element with a real number of attributes is fine.
    let sane = fixture.replacen("<request ", &format!("<request{} ", attrs(3)), 1);
    assert!(crate::mde2::parse_request(&sane).is_ok());
}

/// The other two super-linear shapes measured in roxmltree (module docs) are refused up front too.
#[test]
fn namespace_amplifiers_are_refused_by_the_pre_scan() {
    // 2,000 declarations on the root, then children that each declare one more.
    let mut inherited = format!("<r{}>", decls(2_000, "p"));
    inherited.push_str(&"<c xmlns:q=\"v\"/>".repeat(10_000));
    inherited.push_str("</r>");
    assert_eq!(
        prescan(&inherited, &XmlLimits::DEFAULT).err(),
        Some(XmlError::TooManyNamespacesOnElement {
            max: MAX_NAMESPACES_PER_ELEMENT
        })
    );
    // A long namespace URI compared in full by every duplicate-attribute check.
    let uri = format!(
        "<r xmlns:p=\"{}\">{}</r>",
        "u".repeat(1 << 20),
        "<c p:a=\"\" p:b=\"\"/>".repeat(300)
    );
    assert_eq!(
        prescan(&uri, &XmlLimits::DEFAULT).err(),
        Some(XmlError::NamespaceUriTooLong {
            max: MAX_NAMESPACE_URI_LEN
        })
    );
}

// ---- The pre-scan's reading of markup ----

#[test]
fn markup_inside_comments_cdata_pis_and_values_is_not_counted() {
    let doc = concat!(
        "<?xml version=\"1.0\"?><!-- <a b='1' c='2'> --><r x='a>b' y=\"/>\">",
        "<?pi <c d='1'/> ?><![CDATA[<e f='1'></e>]]><!-- </r> --></r>"
    );
    let stats = prescan(doc, &XmlLimits::DEFAULT).unwrap();
    assert_eq!(
        stats,
        XmlStats {
            elements: 1,
            attributes: 2,
            namespaces: 0,
            text_bytes: "<e f='1'></e>".len(),
            depth: 1,
        }
    );
    assert!(parse(doc).is_ok());
}

#[test]
fn anything_the_pre_scan_cannot_delimit_is_malformed() {
    for doc in [
        "<r><!-- open",
        "<r><![CDATA[ open",
        "<r><? open",
        "<r a='open",
        "<r a=1/>",
        "<r a/>",
        "<r",
        "<r/ >",
        "< r/>",
        "<r></r  x>",
        "</r>",
        "<r><!ELEMENT r ANY></r>",
        // Not QNames (found by the xml_parse fuzz target: roxmltree reads `:xmlns` as a
        // namespace declaration, which an attribute count would miss).
        "<r :xmlns='urn:a'/>",
        "<r a:='1'/>",
        "<r a:b:c='1'/>",
        "<:r/>",
        // roxmltree reads `p:xmlns` as a default-namespace declaration, which neither count of
        // the pre-scan would bound (xml_parse fuzz findings regression-prefixed-xmlns-attribute
        // and regression-prefixed-xmlns-uri-length).
        "<r p:xmlns='urn:a'/>",
        "<r xmlns:p='urn:a' p:xmlns='urn:b'/>",
    ] {
        assert!(
            matches!(prescan(doc, &XmlLimits::DEFAULT), Err(XmlError::Malformed(_))),
            "{doc}"
        );
    }
    // A DTD is refused wherever it stands, never read.
    assert_eq!(parse("<r><!DOCTYPE r></r>").err(), Some(XmlError::Dtd));
}

#[test]
fn real_fixtures_are_well_inside_the_limits() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/windows/win10-19043-fleet-poc/"
    );
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "xml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let stats = prescan(&text, &XmlLimits::DEFAULT).unwrap();
            assert!(
                stats.elements < 100 && stats.depth <= 8 && stats.namespaces < 16,
                "{path:?}: {stats:?}"
            );
            let doc = parse(&text).unwrap();
            assert_eq!(stats.elements, doc.descendants().filter(|n| n.is_element()).count());
            seen += 1;
        }
    }
    assert_eq!(seen, 5);
}

/// The committed fuzz corpus (and any local findings in fuzz/artifacts) through the fuzz target's
/// own checks, on stable Rust.
#[test]
fn replay_fuzz_corpus() {
    crate::fuzz_checks::replay("xml_parse", crate::fuzz_checks::xml_parse);
}

#[test]
fn exact_escapes_keep_whitespace_through_a_parser() {
    assert_eq!(escape_attr("a\tb\nc\rd<"), "a&#9;b&#10;c&#13;d&lt;");
    assert_eq!(escape_text("a\tb\nc\rd<"), "a\tb\nc&#13;d&lt;");
    assert!(matches!(escape_attr("plain"), std::borrow::Cow::Borrowed(_)));
    let value = "x\ty\r\nz\r";
    let doc = format!("<r a=\"{}\">{}</r>", escape_attr(value), escape_text(value));
    let tree = parse(&doc).unwrap();
    assert_eq!(tree.root_element().attribute("a"), Some(value));
    assert_eq!(tree.root_element().text(), Some(value));
}

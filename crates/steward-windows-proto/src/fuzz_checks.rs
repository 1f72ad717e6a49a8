//! The properties the fuzz targets check (`fuzz/` at the repository root, built with cargo-fuzz),
//! one function per target, each taking the raw fuzzer input. They panic when a property fails,
//! which is how libFuzzer learns of a finding. The same functions replay the committed corpus in
//! the ordinary test suite (`replay_corpus` in the test modules), so every seed and every fixed
//! finding runs on stable Rust too.
//!
//! Built only for tests and with the `fuzzing` feature (which the fuzz crate enables): the
//! assertions here are harness code, not part of the codec API.

use crate::mde2::{self, RequestBody};
use crate::syncml::{self, Command, ItemData, SyncMl};
use crate::xml::{self, XmlError, XmlLimits};

/// Small limits, so that fuzzed inputs actually reach every cap and the check that a document
/// accepted under a limit really is within it (in roxmltree's own tree) means something.
const TIGHT: XmlLimits = XmlLimits {
    max_nodes: 64,
    max_elements: 24,
    max_depth: 6,
    max_attributes_per_element: 3,
    max_attributes: 8,
    max_name_len: 12,
    max_namespaces_per_element: 2,
    max_namespaces_in_scope: 3,
    max_namespaces: 5,
    max_namespace_uri_len: 24,
    max_text_bytes: 200,
};

/// Target `xml_parse`: the reader under the default and under tight limits. The pre-scan and
/// roxmltree must agree: a limit error from [`xml::parse_with`] is the pre-scan's own, and a
/// document it accepts is, in the tree roxmltree built, within every limit and no bigger than the
/// pre-scan counted (the pre-scan never under-counts).
pub fn xml_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for limits in [XmlLimits::DEFAULT, TIGHT] {
        let scanned = xml::prescan(text, &limits);
        match xml::parse_with(text, &limits) {
            Ok(doc) => {
                let stats = match scanned {
                    Ok(s) => s,
                    Err(e) => panic!("parse accepted what the pre-scan refused ({e})"),
                };
                check_tree(&doc, &stats, &limits);
            }
            Err(e) => {
                if let Err(pre) = scanned {
                    assert_eq!(e, pre, "parse_with reports the pre-scan's error");
                } else {
                    // Past the pre-scan, only roxmltree's own refusals remain.
                    assert!(
                        matches!(e, XmlError::Malformed(_) | XmlError::TooLarge | XmlError::Dtd),
                        "limit error {e:?} after the pre-scan accepted the document"
                    );
                }
            }
        }
    }
}

/// What roxmltree built is within `limits` and matches what the pre-scan counted.
fn check_tree(doc: &roxmltree::Document<'_>, stats: &xml::XmlStats, limits: &XmlLimits) {
    let mut elements = 0;
    let mut attributes = 0;
    let mut text = 0;
    let mut depth = 0;
    for node in doc.descendants() {
        if node.is_element() {
            elements += 1;
            let here = node.attributes().len();
            assert!(
                here <= limits.max_attributes_per_element,
                "{here} attributes on one element"
            );
            attributes += here;
            let d = node.ancestors().filter(|a| a.is_element()).count();
            depth = depth.max(d);
            let scope = node.namespaces().len();
            assert!(scope <= limits.max_namespaces_in_scope, "{scope} namespaces in scope");
            let name = node.tag_name().name().len();
            assert!(name <= limits.max_name_len, "element local name of {name} bytes");
            for ns in node.namespaces() {
                assert!(ns.uri().len() <= limits.max_namespace_uri_len, "namespace URI too long");
            }
        } else if node.is_text() {
            text += node.text().map_or(0, str::len);
        }
    }
    assert_eq!(elements, stats.elements, "elements");
    assert_eq!(attributes, stats.attributes, "attributes");
    assert_eq!(depth, stats.depth, "depth");
    assert!(text <= stats.text_bytes, "text {text} > counted {}", stats.text_bytes);
    assert!(elements <= limits.max_elements && depth <= limits.max_depth);
    assert!(attributes <= limits.max_attributes && text <= limits.max_text_bytes);
    assert!(stats.namespaces <= limits.max_namespaces);
}

/// Target `mde2_parse_request`: the server's enrollment parser, plus the simulator-side parsers on
/// the same text (none may panic). A parsed Discover written back by the simulator's writer parses
/// to the same body, and so does an RST's AdditionalContext and token.
pub fn mde2_parse_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = mde2::message_id_of(text);
    let _ = mde2::parse_fault(text);
    let _ = mde2::parse_rstr(text);
    let _ = mde2::parse_discover_response(text);
    let _ = mde2::parse_provisioning_doc(text);
    let Ok(req) = mde2::parse_request(text) else {
        return;
    };
    let id = req.header.message_id.as_deref().unwrap_or("urn:uuid:1");
    let to = req.header.to.as_deref().unwrap_or("https://mdm.example/");
    match &req.body {
        RequestBody::Discover(d) => {
            let again = mde2::parse_request(&mde2::write_discover_request(id, to, d));
            assert_eq!(again.map(|r| r.body), Ok(req.body.clone()), "Discover round trip");
        }
        RequestBody::RequestSecurityToken(rst) => {
            let xml = mde2::write_rst_renew_request(
                id,
                to,
                req.header.credential.as_ref(),
                &rst.binary_security_token.data,
                &rst.context,
            );
            let again = match mde2::parse_request(&xml) {
                Ok(r) => r,
                Err(e) => panic!("written RST does not parse ({e}):\n{xml}"),
            };
            assert_eq!(again.header.credential, req.header.credential, "credential round trip");
            let RequestBody::RequestSecurityToken(back) = again.body else {
                panic!("written RST parses as another body")
            };
            assert_eq!(back.context, rst.context, "AdditionalContext round trip");
            assert_eq!(back.binary_security_token.data, rst.binary_security_token.data);
        }
        RequestBody::GetPolicies(_) => {}
    }
}

/// Target `syncml_parse`: the management parser on raw bytes (as the HTTP body arrives) must not
/// panic, and a message it accepts has the fields the session logic relies on.
pub fn syncml_parse(data: &[u8]) {
    let Ok(msg) = syncml::parse_bytes(data) else {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = syncml::is_well_formed_fragment(text);
        }
        return;
    };
    let hdr = &msg.header;
    assert!(
        !hdr.session_id.is_empty() && hdr.session_id.len() <= crate::syncml::MAX_SESSION_ID_LEN,
        "SessionID"
    );
    for_each_command(&msg.body.commands, &mut |c| {
        assert!(
            !c.cmd_id().is_empty() && !c.cmd_id().bytes().all(|b| b == b'0'),
            "CmdID"
        );
    });
}

/// Target `syncml_round_trip`: parse → write → parse gives the same message, and writing that
/// again gives the same text. Raw `ItemData::Xml` fragments are written verbatim by contract
/// (callers validate them with [`syncml::is_well_formed_fragment`]), so messages holding one that
/// does not pass that check are out of scope, as are messages holding a [`Command::Refused`]
/// (the reader's record of a command it could not take; the writer never sends one).
pub fn syncml_round_trip(data: &[u8]) {
    let Ok(first) = syncml::parse_bytes(data) else {
        return;
    };
    if !xml_fragments_valid(&first) || first.body.commands.iter().any(|c| matches!(c, Command::Refused(_))) {
        return;
    }
    let written = syncml::write(&first);
    let second = match syncml::parse(&written) {
        Ok(m) => m,
        Err(e) => panic!("written message does not parse ({e}):\n{written}"),
    };
    assert_eq!(second, first, "parse(write(m)) == m");
    assert_eq!(syncml::write(&second), written, "write is stable");
}

fn for_each_command(commands: &[Command], f: &mut impl FnMut(&Command)) {
    for c in commands {
        f(c);
        if let Command::Atomic(k) | Command::Sequence(k) = c {
            for_each_command(&k.commands, f);
        }
    }
}

fn xml_fragments_valid(msg: &SyncMl) -> bool {
    let mut ok = true;
    for_each_command(&msg.body.commands, &mut |c| {
        let items = match c {
            Command::Status(s) => &s.items,
            Command::Results(r) => &r.items,
            Command::Alert(a) => &a.items,
            Command::Get(i) | Command::Add(i) | Command::Replace(i) | Command::Delete(i) | Command::Exec(i) => &i.items,
            Command::Atomic(_) | Command::Sequence(_) | Command::Refused(_) => return,
        };
        for item in items {
            if let Some(ItemData::Xml(x)) = &item.data {
                ok &= syncml::is_well_formed_fragment(x);
            }
        }
    });
    ok
}

/// Target `provisioning_round_trip`: a provisioning document built from the input (fields
/// separated by 0xFF, a byte UTF-8 never uses; see [`Fields`]) is written, read back with the XML
/// reader and checked for its structure and for every value. (The RSTR that carries it holds it as
/// base64, which the codec's own tests cover.)
pub fn provisioning_round_trip(data: &[u8]) {
    let mut f = Fields(data.split(|&b| b == 0xFF));
    let root_der = f.bytes();
    let root_thumb = f.thumbprint();
    let ca_der = f.bytes();
    let ca_thumb = f.thumbprint();
    let client_der = f.bytes();
    let client_thumb = f.thumbprint();
    let [cn, provider, server_name, url, device_name, dm_id] = std::array::from_fn(|_| f.text());
    let numbers = f.bytes();
    let n = |i: usize| u32::from(numbers.get(i).copied().unwrap_or(0)) * 7;
    let renew_url = f.optional_text();
    let credentials = (f.optional_text(), f.optional_text());
    let doc = mde2::ProvisioningDoc {
        root_ca_der: root_der,
        root_ca_thumbprint: &root_thumb,
        intermediate_ca: (!ca_der.is_empty()).then_some((ca_der, ca_thumb.as_str())),
        client_cert_der: client_der,
        client_cert_thumbprint: &client_thumb,
        client_cert_subject_cn: &cn,
        client_store: if n(0) % 2 == 0 {
            mde2::ClientStore::User
        } else {
            mde2::ClientStore::System
        },
        provider_id: &provider,
        server_name: &server_name,
        management_url: &url,
        ent_device_name: &device_name,
        ent_dm_id: &dm_id,
        poll: mde2::PollSchedule {
            interval_first_minutes: n(1),
            number_first: n(2),
            interval_second_minutes: n(3),
            number_second: n(4),
            interval_remaining_minutes: n(5),
            number_remaining: n(6),
            poll_on_login: n(7) % 2 == 0,
            all_users_poll_on_first_login: n(8) % 2 == 0,
        },
        renew_period_days: n(9),
        renew_retry_interval_days: n(10),
        renew_server_url: renew_url.as_deref(),
        app_auth: mde2::AppAuth {
            device_name: credentials.0.as_deref().unwrap_or(&cn),
            device_secret: credentials.1.as_deref().unwrap_or("secret"),
            device_nonce: "bm9uY2U=",
            server_secret: credentials.1.as_deref().unwrap_or("server"),
            server_nonce: "c2VydmVy",
        },
    };
    let written = mde2::write_provisioning_doc(&doc);

    // Structure, read with the hardened reader: characteristic and parm elements only, each with
    // its identifying attribute.
    let tree = match xml::parse(&written) {
        Ok(t) => t,
        Err(e) => panic!("provisioning doc is not acceptable XML ({e}):\n{written}"),
    };
    let root = tree.root_element();
    assert_eq!(root.tag_name().name(), "wap-provisioningdoc");
    assert_eq!(root.attribute("version"), Some("1.1"));
    for node in root.descendants().filter(|n| n.is_element() && *n != root) {
        match node.tag_name().name() {
            "characteristic" => assert!(node.attribute("type").is_some(), "characteristic without type"),
            "parm" => assert!(node.attribute("name").is_some(), "parm without name"),
            other => panic!("unexpected element {other}"),
        }
    }

    // Values: what went in comes out, up to the characters XML cannot carry.
    let parsed = match mde2::parse_provisioning_doc(&written) {
        Ok(p) => p,
        Err(e) => panic!("provisioning doc does not parse ({e}):\n{written}"),
    };
    let store = doc.client_store.as_str();
    assert_eq!(parsed.root_certificate_der().as_deref(), Some(root_der));
    assert_eq!(
        parsed.intermediate_certificate_der().as_deref(),
        doc.intermediate_ca.map(|c| c.0)
    );
    assert_eq!(parsed.client_certificate_der().as_deref(), Some(client_der));
    assert_eq!(parsed.client_certificate_thumbprint(), Some(client_thumb.as_str()));
    assert_eq!(parsed.management_url(), Some(xml_chars(&url).as_str()));
    let provider = xml_chars(&provider);
    let expect = [
        ("APPLICATION/PROVIDER-ID".to_owned(), provider.clone()),
        ("APPLICATION/NAME".to_owned(), xml_chars(&server_name)),
        (format!("DMClient/Provider/{provider}/EntDMID"), xml_chars(&dm_id)),
        (
            format!("DMClient/Provider/{provider}/Poll/NumberOfRemainingScheduledRetries"),
            n(6).to_string(),
        ),
        (
            "CertificateStore/My/WSTEP/Renew/RenewPeriod".to_owned(),
            n(9).to_string(),
        ),
    ];
    for (path, value) in &expect {
        assert_eq!(parsed.get(path), Some(value.as_str()), "{path}");
    }
    if let Some(u) = &renew_url {
        let got = parsed.get("CertificateStore/My/WSTEP/Renew/ServerURL");
        assert_eq!(got, Some(xml_chars(u).as_str()));
    }
    // EntDeviceName is omitted when empty (interop review E-5).
    let device_name_path = format!("DMClient/Provider/{provider}/EntDeviceName");
    let expected_name = (!device_name.is_empty()).then(|| xml_chars(&device_name));
    assert_eq!(parsed.get(&device_name_path), expected_name.as_deref());
    // Both APPAUTH levels, APPSRV carrying the device's name and secret.
    let blocks = parsed.instances("APPLICATION/APPAUTH");
    assert_eq!(blocks.len(), 2);
    let appsrv = &blocks[1];
    let a = doc.app_auth;
    assert!(appsrv.contains(&("AAUTHLEVEL", "APPSRV")));
    assert!(appsrv.contains(&("AAUTHNAME", xml_chars(a.device_name).as_str())));
    assert!(appsrv.contains(&("AAUTHSECRET", xml_chars(a.device_secret).as_str())));
    let criteria = parsed
        .get("APPLICATION/SSLCLIENTCERTSEARCHCRITERIA")
        .unwrap_or_default();
    assert!(criteria.ends_with(&format!("&Stores=MY%5C{store}")), "{criteria}");
}

/// `s` with the characters XML 1.0 §2.2 cannot carry (C0 controls other than tab, LF and CR;
/// U+FFFE, U+FFFF) replaced by U+FFFD, as the writers do.
fn xml_chars(s: &str) -> String {
    let bad = |c: char| (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}';
    s.chars().map(|c| if bad(c) { '\u{FFFD}' } else { c }).collect()
}

/// Fuzzer input split into fields; missing fields read as empty.
struct Fields<'a, I: Iterator<Item = &'a [u8]>>(I);

impl<'a, I: Iterator<Item = &'a [u8]>> Fields<'a, I> {
    fn bytes(&mut self) -> &'a [u8] {
        self.0.next().unwrap_or_default()
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// An absent or empty field is `None`.
    fn optional_text(&mut self) -> Option<String> {
        Some(self.text()).filter(|s| !s.is_empty())
    }

    /// Thumbprints are uppercase hex (the CertificateStore CSP node names), at least one byte.
    fn thumbprint(&mut self) -> String {
        let b = self.bytes();
        let b = if b.is_empty() {
            &[0u8][..]
        } else {
            &b[..b.len().min(20)]
        };
        b.iter().map(|x| format!("{x:02X}")).collect()
    }
}

/// Every file under `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` (if present), for the
/// stable replay tests. Panics if the committed corpus of `target` is missing or empty, so a
/// renamed target cannot silently stop being replayed.
#[cfg(test)]
pub(crate) fn corpus(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                files.push((path, bytes));
            }
        }
    }
    assert!(
        files
            .iter()
            .any(|(p, _)| p.components().any(|c| c.as_os_str() == "corpus")),
        "no committed corpus for fuzz target {target}"
    );
    files.sort();
    files
}

/// Runs `check` on every corpus and artifact file of `target`, naming the file that fails.
#[cfg(test)]
pub(crate) fn replay(target: &str, check: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        if std::panic::catch_unwind(|| check(&bytes)).is_err() {
            panic!("fuzz input {} fails its target's check", path.display());
        }
    }
}

//! SyncML reader. Structural values (CmdID, LocURI, Meta values, status codes, …) are trimmed of XML
//! whitespace so pretty-printed messages parse like compact ones; `Item/Data` text is kept verbatim
//! because it is a CSP payload (a `chr` value may legitimately end in a space).

use super::{
    Alert, Command, Container, Cred, Item, ItemCommand, ItemData, LocTarget, Meta, NS_METINF, NS_MSFT, NS_SYNCML,
    Refused, Results, STATUS_BAD_REQUEST, STATUS_OPTIONAL_FEATURE_NOT_SUPPORTED, SYNCML_COMMANDS, Status, SyncBody,
    SyncHdr, SyncMl, SyncMlError,
};
use crate::xml::XmlLimits;
use roxmltree::Node;

/// XML 1.0 whitespace (§2.3 `S`). Deliberately not Unicode whitespace: only these are insignificant.
const XML_WS: [char; 4] = [' ', '\t', '\r', '\n'];

fn trim_ws(s: &str) -> &str {
    s.trim_matches(XML_WS)
}

/// Parses one SyncML message (MS-MDM §2.2.4.1). The input goes through [`crate::xml::parse`]
/// first (DTDs refused, the [`XmlLimits`] caps checked). There is no length limit on values here:
/// the HTTP layer bounds the request body before calling this.
pub fn parse(xml: &str) -> Result<SyncMl, SyncMlError> {
    parse_with(xml, &XmlLimits::DEFAULT)
}

/// [`parse`] under configured XML limits (e.g. a text cap raised with the management body cap).
pub fn parse_with(xml: &str, limits: &XmlLimits) -> Result<SyncMl, SyncMlError> {
    let doc = crate::xml::parse_with(xml, limits)?;
    let root = doc.root_element();
    if root.tag_name().name() != "SyncML" || !is_syncml_ns(root.tag_name().namespace()) {
        return Err(SyncMlError::NotSyncMl);
    }
    let hdr = find(root, "SyncHdr").ok_or(SyncMlError::Missing("SyncHdr"))?;
    let body = find(root, "SyncBody").ok_or(SyncMlError::Missing("SyncBody"))?;
    Ok(SyncMl {
        header: header(hdr)?,
        body: sync_body(body)?,
    })
}

/// [`parse`] for raw HTTP bodies. Windows sends UTF-8 (`application/vnd.syncml.dm+xml`, MS-MDM
/// §2.1); anything else is refused with [`SyncMlError::NotUtf8`]. A leading UTF-8 BOM is skipped.
pub fn parse_bytes(bytes: &[u8]) -> Result<SyncMl, SyncMlError> {
    parse_bytes_with(bytes, &XmlLimits::DEFAULT)
}

/// [`parse_bytes`] under configured XML limits.
pub fn parse_bytes_with(bytes: &[u8], limits: &XmlLimits) -> Result<SyncMl, SyncMlError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| SyncMlError::NotUtf8(e.valid_up_to()))?;
    parse_with(text, limits)
}

/// Whether `xml` is a well-formed XML fragment (content of an element: text, elements, comments,
/// CDATA) in the context the writer puts [`ItemData::Xml`] in: inside `<Data>` below a SyncBody that
/// declares the `msft` prefix. Callers MUST check raw fragments with this before building an
/// [`ItemData::Xml`]; [`super::write()`] emits them verbatim and does not validate.
pub fn is_well_formed_fragment(xml: &str) -> bool {
    let mut wrapped = String::with_capacity(xml.len() + 80);
    wrapped.push_str("<Data xmlns:msft=\"");
    wrapped.push_str(NS_MSFT);
    wrapped.push_str("\">");
    wrapped.push_str(xml);
    wrapped.push_str("</Data>");
    crate::xml::parse(&wrapped).is_ok()
}

// ---- Element matching ----

/// MS-MDM §2.2.4.1: the SyncML namespace; Windows writes `SYNCML:SYNCML1.2`, the OMA DTD
/// `syncml:syncml1.2`, so the URI is compared ignoring ASCII case.
fn is_syncml_ns(ns: Option<&str>) -> bool {
    ns.is_some_and(|ns| ns.eq_ignore_ascii_case(NS_SYNCML))
}

/// Meta and its children (MS-MDM §2.2.5.3) are accepted in `syncml:metinf`, in the SyncML namespace
/// (a client that omitted `xmlns="syncml:metinf"`) or in no namespace at all.
fn is_metinf_ns(ns: Option<&str>) -> bool {
    ns.is_none_or(|ns| ns.eq_ignore_ascii_case(NS_METINF) || ns.eq_ignore_ascii_case(NS_SYNCML))
}

fn is(node: Node<'_, '_>, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && is_syncml_ns(node.tag_name().namespace())
}

fn elements<'a, 'i>(node: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(Node::is_element)
}

fn find<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    elements(node).find(|c| is(*c, name))
}

fn find_all<'a, 'i: 'a>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    elements(node).filter(move |c| is(*c, name))
}

/// Concatenated character data of `node`'s text children (CDATA included, comments skipped).
fn raw_text(node: Node<'_, '_>) -> String {
    node.children().filter(Node::is_text).filter_map(|c| c.text()).collect()
}

/// Trimmed text of an element; `None` when empty.
fn value(node: Node<'_, '_>) -> Option<String> {
    let text = raw_text(node);
    let t = trim_ws(&text);
    (!t.is_empty()).then(|| t.to_owned())
}

fn opt_field(node: Node<'_, '_>, name: &str) -> Option<String> {
    find(node, name).and_then(value)
}

fn field(node: Node<'_, '_>, name: &str, what: &'static str) -> Result<String, SyncMlError> {
    opt_field(node, name).ok_or(SyncMlError::Missing(what))
}

/// CmdID of a command (MS-MDM §2.2.3.1): required, and never `0` (that value names the SyncHdr in
/// CmdRef).
fn cmd_id(node: Node<'_, '_>) -> Result<String, SyncMlError> {
    let id = field(node, "CmdID", "CmdID")?;
    if id.bytes().all(|b| b == b'0') {
        return Err(SyncMlError::Invalid(format!(
            "<{}> has CmdID {id}; CmdID 0 is reserved",
            node.tag_name().name()
        )));
    }
    Ok(id)
}

// ---- SyncHdr (MS-MDM §2.2.4.2) ----

/// Longest SessionID accepted: 10 decimal digits of a 32-bit counter with room to spare.
pub const MAX_SESSION_ID_LEN: usize = 16;

fn header(hdr: Node<'_, '_>) -> Result<SyncHdr, SyncMlError> {
    let session_id = field(hdr, "SessionID", "SyncHdr/SessionID")?;
    // The SessionID is opaque to the server: it is echoed and compared, never computed with.
    // MS-MDM §2.2.3.8 describes at most 4 bytes as hex, while Learn "OMA DM protocol support"
    // says "the client returns the SessionID in integer in decimal format", so a 32-bit counter
    // can reach 10 decimal digits (4294967295). Both forms are short runs of hex digits (decimal
    // digits are hex digits), so any 1-16 of them are accepted (interop review M-8).
    if session_id.len() > MAX_SESSION_ID_LEN || !session_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SyncMlError::Invalid(format!(
            "SessionID {session_id:?} is not 1-{MAX_SESSION_ID_LEN} decimal or hex digits"
        )));
    }
    let msg_id = field(hdr, "MsgID", "SyncHdr/MsgID")?;
    let msg_id = msg_id
        .parse::<u32>()
        .map_err(|_| SyncMlError::Invalid(format!("MsgID {msg_id:?} is not an unsigned 32-bit integer")))?;
    Ok(SyncHdr {
        ver_dtd: field(hdr, "VerDTD", "SyncHdr/VerDTD")?,
        ver_proto: field(hdr, "VerProto", "SyncHdr/VerProto")?,
        session_id,
        msg_id,
        target: find(hdr, "Target").map(loc).transpose()?,
        source: find(hdr, "Source").map(loc).transpose()?,
        cred: find(hdr, "Cred").map(cred).transpose()?,
        meta: meta_child(hdr)?,
    })
}

fn loc(node: Node<'_, '_>) -> Result<LocTarget, SyncMlError> {
    Ok(LocTarget {
        loc_uri: field(node, "LocURI", "LocURI")?,
        loc_name: opt_field(node, "LocName"),
    })
}

fn cred(node: Node<'_, '_>) -> Result<Cred, SyncMlError> {
    Ok(Cred {
        meta: meta_child(node)?,
        data: field(node, "Data", "Cred/Data")?,
    })
}

// ---- Meta (MS-MDM §2.2.5.3, OMA-TS-SyncML_MetaInfo-V1_2) ----

fn meta_child(node: Node<'_, '_>) -> Result<Option<Meta>, SyncMlError> {
    elements(node)
        .find(|c| c.tag_name().name() == "Meta" && is_metinf_ns(c.tag_name().namespace()))
        .map(meta)
        .transpose()
}

fn meta(node: Node<'_, '_>) -> Result<Meta, SyncMlError> {
    let mut m = Meta::default();
    for c in elements(node).filter(|c| is_metinf_ns(c.tag_name().namespace())) {
        let slot = match c.tag_name().name() {
            "Format" => &mut m.format,
            "Type" => &mut m.type_,
            "NextNonce" => &mut m.next_nonce,
            "Mark" => &mut m.mark,
            "MaxMsgSize" => {
                m.max_msg_size = number(c)?;
                continue;
            }
            "MaxObjSize" => {
                m.max_obj_size = number(c)?;
                continue;
            }
            "Size" => {
                m.size = number(c)?;
                continue;
            }
            // EMI, Mem, Version, Anchor, … carry nothing the DM session uses.
            _ => continue,
        };
        if slot.is_none() {
            *slot = value(c);
        }
    }
    Ok(m)
}

fn number(node: Node<'_, '_>) -> Result<Option<u64>, SyncMlError> {
    value(node)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| SyncMlError::Invalid(format!("Meta/{} {v:?} is not a number", node.tag_name().name())))
        })
        .transpose()
}

// ---- Item and Data (MS-MDM §2.2.5) ----

/// An Item's Target or Source with an empty or missing LocURI reads as absent rather than failing
/// the message (interop review M-10): the command it belongs to is then answered on its own.
fn item(node: Node<'_, '_>) -> Result<Item, SyncMlError> {
    Ok(Item {
        target: find(node, "Target").and_then(|t| loc(t).ok()),
        source: find(node, "Source").and_then(|s| loc(s).ok()),
        meta: meta_child(node)?,
        data: find(node, "Data").map(data),
        more_data: find(node, "MoreData").is_some(),
    })
}

fn items(node: Node<'_, '_>) -> Result<Vec<Item>, SyncMlError> {
    find_all(node, "Item").map(item).collect()
}

/// `Data` with element children (Format xml sent unescaped) is captured byte for byte as the inner
/// XML of the element; otherwise its character data is returned untrimmed.
fn data(node: Node<'_, '_>) -> ItemData {
    if node.children().any(|c| c.is_element()) {
        ItemData::Xml(trim_ws(inner_xml(node)).to_owned())
    } else {
        ItemData::Text(raw_text(node))
    }
}

/// Source text between the end of `node`'s start tag and the start of its end tag. Only called on
/// elements with children, which therefore are not self-closing.
fn inner_xml<'i>(node: Node<'_, 'i>) -> &'i str {
    let src = node.document().input_text();
    let Some(element) = src.get(node.range()) else {
        return "";
    };
    // The start tag ends at the first `>` outside a quoted attribute value (XML 1.0 §3.1).
    let mut quote = None;
    let mut start = None;
    for (i, b) in element.bytes().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'>') => {
                start = Some(i + 1);
                break;
            }
            _ => {}
        }
    }
    // The end tag is the last `</` of the element's source.
    match (start, element.rfind("</")) {
        (Some(s), Some(e)) if s <= e => element.get(s..e).unwrap_or(""),
        _ => "",
    }
}

// ---- SyncBody and commands (MS-MDM §2.2.4.3, §2.2.6, §2.2.7) ----

/// SyncBody: one bad command does not fail the message (interop review M-10). A command in the
/// SyncML namespace that cannot be read but has a readable CmdID becomes [`Command::Refused`]
/// (answered on its own: 406 when unknown, 400 when malformed); one without a usable CmdID cannot
/// be answered and is dropped, as are elements of other namespaces (extensions, not commands).
/// Inside Atomic and Sequence the rules stay strict: the container is refused as a whole.
fn sync_body(body: Node<'_, '_>) -> Result<SyncBody, SyncMlError> {
    let mut out = SyncBody::default();
    for c in elements(body) {
        if is(c, "Final") {
            out.final_ = true;
        } else if !is_syncml_ns(c.tag_name().namespace()) {
            continue;
        } else {
            match command(c, Scope::Body) {
                Ok(cmd) => out.commands.push(cmd),
                Err(e) => {
                    if let Ok(cmd_id) = cmd_id(c) {
                        let local = c.tag_name().name();
                        let name = SYNCML_COMMANDS
                            .iter()
                            .copied()
                            .find(|n| *n == local)
                            .unwrap_or("Unknown");
                        let code = match e {
                            SyncMlError::UnknownCommand(_) => STATUS_OPTIONAL_FEATURE_NOT_SUPPORTED,
                            _ => STATUS_BAD_REQUEST,
                        };
                        out.commands.push(Command::Refused(Refused {
                            cmd_id,
                            name,
                            code,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Body,
    /// Inside a Sequence that is not inside an Atomic.
    Sequence,
    /// Anywhere inside an Atomic (possibly through a Sequence).
    Atomic,
}

fn command(node: Node<'_, '_>, scope: Scope) -> Result<Command, SyncMlError> {
    let name = node.tag_name().name();
    if !is_syncml_ns(node.tag_name().namespace()) {
        return Err(SyncMlError::UnknownCommand(match node.tag_name().namespace() {
            Some(ns) => format!("{{{ns}}}{name}"),
            None => name.to_owned(),
        }));
    }
    if scope != Scope::Body && matches!(name, "Status" | "Results") {
        // OMA-TS-DM_RepPro §6.5: Atomic and Sequence hold operations, never responses.
        return Err(SyncMlError::Invalid(format!("<{name}> inside Atomic or Sequence")));
    }
    Ok(match name {
        "Status" => Command::Status(status(node)?),
        "Results" => Command::Results(results(node)?),
        "Alert" => Command::Alert(alert(node)?),
        "Get" => Command::Get(item_command(node)?),
        "Add" => Command::Add(item_command(node)?),
        "Replace" => Command::Replace(item_command(node)?),
        "Delete" => Command::Delete(item_command(node)?),
        "Exec" => Command::Exec(item_command(node)?),
        // MS-MDM §2.2.7.3: nested Atomic commands are not supported (devices answer 500/507).
        "Atomic" if scope == Scope::Atomic => return Err(SyncMlError::NestedAtomic),
        "Atomic" => Command::Atomic(container(node, Scope::Atomic)?),
        "Sequence" => Command::Sequence(container(
            node,
            if scope == Scope::Atomic { scope } else { Scope::Sequence },
        )?),
        other => return Err(SyncMlError::UnknownCommand(other.to_owned())),
    })
}

fn status(node: Node<'_, '_>) -> Result<Status, SyncMlError> {
    let refs = |name: &'static str| find_all(node, name).filter_map(value).collect::<Vec<_>>();
    Ok(Status {
        cmd_id: cmd_id(node)?,
        msg_ref: field(node, "MsgRef", "Status/MsgRef")?,
        cmd_ref: field(node, "CmdRef", "Status/CmdRef")?,
        cmd: field(node, "Cmd", "Status/Cmd")?,
        target_ref: refs("TargetRef"),
        source_ref: refs("SourceRef"),
        chal: find(node, "Chal")
            .map(|c| meta_child(c).map(Option::unwrap_or_default))
            .transpose()?,
        data: field(node, "Data", "Status/Data")?,
        items: items(node)?,
    })
}

fn results(node: Node<'_, '_>) -> Result<Results, SyncMlError> {
    Ok(Results {
        cmd_id: cmd_id(node)?,
        msg_ref: opt_field(node, "MsgRef"),
        cmd_ref: field(node, "CmdRef", "Results/CmdRef")?,
        meta: meta_child(node)?,
        items: items(node)?,
    })
}

fn alert(node: Node<'_, '_>) -> Result<Alert, SyncMlError> {
    Ok(Alert {
        cmd_id: cmd_id(node)?,
        data: field(node, "Data", "Alert/Data")?,
        items: items(node)?,
    })
}

/// Get/Add/Replace/Delete/Exec (MS-MDM §2.2.7): `Item+` in the DTD, so at least one Item.
fn item_command(node: Node<'_, '_>) -> Result<ItemCommand, SyncMlError> {
    let items = items(node)?;
    if items.is_empty() {
        return Err(SyncMlError::Missing("Item"));
    }
    Ok(ItemCommand {
        cmd_id: cmd_id(node)?,
        meta: meta_child(node)?,
        items,
    })
}

/// Atomic/Sequence: every child element other than CmdID, Meta and NoResp is a nested command.
fn container(node: Node<'_, '_>, scope: Scope) -> Result<Container, SyncMlError> {
    let mut commands = Vec::new();
    for c in elements(node) {
        let (name, ns) = (c.tag_name().name(), c.tag_name().namespace());
        // Meta is accepted in every namespace `meta_child` accepts (a superset of the SyncML one).
        let own = (name == "Meta" && is_metinf_ns(ns)) || (is_syncml_ns(ns) && matches!(name, "CmdID" | "NoResp"));
        if !own {
            commands.push(command(c, scope)?);
        }
    }
    Ok(Container {
        cmd_id: cmd_id(node)?,
        meta: meta_child(node)?,
        commands,
    })
}

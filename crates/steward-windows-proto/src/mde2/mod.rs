//! MS-MDE2 enrollment codec: the three SOAP 1.2 exchanges a Windows device performs to enroll
//! (Discovery, MS-XCEP GetPolicies, MS-WSTEP RequestSecurityToken), the SOAP faults that decline
//! them, and the wap-provisioningdoc carried back in the RequestSecurityTokenResponse.
//!
//! The server side parses requests ([`parse_request`]) and writes responses
//! ([`write_discover_response`], [`write_get_policies_response`], [`write_rstr`], [`write_fault`],
//! [`write_provisioning_doc`]). The device simulator uses the mirror image: request writers
//! ([`write_discover_request`], [`write_get_policies_request`], [`write_rst_request`]) and
//! response parsers ([`parse_discover_response`], [`parse_rstr`], [`parse_provisioning_doc`],
//! [`parse_fault`]), so both ends are tested against one implementation.
//!
//! Everything here is pure: no I/O and no clock reads (callers pass `now`). Inbound XML goes
//! through [`crate::xml::parse`] (DTDs refused, size and depth capped) and elements are matched by
//! namespace URI and local name, never by prefix, because devices and documentation examples use
//! different prefixes (`s:`/`env:`, `wsse:`/`o:`, or default namespaces) for the same elements.
//! Outbound XML uses the exact prefixes of the MS-MDE2 section 4 / Learn examples, because the
//! Windows enrollment client is the only consumer and those examples are what it is tested with.

mod fault;
mod provisioning;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use fault::{FaultSubcode, parse_fault, write_fault};
pub use provisioning::{
    AppAuth, ClientStore, ParsedProvisioningDoc, PollSchedule, ProvisioningDoc, RenewalDoc, parse_provisioning_doc,
    write_provisioning_doc, write_renewal_provisioning_doc,
};
pub use request::{
    BinaryToken, Credential, DiscoverRequest, GetPoliciesRequest, RequestBody, RequestSecurityToken, SoapHeader,
    SoapRequest, message_id_of, parse_request, parse_request_with, parse_version, write_discover_request,
    write_get_policies_request, write_rst_renew_request, write_rst_request,
};
pub use response::{
    AuthPolicy, DiscoverResponse, PolicyParams, parse_discover_response, parse_rstr, write_discover_response,
    write_get_policies_response, write_rstr,
};

use crate::xml::XmlError;
use thiserror::Error;

// ---- Namespaces (MS-MDE2 §2.2.1 and the WSDLs it imports) ----

/// SOAP 1.2 envelope ([SOAP1.2-1/2007]); MS-MDE2 §2.1 mandates SOAP 1.2 for all three services.
pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing 1.0 (Action, MessageID, ReplyTo, To, RelatesTo headers).
pub const NS_ADDRESSING: &str = "http://www.w3.org/2005/08/addressing";
/// WS-Security utility (Timestamp, `u:Id`).
pub const NS_WSU: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// WS-Security secext (Security, UsernameToken, BinarySecurityToken).
pub const NS_WSSE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Trust 1.3 (RequestSecurityToken and its response), used by MS-WSTEP.
pub const NS_WST: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512";
/// WS-Authorization AdditionalContext (MS-WSTEP §3.1.4.1.2.7 / MS-MDE2 §3.4.4.1).
pub const NS_AC: &str = "http://schemas.xmlsoap.org/ws/2006/12/authorization";
/// MS-MDE2 discovery service body namespace (§3.1.4.1).
pub const NS_DISCOVERY: &str = "http://schemas.microsoft.com/windows/management/2012/01/enrollment";
/// The discovery namespace with a trailing slash, as the Learn "federated-authentication-device-
/// enrollment" Discover example spells it. Real devices send [`NS_DISCOVERY`]; the variant is
/// accepted on input only so a client built from that example is not refused.
const NS_DISCOVERY_ALT: &str = "http://schemas.microsoft.com/windows/management/2012/01/enrollment/";
/// MS-XCEP enrollment policy namespace (MS-XCEP §3.1.4.1).
pub const NS_XCEP: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy";
/// MS-WSTEP/MS-MDE2 enrollment namespace (DispositionMessage, RequestID, fault detail).
pub const NS_ENROLLMENT: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment";
/// XML Schema instance (`xsi:nil`).
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// XML Schema (declared on response bodies as the Learn examples do).
pub const NS_XSD: &str = "http://www.w3.org/2001/XMLSchema";

// ---- SOAP actions (the WSDL `wsaw:Action` of each operation) ----

/// MS-MDE2 §3.1.4.1.1.1: Discover request.
pub const ACTION_DISCOVER: &str =
    "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/Discover";
/// MS-MDE2 §3.1.4.1.1.2: DiscoverResponse.
pub const ACTION_DISCOVER_RESPONSE: &str =
    "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/DiscoverResponse";
/// MS-MDE2 §3.3.4.1.1.1 / MS-XCEP §3.1.4.1.1.1: GetPolicies request.
pub const ACTION_GET_POLICIES: &str =
    "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies";
/// MS-MDE2 §3.3.4.1.1.2 / MS-XCEP §3.1.4.1.1.2: GetPoliciesResponse.
pub const ACTION_GET_POLICIES_RESPONSE: &str =
    "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPoliciesResponse";
/// MS-MDE2 §3.4.4.1 / MS-WSTEP §3.1.4.1: RequestSecurityToken.
pub const ACTION_RST: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep";
/// MS-MDE2 §3.4.4.1 / MS-WSTEP §3.1.4.1: RequestSecurityTokenResponseCollection.
pub const ACTION_RSTRC: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstep";
/// WS-Addressing SOAP binding §6: the action of a SOAP fault message.
pub const ACTION_FAULT: &str = "http://www.w3.org/2005/08/addressing/soap/fault";
/// WS-Addressing anonymous endpoint, which Windows sends as `ReplyTo/Address`.
pub const ADDRESS_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";

// ---- Token, value and request types ----

/// MS-MDE2 §3.4.4.1: BinarySecurityToken ValueType of the PKCS#10 CSR in an initial enrollment.
pub const VALUE_TYPE_PKCS10: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10";
/// MS-MDE2 §3.4.4.1 / Learn "certificate-renewal-windows-mdm": ValueType of the PKCS#7 renewal
/// request. The Learn renewal example spells it with the WSS namespace instead, see
/// [`VALUE_TYPE_PKCS7_WSSE`]; servers should accept both.
pub const VALUE_TYPE_PKCS7: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS7";
/// The alternative PKCS#7 ValueType spelling used by the Learn automatic-renewal example.
pub const VALUE_TYPE_PKCS7_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#PKCS7";
/// MS-MDE2 §3.3.4.1.1.1.1: ValueType of the federated (WAB) user token in `wsse:Security`.
pub const VALUE_TYPE_USER_TOKEN: &str =
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken";
/// MS-MDE2 §3.4.4.1 (RSTR): ValueType of the base64 wap-provisioningdoc token.
pub const VALUE_TYPE_PROVISION_DOC: &str =
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentProvisionDoc";
/// WSS 1.0 §6.3: EncodingType of every BinarySecurityToken in this protocol.
pub const ENCODING_TYPE_BASE64: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary";
/// WSS UsernameToken Profile 1.0 §4: the plain-text password type Windows sends (OnPremise).
pub const PASSWORD_TYPE_TEXT: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText";
/// MS-MDE2 §3.4.4.1: the custom WS-Trust TokenType of the enrollment (cert + DM configuration).
pub const TOKEN_TYPE_DEVICE_ENROLLMENT: &str =
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken";
/// WS-Trust 1.3 §4: RequestType of an initial enrollment.
pub const REQUEST_TYPE_ISSUE: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue";
/// WS-Trust 1.3 §7: RequestType of a certificate renewal (ROBO or manual).
pub const REQUEST_TYPE_RENEW: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Renew";

/// Why an MS-MDE2 message could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Mde2Error {
    /// The text is not acceptable XML (malformed, a DTD, or over one of the `xml::XmlLimits`).
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The root element is not a SOAP 1.2 `Envelope`.
    #[error("document is not a SOAP 1.2 envelope")]
    NotSoap,
    /// A required element is absent (the name is the element's local name).
    #[error("required element {0} is missing")]
    MissingElement(&'static str),
    /// The body's first element is not one of the operations this codec understands.
    #[error("unknown SOAP body element {0}")]
    UnknownBody(String),
    /// The message carries a SOAP fault instead of the expected response (simulator side).
    #[error("SOAP fault {subcode}: {reason}")]
    Fault { subcode: String, reason: String },
    /// A value is present but unusable (bad base64, unknown enum value, ...).
    #[error("invalid message: {0}")]
    Invalid(String),
}

// ---- Shared reading helpers ----

type Node<'a, 'i> = roxmltree::Node<'a, 'i>;

/// Returns `(Header, Body)` of a SOAP 1.2 envelope. The Header is optional in SOAP; the Body is
/// not (SOAP 1.2 part 1 §5).
fn envelope<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> Result<(Option<Node<'a, 'i>>, Node<'a, 'i>), Mde2Error> {
    let root = doc.root_element();
    if !is(root, NS_SOAP, "Envelope") {
        return Err(Mde2Error::NotSoap);
    }
    let header = crate::xml::child(root, NS_SOAP, "Header");
    let body = crate::xml::child(root, NS_SOAP, "Body").ok_or(Mde2Error::MissingElement("Body"))?;
    Ok((header, body))
}

/// Whether `node` is the element `{ns}name`.
fn is(node: Node<'_, '_>, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(ns)
}

/// First element child, whatever its name.
fn first_element<'a, 'i>(node: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    node.children().find(|c| c.is_element())
}

/// Attribute by local name in any namespace: Windows writes `ValueType=` unprefixed while one Learn
/// example writes `wsse:ValueType=`, and both mean the same WSS attribute.
fn attr<'a>(node: Node<'a, '_>, local: &str) -> Option<&'a str> {
    node.attributes().find(|a| a.name() == local).map(|a| a.value())
}

/// All text directly inside `node`, trimmed (an element may carry several text nodes when a
/// comment or CDATA section splits its content).
fn text_of(node: Node<'_, '_>) -> String {
    let mut s = String::new();
    for c in node.children().filter(|c| c.is_text()) {
        if let Some(t) = c.text() {
            s.push_str(t);
        }
    }
    s.trim().to_owned()
}

/// Base64 payloads may be wrapped over several lines (the Learn examples indent them); the
/// whitespace is not part of the value.
fn strip_ws(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

// ---- Shared writing helper ----

/// A minimal indenting XML writer. Element and attribute names are always static literals chosen
/// here; every value goes through [`clean`] and [`crate::xml::escape_attr`] or
/// [`crate::xml::escape_text`], so no caller-supplied string can change the document's structure,
/// and every value reads back as written (found by the `provisioning_round_trip` fuzz target:
/// tabs and line breaks in attribute values came back as spaces).
struct XmlOut {
    buf: String,
    depth: usize,
}

impl XmlOut {
    fn new() -> Self {
        Self {
            buf: String::with_capacity(4096),
            depth: 0,
        }
    }

    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.buf.push_str("  ");
        }
    }

    fn start_tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.buf.push('<');
        self.buf.push_str(name);
        for (k, v) in attrs {
            self.buf.push(' ');
            self.buf.push_str(k);
            self.buf.push_str("=\"");
            self.buf.push_str(&crate::xml::escape_attr(&clean(v)));
            self.buf.push('"');
        }
    }

    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.start_tag(name, attrs);
        self.buf.push_str(">\n");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push_str(">\n");
    }

    /// `<name attrs>text</name>` on one line; no whitespace is added inside the text because
    /// Windows compares several of these values (Action, RelatesTo) verbatim.
    fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.indent();
        self.start_tag(name, attrs);
        self.buf.push('>');
        self.buf.push_str(&crate::xml::escape_text(&clean(text)));
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push_str(">\n");
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.start_tag(name, attrs);
        self.buf.push_str("/>\n");
    }

    /// `<name xsi:nil="true"/>`: MS-XCEP marks absent optional policy attributes this way.
    fn nil(&mut self, name: &str) {
        self.empty(name, &[("xsi:nil", "true")]);
    }

    fn finish(self) -> String {
        self.buf
    }
}

/// Replaces characters XML 1.0 cannot carry even when escaped (C0 controls other than tab, LF, CR,
/// and U+FFFE/U+FFFF) with U+FFFD, so a stray control byte in configuration or device data cannot
/// make a response ill-formed.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| (c < ' ' && c != '\t' && c != '\n' && c != '\r') || c == '\u{FFFE}' || c == '\u{FFFF}';
    if s.chars().any(bad) {
        std::borrow::Cow::Owned(s.chars().map(|c| if bad(c) { '\u{FFFD}' } else { c }).collect())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Formats a timestamp as WS-Security `u:Created`/`u:Expires` want it: UTC, RFC 3339 with a `Z`
/// suffix and millisecond precision (e.g. `2012-08-02T00:32:59.420Z`, the MS-MDE2 example shape).
/// Written by hand because it cannot fail, unlike `time`'s formatter API.
fn ws_timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

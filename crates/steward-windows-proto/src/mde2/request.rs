//! Device → server requests: parsing (server side) and writing (simulator side).

use super::{
    ACTION_DISCOVER, ACTION_GET_POLICIES, ACTION_RST, ADDRESS_ANONYMOUS, ENCODING_TYPE_BASE64, Mde2Error, NS_AC,
    NS_ADDRESSING, NS_DISCOVERY, NS_DISCOVERY_ALT, NS_SOAP, NS_WSSE, NS_WST, NS_WSU, NS_XCEP, NS_XSD, NS_XSI, Node,
    PASSWORD_TYPE_TEXT, REQUEST_TYPE_ISSUE, REQUEST_TYPE_RENEW, TOKEN_TYPE_DEVICE_ENROLLMENT, VALUE_TYPE_PKCS7,
    VALUE_TYPE_PKCS10, XmlOut, attr, envelope, first_element, is, strip_ws, text_of,
};
use crate::xml::{XmlLimits, child, child_text, parse, parse_with};
use std::fmt;

/// The credential a device presents in the `wsse:Security` SOAP header (MS-MDE2 §3.3: OnPremise
/// sends a UsernameToken, Federated a BinarySecurityToken holding the WAB token).
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// WSS UsernameToken with a PasswordText password (MS-MDE2 §3.3.4.1.1.1.2, OnPremise).
    UsernameToken { username: String, password: String },
    /// WSS BinarySecurityToken (MS-MDE2 §3.3.4.1.1.1.1, Federated; also Entra JWTs).
    BinarySecurityToken {
        value_type: String,
        encoding_type: Option<String>,
        token: String,
    },
}

/// Redacts the secrets: request values end up in logs, passwords and bearer tokens must not.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UsernameToken { username, .. } => f
                .debug_struct("UsernameToken")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::BinarySecurityToken {
                value_type,
                encoding_type,
                token,
            } => f
                .debug_struct("BinarySecurityToken")
                .field("value_type", value_type)
                .field("encoding_type", encoding_type)
                .field("token", &format_args!("<redacted {} bytes>", token.len()))
                .finish(),
        }
    }
}

/// The WS-Addressing and WS-Security header fields the server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapHeader {
    /// `a:Action`, trimmed. MS-MDE2 requires it on every request.
    pub action: String,
    /// `a:MessageID`, echoed back as `a:RelatesTo`.
    pub message_id: Option<String>,
    /// `a:To`, the URL the device believes it called.
    pub to: Option<String>,
    /// The `wsse:Security` credential, absent for Discover and for ROBO renewals (TLS client auth).
    pub credential: Option<Credential>,
}

/// MS-MDE2 §3.1.4.1.3.1 DiscoveryRequest (`Discover/request`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverRequest {
    pub email_address: Option<String>,
    /// e.g. "4.0"; Windows 11 25H2 sends "9.0". See [`parse_version`].
    pub request_version: Option<String>,
    /// e.g. `CIMClient_Windows`.
    pub device_type: Option<String>,
    pub application_version: Option<String>,
    pub os_edition: Option<String>,
    /// `AuthPolicies/AuthPolicy` in order: `OnPremise`, `Federated`, `Certificate`.
    pub auth_policies: Vec<String>,
}

/// MS-MDE2 §3.3.4.1.1.1 / MS-XCEP §3.1.4.1.2.1 GetPolicies. MS-MDE2 fixes every field of the body
/// (`lastUpdate`, `preferredLanguage` and `requestFilter` are nil), so only its presence matters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetPoliciesRequest;

/// A WSS BinarySecurityToken in the RST body: the CSR (PKCS#10) or renewal request (PKCS#7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryToken {
    pub value_type: String,
    pub encoding_type: Option<String>,
    /// The base64 text with all whitespace removed (not decoded: callers decide how lenient to be).
    pub data: String,
}

/// MS-MDE2 §3.4.4.1 / MS-WSTEP §3.1.4.1.2.4 `wst:RequestSecurityToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSecurityToken {
    /// `wst:TokenType`, expected to be [`super::TOKEN_TYPE_DEVICE_ENROLLMENT`].
    pub token_type: String,
    /// `wst:RequestType`: [`REQUEST_TYPE_ISSUE`] or [`REQUEST_TYPE_RENEW`].
    pub request_type: String,
    pub binary_security_token: BinaryToken,
    /// `ac:AdditionalContext/ac:ContextItem` Name/Value pairs in document order. Names repeat
    /// (one `MAC` per adapter), so this is a list, not a map.
    pub context: Vec<(String, String)>,
}

impl RequestSecurityToken {
    /// The first AdditionalContext value with this name (exact, case-sensitive match).
    pub fn context_value(&self, name: &str) -> Option<&str> {
        self.context.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every AdditionalContext value with this name, in order (e.g. all `MAC` items).
    pub fn context_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.context
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a certificate renewal (WS-Trust `Renew`) rather than an initial `Issue`.
    pub fn is_renewal(&self) -> bool {
        self.request_type == REQUEST_TYPE_RENEW
    }
}

/// The operation carried in the SOAP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    Discover(DiscoverRequest),
    GetPolicies(GetPoliciesRequest),
    RequestSecurityToken(RequestSecurityToken),
}

impl RequestBody {
    /// The SOAP action that must accompany this body; a mismatch is an `s:MessageFormat` fault.
    pub fn expected_action(&self) -> &'static str {
        match self {
            Self::Discover(_) => ACTION_DISCOVER,
            Self::GetPolicies(_) => ACTION_GET_POLICIES,
            Self::RequestSecurityToken(_) => ACTION_RST,
        }
    }
}

/// A parsed enrollment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapRequest {
    pub header: SoapHeader,
    pub body: RequestBody,
}

impl SoapRequest {
    /// Whether the header's `a:Action` names the operation the body carries.
    pub fn action_matches_body(&self) -> bool {
        self.header.action == self.body.expected_action()
    }
}

/// Parses a Discover, GetPolicies or RequestSecurityToken request.
///
/// Dispatches on the body's first element by namespace and local name, and returns the header
/// action separately so the caller can check that it matches both the endpoint and the body
/// (see [`SoapRequest::action_matches_body`]). Rejects DTDs, a non-SOAP-1.2 root, a missing Body,
/// a missing Action and unknown body elements.
pub fn parse_request(xml: &str) -> Result<SoapRequest, Mde2Error> {
    parse_request_with(xml, &XmlLimits::DEFAULT)
}

/// [`parse_request`] under configured XML limits (the enrollment endpoints' own, for instance).
pub fn parse_request_with(xml: &str, limits: &XmlLimits) -> Result<SoapRequest, Mde2Error> {
    let doc = parse_with(xml, limits)?;
    let (header, body) = envelope(&doc)?;
    let header = header.ok_or(Mde2Error::MissingElement("Header"))?;
    let header = parse_header(header)?;
    let op = first_element(body).ok_or(Mde2Error::MissingElement("Body content"))?;
    let body = if is(op, NS_DISCOVERY, "Discover") || is(op, NS_DISCOVERY_ALT, "Discover") {
        RequestBody::Discover(parse_discover(op)?)
    } else if is(op, NS_XCEP, "GetPolicies") {
        RequestBody::GetPolicies(GetPoliciesRequest)
    } else if is(op, NS_WST, "RequestSecurityToken") {
        RequestBody::RequestSecurityToken(parse_rst(op)?)
    } else {
        let tag = op.tag_name();
        return Err(Mde2Error::UnknownBody(match tag.namespace() {
            Some(ns) => format!("{{{ns}}}{}", tag.name()),
            None => tag.name().to_owned(),
        }));
    };
    Ok(SoapRequest { header, body })
}

/// WS-Addressing headers (MS-MDE2 §2.2.x: Action and To carry `s:mustUnderstand="1"`) and the
/// WSS `Security` header (MS-MDE2 §3.3).
fn parse_header(header: Node<'_, '_>) -> Result<SoapHeader, Mde2Error> {
    let action = child_text(header, NS_ADDRESSING, "Action").ok_or(Mde2Error::MissingElement("Action"))?;
    let credential = match child(header, NS_WSSE, "Security") {
        Some(sec) => parse_credential(sec)?,
        None => None,
    };
    Ok(SoapHeader {
        action: action.to_owned(),
        message_id: child_text(header, NS_ADDRESSING, "MessageID").map(str::to_owned),
        to: child_text(header, NS_ADDRESSING, "To").map(str::to_owned),
        credential,
    })
}

/// The first credential inside `wsse:Security`. A Security header holding only a `u:Timestamp` (as
/// in the ROBO renewal example) yields `None`: the device then authenticates with its TLS client
/// certificate.
fn parse_credential(sec: Node<'_, '_>) -> Result<Option<Credential>, Mde2Error> {
    if let Some(ut) = child(sec, NS_WSSE, "UsernameToken") {
        let username = child(ut, NS_WSSE, "Username")
            .map(text_of)
            .ok_or(Mde2Error::MissingElement("Username"))?;
        // The renewal example sends an empty Password element; absence is treated the same way.
        let password = child(ut, NS_WSSE, "Password").map(text_of).unwrap_or_default();
        return Ok(Some(Credential::UsernameToken { username, password }));
    }
    if let Some(bst) = child(sec, NS_WSSE, "BinarySecurityToken") {
        let value_type = attr(bst, "ValueType")
            .ok_or(Mde2Error::MissingElement("ValueType"))?
            .to_owned();
        return Ok(Some(Credential::BinarySecurityToken {
            value_type,
            encoding_type: attr(bst, "EncodingType").map(str::to_owned),
            token: text_of(bst),
        }));
    }
    Ok(None)
}

/// MS-MDE2 §3.1.4.1.1.1: `Discover/request` with its children in the Discover namespace.
fn parse_discover(op: Node<'_, '_>) -> Result<DiscoverRequest, Mde2Error> {
    // Children share the Discover element's namespace, whichever accepted spelling it used.
    let ns = op.tag_name().namespace().unwrap_or(NS_DISCOVERY);
    let req = child(op, ns, "request").ok_or(Mde2Error::MissingElement("request"))?;
    let text = |name: &str| child_text(req, ns, name).map(str::to_owned);
    let auth_policies = child(req, ns, "AuthPolicies")
        .map(|ap| {
            ap.children()
                .filter(|c| is(*c, ns, "AuthPolicy"))
                .map(text_of)
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Ok(DiscoverRequest {
        email_address: text("EmailAddress"),
        request_version: text("RequestVersion"),
        device_type: text("DeviceType"),
        application_version: text("ApplicationVersion"),
        os_edition: text("OSEdition"),
        auth_policies,
    })
}

/// MS-MDE2 §3.4.4.1 / MS-WSTEP §3.1.4.1.2.4: TokenType, RequestType, the body
/// BinarySecurityToken and the optional AdditionalContext (MS-WSTEP §3.1.4.1.2.7).
fn parse_rst(op: Node<'_, '_>) -> Result<RequestSecurityToken, Mde2Error> {
    let token_type = child_text(op, NS_WST, "TokenType").ok_or(Mde2Error::MissingElement("TokenType"))?;
    let request_type = child_text(op, NS_WST, "RequestType").ok_or(Mde2Error::MissingElement("RequestType"))?;
    let bst = child(op, NS_WSSE, "BinarySecurityToken").ok_or(Mde2Error::MissingElement("BinarySecurityToken"))?;
    let binary_security_token = BinaryToken {
        value_type: attr(bst, "ValueType")
            .ok_or(Mde2Error::MissingElement("ValueType"))?
            .trim()
            .to_owned(),
        encoding_type: attr(bst, "EncodingType").map(|s| s.trim().to_owned()),
        data: strip_ws(&text_of(bst)),
    };
    let context = child(op, NS_AC, "AdditionalContext")
        .map(|ac| {
            ac.children()
                .filter(|c| is(*c, NS_AC, "ContextItem"))
                .filter_map(|item| {
                    let name = attr(item, "Name")?.trim().to_owned();
                    let value = child(item, NS_AC, "Value").map(text_of).unwrap_or_default();
                    Some((name, value))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(RequestSecurityToken {
        token_type: token_type.to_owned(),
        request_type: request_type.to_owned(),
        binary_security_token,
        context,
    })
}

/// Best-effort `a:MessageID` of a request that may not be a valid enrollment message, so a fault
/// can still carry `a:RelatesTo`. Returns `None` when the text is not even acceptable XML.
pub fn message_id_of(xml: &str) -> Option<String> {
    let doc = parse(xml).ok()?;
    doc.descendants()
        .find(|n| is(*n, NS_ADDRESSING, "MessageID"))
        .map(text_of)
        .filter(|t| !t.is_empty())
}

/// Parses a `RequestVersion`/`EnrollmentVersion` decimal such as "4.0", "6.1" or "9.0" (a bare
/// "4" is read as 4.0). The server accepts every version >= 4.0 and answers with the highest it
/// implements (MS-MDE2 §3.1.4.1.3.2: EnrollmentVersion must not exceed the request's).
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let v = v.trim();
    let (major, minor) = v.split_once('.').unwrap_or((v, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

// ---- Simulator-side writers: what Windows sends (fixtures 01-03 of win10-19043-fleet-poc) ----

/// The WS-Addressing part of every request header, in Windows' order.
fn request_addressing(w: &mut XmlOut, action: &str, message_id: &str, to: &str) {
    w.leaf("a:Action", &[("s:mustUnderstand", "1")], action);
    w.leaf("a:MessageID", &[], message_id);
    w.open("a:ReplyTo", &[]);
    w.leaf("a:Address", &[], ADDRESS_ANONYMOUS);
    w.close("a:ReplyTo");
    w.leaf("a:To", &[("s:mustUnderstand", "1")], to);
}

/// `wsse:Security` with the credential, shaped like Windows' (UsernameToken with a `u:Id` and a
/// typed PasswordText password) or the MS-MDE2 §3.3.4.1.1.1.1 federated example.
fn request_security(w: &mut XmlOut, message_id: &str, cred: &Credential) {
    w.open("wsse:Security", &[("s:mustUnderstand", "1")]);
    match cred {
        Credential::UsernameToken { username, password } => {
            // Windows uses "uuid-<guid>-<n>"; derive it from the message id so output is stable.
            let id = format!("uuid-{}-4", message_id.trim_start_matches("urn:uuid:"));
            w.open("wsse:UsernameToken", &[("u:Id", &id)]);
            w.leaf("wsse:Username", &[], username);
            w.leaf("wsse:Password", &[("wsse:Type", PASSWORD_TYPE_TEXT)], password);
            w.close("wsse:UsernameToken");
        }
        Credential::BinarySecurityToken {
            value_type,
            encoding_type,
            token,
        } => {
            let mut attrs = vec![("ValueType", value_type.as_str())];
            if let Some(e) = encoding_type {
                attrs.push(("EncodingType", e.as_str()));
            }
            w.leaf("wsse:BinarySecurityToken", &attrs, token);
        }
    }
    w.close("wsse:Security");
}

/// The namespace declarations Windows puts on GetPolicies and RST envelopes.
const WS_ENVELOPE_ATTRS: [(&str, &str); 6] = [
    ("xmlns:s", NS_SOAP),
    ("xmlns:a", NS_ADDRESSING),
    ("xmlns:u", NS_WSU),
    ("xmlns:wsse", NS_WSSE),
    ("xmlns:wst", NS_WST),
    ("xmlns:ac", NS_AC),
];

/// A Discover request as Windows sends it (MS-MDE2 §3.1.4.1.1.1; fixture 01).
pub fn write_discover_request(message_id: &str, to: &str, r: &DiscoverRequest) -> String {
    let mut w = XmlOut::new();
    w.open("s:Envelope", &[("xmlns:a", NS_ADDRESSING), ("xmlns:s", NS_SOAP)]);
    w.open("s:Header", &[]);
    request_addressing(&mut w, ACTION_DISCOVER, message_id, to);
    w.close("s:Header");
    w.open("s:Body", &[]);
    w.open("Discover", &[("xmlns", NS_DISCOVERY)]);
    w.open("request", &[("xmlns:i", NS_XSI)]);
    let fields = [
        ("EmailAddress", &r.email_address),
        ("RequestVersion", &r.request_version),
        ("DeviceType", &r.device_type),
        ("ApplicationVersion", &r.application_version),
        ("OSEdition", &r.os_edition),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            w.leaf(name, &[], v);
        }
    }
    if !r.auth_policies.is_empty() {
        w.open("AuthPolicies", &[]);
        for p in &r.auth_policies {
            w.leaf("AuthPolicy", &[], p);
        }
        w.close("AuthPolicies");
    }
    w.close("request");
    w.close("Discover");
    w.close("s:Body");
    w.close("s:Envelope");
    w.finish()
}

/// A GetPolicies request as Windows sends it (MS-MDE2 §3.3.4.1.1.1; fixture 02).
pub fn write_get_policies_request(message_id: &str, to: &str, cred: &Credential) -> String {
    let mut w = XmlOut::new();
    w.open("s:Envelope", &WS_ENVELOPE_ATTRS);
    w.open("s:Header", &[]);
    request_addressing(&mut w, ACTION_GET_POLICIES, message_id, to);
    request_security(&mut w, message_id, cred);
    w.close("s:Header");
    w.open("s:Body", &[("xmlns:xsi", NS_XSI), ("xmlns:xsd", NS_XSD)]);
    w.open("GetPolicies", &[("xmlns", NS_XCEP)]);
    w.open("client", &[]);
    w.nil("lastUpdate");
    w.nil("preferredLanguage");
    w.close("client");
    w.nil("requestFilter");
    w.close("GetPolicies");
    w.close("s:Body");
    w.close("s:Envelope");
    w.finish()
}

/// An initial-enrollment RequestSecurityToken as Windows sends it (MS-MDE2 §3.4.4.1; fixture 03):
/// RequestType Issue, a PKCS#10 BinarySecurityToken, then AdditionalContext in the given order
/// (Windows sends UXInitiated, HWDevID, Locale, TargetedUserLoggedIn, OSEdition, DeviceName, MAC…,
/// DeviceID, EnrollmentType, DeviceType, OSVersion, ApplicationVersion, NotInOobe).
pub fn write_rst_request(
    message_id: &str,
    to: &str,
    cred: &Credential,
    csr_base64: &str,
    context: &[(String, String)],
) -> String {
    write_rst(
        message_id,
        to,
        Some(cred),
        REQUEST_TYPE_ISSUE,
        VALUE_TYPE_PKCS10,
        csr_base64,
        context,
    )
}

/// A renewal RequestSecurityToken (Learn "certificate-renewal-windows-mdm"): RequestType Renew and
/// a PKCS#7 BinarySecurityToken. `cred` is `None` for ROBO renewals, which authenticate with the
/// TLS client certificate instead of a header credential.
pub fn write_rst_renew_request(
    message_id: &str,
    to: &str,
    cred: Option<&Credential>,
    pkcs7_base64: &str,
    context: &[(String, String)],
) -> String {
    write_rst(
        message_id,
        to,
        cred,
        REQUEST_TYPE_RENEW,
        VALUE_TYPE_PKCS7,
        pkcs7_base64,
        context,
    )
}

fn write_rst(
    message_id: &str,
    to: &str,
    cred: Option<&Credential>,
    request_type: &str,
    value_type: &str,
    token_base64: &str,
    context: &[(String, String)],
) -> String {
    let mut w = XmlOut::new();
    w.open("s:Envelope", &WS_ENVELOPE_ATTRS);
    w.open("s:Header", &[]);
    request_addressing(&mut w, ACTION_RST, message_id, to);
    if let Some(cred) = cred {
        request_security(&mut w, message_id, cred);
    }
    w.close("s:Header");
    w.open("s:Body", &[]);
    w.open("wst:RequestSecurityToken", &[]);
    w.leaf("wst:TokenType", &[], TOKEN_TYPE_DEVICE_ENROLLMENT);
    w.leaf("wst:RequestType", &[], request_type);
    w.leaf(
        "wsse:BinarySecurityToken",
        &[("ValueType", value_type), ("EncodingType", ENCODING_TYPE_BASE64)],
        token_base64,
    );
    w.open("ac:AdditionalContext", &[("xmlns", NS_AC)]);
    for (name, value) in context {
        w.open("ac:ContextItem", &[("Name", name)]);
        w.leaf("ac:Value", &[], value);
        w.close("ac:ContextItem");
    }
    w.close("ac:AdditionalContext");
    w.close("wst:RequestSecurityToken");
    w.close("s:Body");
    w.close("s:Envelope");
    w.finish()
}

//! Server → device responses: writing (server side) and parsing (simulator side).

use super::{
    ACTION_DISCOVER_RESPONSE, ACTION_GET_POLICIES_RESPONSE, ACTION_RSTRC, ENCODING_TYPE_BASE64, Mde2Error,
    NS_ADDRESSING, NS_DISCOVERY, NS_ENROLLMENT, NS_SOAP, NS_WSSE, NS_WST, NS_WSU, NS_XCEP, NS_XSD, NS_XSI,
    TOKEN_TYPE_DEVICE_ENROLLMENT, VALUE_TYPE_PROVISION_DOC, XmlOut, envelope, first_element, is, strip_ws, text_of,
    ws_timestamp,
};
use crate::xml::{child, child_text, parse};
use base64::Engine as _;

/// MS-MDE2 §3.1.4.1.3.2 `AuthPolicy`: how the device must authenticate to the policy and
/// enrollment services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPolicy {
    /// Username/password in a WSS UsernameToken (MS-MDE2 §3.3.4.1.1.1.2).
    OnPremise,
    /// A token obtained from `AuthenticationServiceUrl` through the Web Authentication Broker.
    Federated,
}

impl AuthPolicy {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnPremise => "OnPremise",
            Self::Federated => "Federated",
        }
    }

    /// Parses the wire spelling (case-sensitive, as the schema enumeration is).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OnPremise" => Some(Self::OnPremise),
            "Federated" => Some(Self::Federated),
            _ => None,
        }
    }
}

/// MS-MDE2 §3.1.4.1.3.2 `DiscoverResponse/DiscoverResult`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverResponse {
    pub auth_policy: AuthPolicy,
    /// Must not exceed the request's RequestVersion; "4.0" is what every Windows 10/11 accepts.
    pub enrollment_version: String,
    /// MS-XCEP endpoint (`…/Policy.svc`).
    pub policy_service_url: String,
    /// MS-WSTEP endpoint (`…/Enrollment.svc`).
    pub enrollment_service_url: String,
    /// WAB start page; MS-MDE2 requires it when `auth_policy` is Federated.
    pub authentication_service_url: Option<String>,
}

/// The SOAP 1.2 response envelope header: `a:Action` with `s:mustUnderstand="1"` and `a:RelatesTo`
/// (MS-MDE2 §2.2 / §4 examples; Windows drops responses whose Action it does not expect).
fn response_header(w: &mut XmlOut, action: &str, relates_to: Option<&str>) {
    w.leaf("a:Action", &[("s:mustUnderstand", "1")], action);
    if let Some(id) = relates_to {
        w.leaf("a:RelatesTo", &[], id);
    }
}

/// MS-MDE2 §3.1.4.1.1.2 DiscoverResponse, shaped like the MS-MDE2 §4.1 / Learn example.
pub fn write_discover_response(relates_to: Option<&str>, r: &DiscoverResponse) -> String {
    let mut w = XmlOut::new();
    w.open("s:Envelope", &[("xmlns:s", NS_SOAP), ("xmlns:a", NS_ADDRESSING)]);
    w.open("s:Header", &[]);
    response_header(&mut w, ACTION_DISCOVER_RESPONSE, relates_to);
    w.close("s:Header");
    w.open("s:Body", &[("xmlns:xsi", NS_XSI), ("xmlns:xsd", NS_XSD)]);
    w.open("DiscoverResponse", &[("xmlns", NS_DISCOVERY)]);
    w.open("DiscoverResult", &[]);
    // DiscoverResult is an xsd:all, so order is free; this is the Learn example's order.
    w.leaf("AuthPolicy", &[], r.auth_policy.as_str());
    w.leaf("EnrollmentVersion", &[], &r.enrollment_version);
    w.leaf("EnrollmentPolicyServiceUrl", &[], &r.policy_service_url);
    w.leaf("EnrollmentServiceUrl", &[], &r.enrollment_service_url);
    if let Some(url) = &r.authentication_service_url {
        w.leaf("AuthenticationServiceUrl", &[], url);
    }
    w.close("DiscoverResult");
    w.close("DiscoverResponse");
    w.close("s:Body");
    w.close("s:Envelope");
    w.finish()
}

/// Parses a DiscoverResponse (simulator side). A SOAP fault becomes [`Mde2Error::Fault`].
pub fn parse_discover_response(xml: &str) -> Result<DiscoverResponse, Mde2Error> {
    let doc = parse(xml)?;
    let (_, body) = envelope(&doc)?;
    let op = body_operation(body)?;
    if !is(op, NS_DISCOVERY, "DiscoverResponse") {
        return Err(Mde2Error::UnknownBody(op.tag_name().name().to_owned()));
    }
    let result = child(op, NS_DISCOVERY, "DiscoverResult").ok_or(Mde2Error::MissingElement("DiscoverResult"))?;
    let text = |name: &str| child_text(result, NS_DISCOVERY, name).map(str::to_owned);
    let policy = text("AuthPolicy").ok_or(Mde2Error::MissingElement("AuthPolicy"))?;
    let auth_policy =
        AuthPolicy::parse(&policy).ok_or_else(|| Mde2Error::Invalid(format!("unsupported AuthPolicy {policy:?}")))?;
    Ok(DiscoverResponse {
        auth_policy,
        // Both are optional/nillable in the schema; absent reads as empty.
        enrollment_version: text("EnrollmentVersion").unwrap_or_default(),
        policy_service_url: text("EnrollmentPolicyServiceUrl").unwrap_or_default(),
        enrollment_service_url: text("EnrollmentServiceUrl")
            .ok_or(Mde2Error::MissingElement("EnrollmentServiceUrl"))?,
        authentication_service_url: text("AuthenticationServiceUrl"),
    })
}

/// The certificate template the MS-XCEP policy response describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyParams {
    /// MS-XCEP §3.1.4.1.3.23 `policyID`: identifies this policy server's policy set.
    pub policy_id: String,
    /// `policyFriendlyName` and the template `commonName`.
    pub friendly_name: String,
    /// MS-XCEP §3.1.4.1.3.20 `minimalKeyLength` (bits), e.g. 2048.
    pub min_key_length: u32,
    /// MS-XCEP §3.1.4.1.3.8 `validityPeriodSeconds` of the issued certificate.
    pub validity_period_seconds: u64,
    /// MS-XCEP §3.1.4.1.3.8 `renewalPeriodSeconds` (how long before expiry renewal starts).
    pub renewal_period_seconds: u64,
}

/// SHA-256 OID referenced by `hashAlgorithmOIDReference` (oIDReferenceID 0).
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
/// RSA public key OID referenced by `algorithmOIDReference` (oIDReferenceID 1).
const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// MS-MDE2 §3.3.4.1.1.2 / MS-XCEP §3.1.4.1.2.2 GetPoliciesResponse, modelled on the Learn
/// federated-enrollment example. MS-MDE2 states the client only evaluates policySchema (must be
/// 3), minimalKeyLength, algorithmOIDReference, hashAlgorithmOIDReference (with its oID) and
/// cryptoProviders; every other MS-XCEP attribute is present but nil, as the schema requires
/// the elements themselves.
pub fn write_get_policies_response(relates_to: Option<&str>, p: &PolicyParams) -> String {
    let mut w = XmlOut::new();
    w.open(
        "s:Envelope",
        &[("xmlns:s", NS_SOAP), ("xmlns:a", NS_ADDRESSING), ("xmlns:u", NS_WSU)],
    );
    w.open("s:Header", &[]);
    response_header(&mut w, ACTION_GET_POLICIES_RESPONSE, relates_to);
    w.close("s:Header");
    w.open("s:Body", &[("xmlns:xsi", NS_XSI), ("xmlns:xsd", NS_XSD)]);
    w.open("GetPoliciesResponse", &[("xmlns", NS_XCEP)]);

    // MS-XCEP §3.1.4.1.3.23 Response.
    w.open("response", &[]);
    w.leaf("policyID", &[], &p.policy_id);
    w.leaf("policyFriendlyName", &[], &p.friendly_name);
    w.nil("nextUpdateHours");
    w.nil("policiesNotChanged");
    w.open("policies", &[]);
    // MS-XCEP §3.1.4.1.3.7 CertificateEnrollmentPolicy.
    w.open("policy", &[]);
    w.leaf("policyOIDReference", &[], "0");
    w.nil("cAs");
    // MS-XCEP §3.1.4.1.3.1 Attributes, in schema (xs:sequence) order.
    w.open("attributes", &[]);
    w.leaf("commonName", &[], &p.friendly_name);
    w.leaf("policySchema", &[], "3");
    w.open("certificateValidity", &[]);
    w.leaf("validityPeriodSeconds", &[], &p.validity_period_seconds.to_string());
    w.leaf("renewalPeriodSeconds", &[], &p.renewal_period_seconds.to_string());
    w.close("certificateValidity");
    // MS-XCEP §3.1.4.1.3.11 EnrollmentPermission: enroll yes, no Windows autoenrollment.
    w.open("permission", &[]);
    w.leaf("enroll", &[], "true");
    w.leaf("autoEnroll", &[], "false");
    w.close("permission");
    // MS-XCEP §3.1.4.1.3.20 PrivateKeyAttributes.
    w.open("privateKeyAttributes", &[]);
    w.leaf("minimalKeyLength", &[], &p.min_key_length.to_string());
    // keySpec is a legacy CryptoAPI setting; both providers below are CNG KSPs, so leave it nil.
    w.nil("keySpec");
    w.nil("keyUsageProperty");
    w.nil("permissions");
    w.leaf("algorithmOIDReference", &[], "1");
    // TPM first, so the key is hardware-bound when the device has a TPM; software KSP otherwise.
    w.open("cryptoProviders", &[]);
    w.leaf("provider", &[], "Microsoft Platform Crypto Provider");
    w.leaf("provider", &[], "Microsoft Software Key Storage Provider");
    w.close("cryptoProviders");
    w.close("privateKeyAttributes");
    // MS-XCEP Revision type: the template version.
    w.open("revision", &[]);
    w.leaf("majorRevision", &[], "101");
    w.leaf("minorRevision", &[], "0");
    w.close("revision");
    w.nil("supersededPolicies");
    w.nil("privateKeyFlags");
    w.nil("subjectNameFlags");
    w.nil("enrollmentFlags");
    w.nil("generalFlags");
    // Without a hash policy Windows falls back to SHA-1 (Learn: "the hash algorithm is SHA-1").
    w.leaf("hashAlgorithmOIDReference", &[], "0");
    w.nil("rARequirements");
    w.nil("keyArchivalAttributes");
    w.nil("extensions");
    w.close("attributes");
    w.close("policy");
    w.close("policies");
    w.close("response");

    // MS-XCEP §3.1.4.1.2.2: issuers (none: the CA cert travels in the provisioning doc) and the
    // OID table the references above point into (MS-XCEP §3.1.4.1.3.16 OID).
    w.nil("cAs");
    w.open("oIDs", &[]);
    // Group 1 (hash algorithm, MS-XCEP §3.1.4.1.3.16), as MS-MDE2 §3.3.4.1.1.2 says: "The value
    // MUST conform to… [MS-XCEP] 3.1.4.1.3.16. For example, the <group> element value is 1."
    // (Fleet sends 4; the captured Windows 10 even accepted a nil hash reference and then signed
    // with OIW sha1RSA, which we accept too, so the risk either way is low — interop review C-2.)
    write_oid(&mut w, OID_SHA256, 1, 0, "szOID_NIST_sha256");
    write_oid(&mut w, OID_RSA, 3, 1, "szOID_RSA_RSA");
    w.close("oIDs");

    w.close("GetPoliciesResponse");
    w.close("s:Body");
    w.close("s:Envelope");
    w.finish()
}

fn write_oid(w: &mut XmlOut, value: &str, group: u32, reference: u32, name: &str) {
    w.open("oID", &[]);
    w.leaf("value", &[], value);
    w.leaf("group", &[], &group.to_string());
    w.leaf("oIDReferenceID", &[], &reference.to_string());
    w.leaf("defaultName", &[], name);
    w.close("oID");
}

/// MS-MDE2 §3.4.4.1 / MS-WSTEP §3.1.4.1 RequestSecurityTokenResponseCollection carrying the
/// base64 wap-provisioningdoc, with a WSS Timestamp valid for five minutes from `now`.
///
/// The Learn example of this message declares the SOAP 1.1 envelope namespace; that is a
/// documentation slip (every other message, and Windows itself, uses SOAP 1.2), so SOAP 1.2 is used.
pub fn write_rstr(relates_to: Option<&str>, provisioning_doc_xml: &str, now: time::OffsetDateTime) -> String {
    let expires = now.checked_add(time::Duration::minutes(5)).unwrap_or(now);
    let token = base64::engine::general_purpose::STANDARD.encode(provisioning_doc_xml.as_bytes());
    let mut w = XmlOut::new();
    w.open(
        "s:Envelope",
        &[("xmlns:s", NS_SOAP), ("xmlns:a", NS_ADDRESSING), ("xmlns:u", NS_WSU)],
    );
    w.open("s:Header", &[]);
    response_header(&mut w, ACTION_RSTRC, relates_to);
    // WSS 1.0 §10 Timestamp; the `o:` prefix and `u:Id="_0"` follow the MS-MDE2 example, which the
    // device accepted in the captured exchange.
    w.open("o:Security", &[("s:mustUnderstand", "1"), ("xmlns:o", NS_WSSE)]);
    w.open("u:Timestamp", &[("u:Id", "_0")]);
    w.leaf("u:Created", &[], &ws_timestamp(now));
    w.leaf("u:Expires", &[], &ws_timestamp(expires));
    w.close("u:Timestamp");
    w.close("o:Security");
    w.close("s:Header");
    w.open("s:Body", &[]);
    w.open("RequestSecurityTokenResponseCollection", &[("xmlns", NS_WST)]);
    w.open("RequestSecurityTokenResponse", &[]);
    w.leaf("TokenType", &[], TOKEN_TYPE_DEVICE_ENROLLMENT);
    // MS-WSTEP DispositionMessage (enrollment namespace): empty means "issued", no message.
    w.empty("DispositionMessage", &[("xmlns", NS_ENROLLMENT)]);
    w.open("RequestedSecurityToken", &[]);
    w.leaf(
        "BinarySecurityToken",
        &[
            ("ValueType", VALUE_TYPE_PROVISION_DOC),
            ("EncodingType", ENCODING_TYPE_BASE64),
            ("xmlns", NS_WSSE),
        ],
        &token,
    );
    w.close("RequestedSecurityToken");
    // MS-WSTEP RequestID (enrollment namespace): no CA request id to report; the example uses 0.
    w.leaf("RequestID", &[("xmlns", NS_ENROLLMENT)], "0");
    w.close("RequestSecurityTokenResponse");
    w.close("RequestSecurityTokenResponseCollection");
    w.close("s:Body");
    w.close("s:Envelope");
    w.finish()
}

/// Parses an RSTR (simulator side) and returns the decoded wap-provisioningdoc XML. A SOAP fault
/// becomes [`Mde2Error::Fault`].
pub fn parse_rstr(xml: &str) -> Result<String, Mde2Error> {
    let doc = parse(xml)?;
    let (_, body) = envelope(&doc)?;
    let op = body_operation(body)?;
    if !is(op, NS_WST, "RequestSecurityTokenResponseCollection") {
        return Err(Mde2Error::UnknownBody(op.tag_name().name().to_owned()));
    }
    let bst = child(op, NS_WST, "RequestSecurityTokenResponse")
        .and_then(|r| child(r, NS_WST, "RequestedSecurityToken"))
        .and_then(|r| child(r, NS_WSSE, "BinarySecurityToken"))
        .ok_or(Mde2Error::MissingElement("BinarySecurityToken"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(strip_ws(&text_of(bst)))
        .map_err(|e| Mde2Error::Invalid(format!("provisioning doc is not base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| Mde2Error::Invalid("provisioning doc is not UTF-8".to_owned()))
}

/// The body's operation element, or the fault it carries as an error.
fn body_operation<'a, 'i>(body: roxmltree::Node<'a, 'i>) -> Result<roxmltree::Node<'a, 'i>, Mde2Error> {
    let op = first_element(body).ok_or(Mde2Error::MissingElement("Body content"))?;
    if is(op, NS_SOAP, "Fault") {
        let (subcode, reason) = super::fault::fault_fields(op);
        return Err(Mde2Error::Fault { subcode, reason });
    }
    Ok(op)
}

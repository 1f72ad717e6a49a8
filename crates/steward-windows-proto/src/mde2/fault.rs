//! MS-MDE2 §2.2.10 SOAP faults: how the enrollment server declines a message.

use super::{ACTION_FAULT, NS_ADDRESSING, NS_SOAP, XmlOut, envelope, is, text_of};
use crate::xml::{child, parse};

/// The MS-MDE2 §2.2.10 fault subcodes. Each maps to an `MENROLL_E_DEVICE_*` HRESULT on the device
/// (0x80180001 through 0x80180007), which is what the user ends up seeing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSubcode {
    /// 0x80180001: the message is malformed (bad XML, wrong action, missing element).
    MessageFormat,
    /// 0x80180002: the user or device was not recognised (bad password or token).
    Authentication,
    /// 0x80180003: recognised but not allowed to enroll.
    Authorization,
    /// 0x80180004: the certificate request was rejected or could not be signed.
    CertificateRequest,
    /// 0x80180005: a generic management server failure.
    EnrollmentServer,
    /// 0x80180006: an unexpected server-side error.
    InternalServiceFault,
    /// 0x80180007: the WS-Security header could not be parsed.
    InvalidSecurity,
}

impl FaultSubcode {
    /// The `s:Subcode/s:Value` QName. The spec table puts InternalServiceFault and InvalidSecurity
    /// in the `a:` (WS-Addressing) namespace and the rest in `s:`; the fault envelope declares both
    /// prefixes so the QNames resolve.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MessageFormat => "s:MessageFormat",
            Self::Authentication => "s:Authentication",
            Self::Authorization => "s:Authorization",
            Self::CertificateRequest => "s:CertificateRequest",
            Self::EnrollmentServer => "s:EnrollmentServer",
            Self::InternalServiceFault => "a:InternalServiceFault",
            Self::InvalidSecurity => "a:InvalidSecurity",
        }
    }

    /// SOAP 1.2 part 1 §5.4.6 fault code class. The MS-MDE2 example always says `s:Receiver`, but
    /// SOAP 1.2 defines Sender as "the message was incorrectly formed or did not contain the
    /// appropriate information" and Receiver as "the message could not be processed for reasons
    /// attributable to the processing of the message rather than to its contents". Windows keys
    /// its HRESULT on the subcode, not on this value, so the code class follows SOAP semantics:
    /// retrying the same request cannot fix a Sender fault, while a Receiver fault may go away.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MessageFormat
            | Self::Authentication
            | Self::Authorization
            | Self::CertificateRequest
            | Self::InvalidSecurity => "s:Sender",
            Self::EnrollmentServer | Self::InternalServiceFault => "s:Receiver",
        }
    }
}

/// The WCF diagnostics namespace of the `ActivityId` header in the MS-MDE2 §2.2.10 example.
const NS_DIAGNOSTICS: &str = "http://schemas.microsoft.com/2004/09/ServiceModel/Diagnostics";

/// A SOAP 1.2 fault shaped like the MS-MDE2 §2.2.10 example: Code (Sender or Receiver) with the
/// MS-MDE2 subcode, an en-US Reason, and no detail. Windows turns the subcode into its
/// MENROLL_E_DEVICE_* message; the §2.2.10 detail `DeviceEnrollmentServiceError/ErrorType` is for
/// the specific conditions of its own list (DeviceCapReached, DeviceNotSupported, NotSupported,
/// NotEligibleToRenew, InMaintenance, UserLicense, InvalidEnrollmentData, CustomServerError), none
/// of which these faults are, so none is written (our earlier ErrorType values such as
/// `Authentication` were not in that list). `trace_id`, a server-side correlation id support can
/// look up, travels as the example's WCF `ActivityId` header.
pub fn write_fault(relates_to: Option<&str>, subcode: FaultSubcode, reason: &str, trace_id: &str) -> String {
    let mut w = XmlOut::new();
    w.open("s:Envelope", &[("xmlns:s", NS_SOAP), ("xmlns:a", NS_ADDRESSING)]);
    w.open("s:Header", &[]);
    // WS-Addressing SOAP binding: faults carry the generic fault action.
    w.leaf("a:Action", &[("s:mustUnderstand", "1")], ACTION_FAULT);
    w.leaf(
        "ActivityId",
        &[("CorrelationId", trace_id), ("xmlns", NS_DIAGNOSTICS)],
        trace_id,
    );
    if let Some(id) = relates_to {
        w.leaf("a:RelatesTo", &[], id);
    }
    w.close("s:Header");
    w.open("s:Body", &[]);
    w.open("s:Fault", &[]);
    w.open("s:Code", &[]);
    w.leaf("s:Value", &[], subcode.code());
    w.open("s:Subcode", &[]);
    w.leaf("s:Value", &[], subcode.as_str());
    w.close("s:Subcode");
    w.close("s:Code");
    w.open("s:Reason", &[]);
    w.leaf("s:Text", &[("xml:lang", "en-US")], reason);
    w.close("s:Reason");
    w.close("s:Fault");
    w.close("s:Body");
    w.close("s:Envelope");
    w.finish()
}

/// If `xml` is a SOAP 1.2 fault, returns `(subcode, reason)`: the subcode QName as written (e.g.
/// `s:Authorization`; the Code value when there is no Subcode) and the first Reason text.
pub fn parse_fault(xml: &str) -> Option<(String, String)> {
    let doc = parse(xml).ok()?;
    let (_, body) = envelope(&doc).ok()?;
    let fault = child(body, NS_SOAP, "Fault")?;
    Some(fault_fields(fault))
}

/// Subcode (or Code) value and Reason text of an `s:Fault` element.
pub(super) fn fault_fields(fault: roxmltree::Node<'_, '_>) -> (String, String) {
    let code = child(fault, NS_SOAP, "Code");
    let subcode = code
        .and_then(|c| child(c, NS_SOAP, "Subcode"))
        .and_then(|s| child(s, NS_SOAP, "Value"))
        .or_else(|| code.and_then(|c| child(c, NS_SOAP, "Value")))
        .map(text_of)
        .unwrap_or_default();
    let reason = child(fault, NS_SOAP, "Reason")
        .and_then(|r| r.children().find(|t| is(*t, NS_SOAP, "Text")))
        .map(text_of)
        .unwrap_or_default();
    (subcode, reason)
}

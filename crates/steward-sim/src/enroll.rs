//! The enrollment half of a simulated Windows device: probe → Discover → (federated sign-in) →
//! GetPolicies → RequestSecurityToken, then apply the provisioning document.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use steward_pki::{CsrSignatureAlgorithm, DeviceKey};
use steward_windows_proto::mde2::{self, Credential, DiscoverRequest};

use crate::https::{HttpsClient, HttpsError, Response};

const SOAP: &str = "application/soap+xml; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Https(#[from] HttpsError),
    #[error("{step}: server answered SOAP fault {subcode} (HTTP {status}): {reason}")]
    Fault {
        step: &'static str,
        status: u16,
        subcode: String,
        reason: String,
    },
    #[error("{step}: {message}")]
    Protocol { step: &'static str, message: String },
    /// The provisioning document breaks a rule Windows enforces (see [`check_provisioning_doc`]).
    #[error("provisioning document refused: {0}")]
    Refused(String),
    #[error("key or CSR: {0}")]
    Pki(#[from] steward_pki::PkiError),
}

/// How the simulated user authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// OnPremise UsernameToken: the e-mail plus a password or an enrollment token.
    Password(String),
    /// Federated: sign in on the server's page with this password, then present the token it returns.
    Federated(String),
}

#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// Server base URL, e.g. `https://mdm.example.com:8443`; discovery is at
    /// `<base>/EnrollmentServer/Discovery.svc`.
    pub server_url: String,
    pub email: String,
    pub credentials: Credentials,
    /// 32 hex digits like Windows' DeviceID; random when None.
    pub device_id: Option<String>,
    pub device_name: String,
    /// "Full" (user + device; cert in My/User) or "Device".
    pub enrollment_type: String,
    pub os_version: String,
    /// Windows 11 25H2 sends 9.0.
    pub request_version: String,
    pub key_bits: usize,
    pub csr_algorithm: CsrSignatureAlgorithm,
}

impl EnrollOptions {
    pub fn new(server_url: impl Into<String>, email: impl Into<String>, credentials: Credentials) -> Self {
        Self {
            server_url: server_url.into().trim_end_matches('/').to_owned(),
            email: email.into(),
            credentials,
            device_id: None,
            device_name: "DESKTOP-SIM0001".into(),
            enrollment_type: "Full".into(),
            os_version: "10.0.26100.2605".into(),
            request_version: "9.0".into(),
            key_bits: 2048,
            csr_algorithm: CsrSignatureAlgorithm::Sha1RsaOiw,
        }
    }
}

/// What the device keeps after enrolling: its identity and where to be managed.
pub struct EnrolledDevice {
    pub device_id: String,
    pub key: DeviceKey,
    pub cert_der: Vec<u8>,
    pub root_der: Option<Vec<u8>>,
    pub intermediate_der: Option<Vec<u8>>,
    pub management_url: String,
    pub provisioning_doc: mde2::ParsedProvisioningDoc,
    pub provisioning_doc_xml: String,
    /// Whether the DM client finds `cert_der` by the provisioned SSLCLIENTCERTSEARCHCRITERIA
    /// ([`select_client_certificate`]); if not, its sessions present no client certificate.
    pub client_cert_selected: bool,
}

impl std::fmt::Debug for EnrolledDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolledDevice")
            .field("device_id", &self.device_id)
            .field("management_url", &self.management_url)
            .finish_non_exhaustive()
    }
}

pub fn random_device_id() -> String {
    uuid::Uuid::new_v4().simple().to_string().to_uppercase()
}

fn message_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn check_fault(step: &'static str, resp: &Response) -> Result<String, EnrollError> {
    let text = resp.text();
    if let Some((subcode, reason)) = mde2::parse_fault(&text) {
        return Err(EnrollError::Fault {
            step,
            status: resp.status.as_u16(),
            subcode,
            reason,
        });
    }
    if !resp.status.is_success() {
        return Err(EnrollError::Protocol {
            step,
            message: format!("HTTP {}", resp.status),
        });
    }
    Ok(text)
}

/// Extracts `wresult` from the sign-in page's final auto-post form.
fn extract_wresult(html: &str) -> Option<String> {
    let marker = "name=\"wresult\" value=\"";
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].replace("&amp;", "&"))
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Runs the whole enrollment like Windows' built-in client, with a fresh RSA key of
/// `opts.key_bits` generated after GetPolicies (where Windows generates it).
pub async fn enroll(client: &HttpsClient, opts: &EnrollOptions) -> Result<EnrolledDevice, EnrollError> {
    enroll_inner(client, opts, None).await
}

/// [`enroll`] with a key generated beforehand. RSA-2048 generation costs 50–100 ms of CPU, which
/// would dominate a load test's client side; fleets generate keys up front (or share one) and
/// hand each device its own [`DeviceKey`] here. The server sees the same messages either way.
pub async fn enroll_with_key(
    client: &HttpsClient,
    opts: &EnrollOptions,
    key: DeviceKey,
) -> Result<EnrolledDevice, EnrollError> {
    enroll_inner(client, opts, Some(key)).await
}

async fn enroll_inner(
    client: &HttpsClient,
    opts: &EnrollOptions,
    key: Option<DeviceKey>,
) -> Result<EnrolledDevice, EnrollError> {
    let discovery_url = format!("{}/EnrollmentServer/Discovery.svc", opts.server_url);
    let probe = client.get(&discovery_url).await?;
    if !probe.status.is_success() {
        return Err(EnrollError::Protocol {
            step: "probe",
            message: format!("HTTP {}", probe.status),
        });
    }

    let discover = DiscoverRequest {
        email_address: Some(opts.email.clone()),
        request_version: Some(opts.request_version.clone()),
        device_type: Some("CIMClient_Windows".into()),
        application_version: Some(opts.os_version.clone()),
        os_edition: Some("72".into()),
        auth_policies: vec!["OnPremise".into(), "Federated".into()],
    };
    let resp = client
        .post(
            &discovery_url,
            SOAP,
            mde2::write_discover_request(&message_id(), &discovery_url, &discover),
        )
        .await?;
    let text = check_fault("discover", &resp)?;
    let dr = mde2::parse_discover_response(&text).map_err(|e| EnrollError::Protocol {
        step: "discover",
        message: e.to_string(),
    })?;

    let credential = match (&opts.credentials, dr.auth_policy) {
        (Credentials::Password(p), _) => Credential::UsernameToken {
            username: opts.email.clone(),
            password: p.clone(),
        },
        (Credentials::Federated(p), mde2::AuthPolicy::Federated) => {
            let auth_url = dr.authentication_service_url.clone().ok_or(EnrollError::Protocol {
                step: "discover",
                message: "Federated without AuthenticationServiceUrl".into(),
            })?;
            let appru = "ms-app://windows.immersivecontrolpanel";
            let page = client
                .get(&format!(
                    "{auth_url}?{}",
                    form_encode(&[("appru", appru), ("login_hint", &opts.email)])
                ))
                .await?;
            if !page.status.is_success() {
                return Err(EnrollError::Protocol {
                    step: "sign-in page",
                    message: format!("HTTP {}", page.status),
                });
            }
            let form = form_encode(&[("appru", appru), ("email", &opts.email), ("password", p)]);
            let resp = client
                .post(&auth_url, "application/x-www-form-urlencoded", form)
                .await?;
            let html = resp.text();
            let token = extract_wresult(&html).ok_or(EnrollError::Protocol {
                step: "sign-in",
                message: format!("no wresult in the sign-in response (HTTP {})", resp.status),
            })?;
            Credential::BinarySecurityToken {
                value_type: mde2::VALUE_TYPE_USER_TOKEN.into(),
                encoding_type: Some(mde2::ENCODING_TYPE_BASE64.into()),
                token: STANDARD.encode(token.as_bytes()),
            }
        }
        (Credentials::Federated(_), other) => {
            return Err(EnrollError::Protocol {
                step: "discover",
                message: format!("server wants {} authentication, not Federated", other.as_str()),
            });
        }
    };

    let policy_url = dr.policy_service_url.clone();
    let resp = client
        .post(
            &policy_url,
            SOAP,
            mde2::write_get_policies_request(&message_id(), &policy_url, &credential),
        )
        .await?;
    let text = check_fault("policy", &resp)?;
    if !text.contains("GetPoliciesResponse") {
        return Err(EnrollError::Protocol {
            step: "policy",
            message: "not a GetPoliciesResponse".into(),
        });
    }

    let device_id = opts.device_id.clone().unwrap_or_else(random_device_id);
    let key = match key {
        Some(k) => k,
        None => DeviceKey::generate_rsa(opts.key_bits)?,
    };
    // Windows' CN: the first 30 characters of a GUID, '!', the DeviceID and a NUL.
    let guid = uuid::Uuid::new_v4().to_string().to_uppercase();
    let subject_cn = format!("{}!{device_id}\0", &guid[..30]);
    let csr = steward_pki::build_windows_csr(&key, &subject_cn, &device_id, opts.csr_algorithm)?;
    let context: Vec<(String, String)> = [
        ("UXInitiated", "true"),
        ("HWDevID", &format!("{device_id}{device_id}")),
        ("Locale", "en-US"),
        ("TargetedUserLoggedIn", "true"),
        ("OSEdition", "72"),
        ("DeviceName", &opts.device_name),
        ("MAC", "00-15-5D-01-02-03"),
        ("DeviceID", &device_id),
        ("EnrollmentType", &opts.enrollment_type),
        ("DeviceType", "CIMClient_Windows"),
        ("OSVersion", &opts.os_version),
        ("ApplicationVersion", &opts.os_version),
        ("NotInOobe", "false"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let enroll_url = dr.enrollment_service_url.clone();
    let rst = mde2::write_rst_request(
        &message_id(),
        &enroll_url,
        &credential,
        &STANDARD.encode(&csr),
        &context,
    );
    let resp = client.post(&enroll_url, SOAP, rst).await?;
    let text = check_fault("enroll", &resp)?;
    let doc_xml = mde2::parse_rstr(&text).map_err(|e| EnrollError::Protocol {
        step: "enroll",
        message: e.to_string(),
    })?;
    let doc = mde2::parse_provisioning_doc(&doc_xml).map_err(|e| EnrollError::Protocol {
        step: "provisioning doc",
        message: e.to_string(),
    })?;
    let missing = |what: &str| EnrollError::Protocol {
        step: "provisioning doc",
        message: format!("no {what}"),
    };
    let cert_der = doc
        .client_certificate_der()
        .ok_or_else(|| missing("client certificate"))?;
    let management_url = doc.management_url().ok_or_else(|| missing("w7 ADDR"))?.to_owned();
    check_provisioning_doc(&doc).map_err(EnrollError::Refused)?;
    let client_cert_selected = select_client_certificate(&doc).is_some();
    Ok(EnrolledDevice {
        client_cert_selected,
        device_id,
        key,
        cert_der,
        root_der: doc.root_certificate_der(),
        intermediate_der: doc.intermediate_certificate_der(),
        management_url,
        provisioning_doc: doc,
        provisioning_doc_xml: doc_xml,
    })
}

/// The rules by which a real Windows refuses a provisioning document, as far as they are
/// documented; each cites its source. The whole document fails if one does (MS-MDE2 §2.2.9.3:
/// "will cause a configuration failure"; Learn "enrollment-troubleshooting": the OMA-DM account
/// step failing rolls the enrollment back).
pub fn check_provisioning_doc(doc: &mde2::ParsedProvisioningDoc) -> Result<(), String> {
    // w7 APPLICATION CSP: APPID "w7" bootstraps the OMA DM account; PROVIDER-ID names it and must
    // equal the DMClient Provider node (Learn DMClient CSP: "ProviderID… must match the w7
    // APPLICATION PROVIDER-ID").
    if doc.get("APPLICATION/APPID") != Some("w7") {
        return Err("no w7 APPLICATION characteristic".into());
    }
    let provider = doc
        .get("APPLICATION/PROVIDER-ID")
        .filter(|p| !p.is_empty())
        .ok_or("w7 PROVIDER-ID missing")?;
    // w7 APPAUTH (Learn w7-application-csp; MS-MDE2 §2.2.9.5): "Both APPSRV and CLIENT
    // credentials must be provided in provisioning XML", and AAUTHSECRET is "Required". DMAcc CSP:
    // "When AAUTHLEVEL is CLIENT, AAUTHTYPE must be DIGEST".
    let blocks = doc.instances("APPLICATION/APPAUTH");
    for level in ["CLIENT", "APPSRV"] {
        let block = blocks
            .iter()
            .find(|b| b.contains(&("AAUTHLEVEL", level)))
            .ok_or_else(|| format!("no APPAUTH block with AAUTHLEVEL {level}"))?;
        let value = |name: &str| block.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        if value("AAUTHSECRET").is_none_or(str::is_empty) {
            return Err(format!("APPAUTH {level} has no AAUTHSECRET"));
        }
        let ty = value("AAUTHTYPE").unwrap_or_default();
        if level == "CLIENT" && ty != "DIGEST" {
            return Err(format!("APPAUTH CLIENT AAUTHTYPE is {ty:?}, not DIGEST"));
        }
    }
    // DMClient CSP Poll (MS-MDE2 §2.2.9.3): "The server MUST NOT set NumberOfFirstRetries to 0";
    // all six polling parameters, or all three NumberOf*Retries, at 0 "will cause a configuration
    // failure". A parm the document leaves out keeps the device's value (the capture set only
    // NumberOfFirstRetries), so only parms present count.
    let poll = format!("DMClient/Provider/{provider}/Poll/");
    let num = |name: &str| doc.get(&format!("{poll}{name}")).map(|v| v.trim().parse::<u32>());
    let mut values = Vec::new();
    for name in [
        "IntervalForFirstSetOfRetries",
        "NumberOfFirstRetries",
        "IntervalForSecondSetOfRetries",
        "NumberOfSecondRetries",
        "IntervalForRemainingScheduledRetries",
        "NumberOfRemainingScheduledRetries",
    ] {
        match num(name) {
            None => values.push(None),
            Some(Ok(v)) => values.push(Some(v)),
            Some(Err(_)) => return Err(format!("Poll/{name} is not an integer")),
        }
    }
    if values[1] == Some(0) {
        return Err("invalid poll schedule: NumberOfFirstRetries is 0".into());
    }
    if values.iter().all(|v| *v == Some(0)) {
        return Err("invalid poll schedule: all six polling parameters are 0".into());
    }
    if [values[1], values[3], values[5]].iter().all(|v| *v == Some(0)) {
        return Err("invalid poll schedule: all three NumberOf*Retries are 0".into());
    }
    Ok(())
}

/// The client certificate the DM client uses for its sessions, chosen as Windows documents it:
/// w7 SSLCLIENTCERTSEARCHCRITERIA is "Subject=<URI-escaped DN>&Stores=<URI-escaped store>"
/// (Learn w7-application-csp, DMAcc-csp), and "Subject specifies the certificate to search for…
/// with a particular Subject attribute (CN=Tester,O=Microsoft)… wildcard certificate search isn't
/// supported": the DN must equal the certificate's whole subject, attribute by attribute in
/// order, and `Stores` must name the store the certificate was installed in (`MY\User` for
/// `CertificateStore/My/User`, `MY\System` for `My/System`). No match: no certificate (the
/// session then goes without one). Without the parm the certificate the enrollment installed is
/// used, as the captured Windows 10 did (its document had no criteria).
pub fn select_client_certificate(doc: &mde2::ParsedProvisioningDoc) -> Option<Vec<u8>> {
    let cert = doc.client_certificate_der()?;
    let Some(criteria) = doc.get("APPLICATION/SSLCLIENTCERTSEARCHCRITERIA") else {
        return Some(cert);
    };
    let installed_in = doc
        .parms
        .iter()
        .find_map(|(p, _)| {
            let rest = p.strip_prefix("CertificateStore/My/")?;
            rest.ends_with("/EncodedCertificate").then(|| rest.split('/').next())?
        })?
        .to_owned();
    let mut subject = None;
    let mut stores = None;
    for pair in criteria.split('&') {
        let (name, value) = pair.split_once('=')?;
        let value = percent_decode(value)?;
        match name {
            "Subject" => subject = Some(value),
            "Stores" => stores = Some(value),
            _ => {}
        }
    }
    // Stores: "MY\User" or "MY\System" ("MY" is the personal store; case-insensitive names).
    if let Some(stores) = stores {
        let (store, location) = stores.split_once('\\')?;
        if !store.eq_ignore_ascii_case("MY") || !location.eq_ignore_ascii_case(&installed_in) {
            return None;
        }
    }
    let wanted = parse_dn(&subject?)?;
    let actual = steward_pki::subject_attributes(&cert).ok()?;
    (wanted == actual).then_some(cert)
}

/// `CN=a,OU=b` (Windows X.500 name string: `,` or `;` between RDNs, optional spaces around) as
/// `(key, value)` pairs; keys upper-cased. Quoted values are not needed by any criteria we issue
/// and are refused.
fn parse_dn(dn: &str) -> Option<Vec<(String, String)>> {
    dn.split([',', ';'])
        .map(|part| {
            let (k, v) = part.split_once('=')?;
            let v = v.trim();
            (!v.starts_with('"')).then(|| (k.trim().to_ascii_uppercase(), v.to_owned()))
        })
        .collect()
}

/// RFC 3986 percent-decoding (the w7 CSP's URI escaping).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_criteria_parts() {
        assert_eq!(percent_decode("CN%3DAB%2COU%3Dx").as_deref(), Some("CN=AB,OU=x"));
        assert_eq!(percent_decode("MY%5CUser").as_deref(), Some("MY\\User"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(
            parse_dn("CN=Tester, o=Microsoft"),
            Some(vec![("CN".into(), "Tester".into()), ("O".into(), "Microsoft".into())])
        );
        assert_eq!(parse_dn("CN=\"quoted\""), None);
    }

    #[test]
    fn wresult_extraction_and_form_encoding() {
        let html = r#"<form><input type="hidden" name="wresult" value="stw_fed_abc.def"></form>"#;
        assert_eq!(extract_wresult(html).as_deref(), Some("stw_fed_abc.def"));
        assert_eq!(
            form_encode(&[("a", "b c&d"), ("e", "ms-app://x")]),
            "a=b%20c%26d&e=ms-app%3A%2F%2Fx"
        );
    }
}

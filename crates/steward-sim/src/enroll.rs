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
    Ok(EnrolledDevice {
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

#[cfg(test)]
mod tests {
    use super::*;

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

//! WSTEP certificate renewal (Learn "certificate-renewal-windows-mdm"; MS-WSTEP §3.1.4.1 with
//! RequestType Renew). The BinarySecurityToken is a PKCS#7 SignedData holding the new PKCS#10, signed
//! with the current certificate's key; with ROBO the request is also TLS-authenticated by that
//! certificate, and when both are present they must name the same certificate. It must be the current
//! (or, if the last renewal answer was lost, the previous) identity of an active enrollment. The
//! replaced certificate keeps working until the device first uses the new one.

use axum::response::Response;
use base64::Engine;
use steward_core::service::identity::{CertificateSubject, IdentityError};
use steward_core::*;
use steward_windows_proto::mde2::{self, FaultSubcode, RequestBody, SoapRequest};

use crate::WindowsState;
use crate::enroll::{MAX_CSR_BASE64, issue_fault, soap_ok};
use crate::fault::SoapFault;

pub async fn renew_device(
    state: &WindowsState,
    req: SoapRequest,
    tls_cert: Option<&[u8]>,
) -> Result<Response, SoapFault> {
    let RequestBody::RequestSecurityToken(rst) = &req.body else {
        return Err(SoapFault::new(
            FaultSubcode::MessageFormat,
            "expected RequestSecurityToken",
        ));
    };
    let cert_fault = |m: String| SoapFault::new(FaultSubcode::CertificateRequest, m);
    let denied = |m: &str| SoapFault::new(FaultSubcode::Authentication, m.to_owned());
    let bst = &rst.binary_security_token;
    if bst.value_type != mde2::VALUE_TYPE_PKCS7 && bst.value_type != mde2::VALUE_TYPE_PKCS7_WSSE {
        return Err(cert_fault("a renewal BinarySecurityToken must be PKCS#7".into()));
    }
    let compact: String = bst.data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > 4 * MAX_CSR_BASE64 {
        return Err(cert_fault("the renewal request is too large".into()));
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| cert_fault("the renewal request is not valid base64".into()))?;
    let settings = &state.settings;
    let min_bits = settings.min_rsa_bits;
    let tls_thumb = tls_cert.map(Thumbprint::of_der);
    let (csr, signer_thumb) = match steward_pki::verify_renewal_request(&der, min_bits) {
        Ok(r) => (r.csr, Some(Thumbprint::of_der(&r.signer_cert_der))),
        // A bare PKCS#10 proves possession of the new key only; accept it when TLS proves the old one.
        Err(steward_pki::RenewalError::NotSignedData) if tls_thumb.is_some() => (
            steward_pki::verify_csr(&der, min_bits)
                .map_err(|e| cert_fault(format!("the certificate request was rejected: {e}")))?,
            None,
        ),
        Err(e) => return Err(cert_fault(format!("the renewal request was rejected: {e}"))),
    };
    if let (Some(t), Some(s)) = (&tls_thumb, &signer_thumb)
        && t != s
    {
        return Err(denied(
            "the renewal is signed by a different certificate than the TLS client certificate",
        ));
    }
    let thumb = tls_thumb
        .or(signer_thumb)
        .ok_or_else(|| denied("a renewal must be authenticated by the current certificate"))?;
    let enrollment = state
        .core
        .store
        .enrollment_by_certificate(&thumb)
        .await
        .map_err(|e| SoapFault::store(e, "finding the certificate's enrollment"))?
        .filter(|e| e.state == EnrollmentState::Active)
        .ok_or_else(|| denied("the certificate does not belong to an active enrollment"))?;

    // Which certificates stay accepted and which are revoked is core's renewal plan; a renewal that
    // does not commit leaves its certificate logged void.
    let subject = CertificateSubject {
        common_name: enrollment.device_id.as_str().to_owned(),
        // The same subject as at enrollment (exactly CN=<DeviceID>, interop review M-1): the
        // provisioned SSLCLIENTCERTSEARCHCRITERIA must keep finding the renewed certificate.
        organizational_unit: None,
    };
    let issued = state
        .identity
        .renew(&enrollment, &thumb, subject, csr.spki_der.clone())
        .await
        .map_err(|e| match e {
            IdentityError::NotCurrent => denied("the certificate is no longer current"),
            IdentityError::Store(e) => SoapFault::store(e, "recording the renewal"),
            other => issue_fault(other),
        })?;
    tracing::info!(device.id = %enrollment.device_id, cert.serial = %issued.serial, "certificate renewed");
    let doc = mde2::write_renewal_provisioning_doc(&mde2::RenewalDoc {
        provider_id: &settings.provider_id,
        client_cert_der: &issued.der,
        client_cert_thumbprint: issued.thumbprint.as_str(),
        client_store: match enrollment.enrollment_type {
            EnrollmentType::Full => mde2::ClientStore::User,
            EnrollmentType::Device => mde2::ClientStore::System,
        },
        renew_period_days: settings.renew_period_days,
        renew_retry_interval_days: settings.renew_retry_interval_days,
        renew_server_url: None,
    });
    Ok(soap_ok(mde2::write_rstr(
        req.header.message_id.as_deref(),
        &doc,
        state.core.now(),
    )))
}

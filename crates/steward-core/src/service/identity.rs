//! Device identity certificates, for every platform's enrollment and renewal: issuing from the
//! device-identity CA (only the public key comes from the device), committing the enrollment or the
//! renewal, and — when the commit fails — logging the signed-but-never-delivered certificate as
//! `void`, so every serial is accounted for.

use std::sync::Arc;

use steward_pki::{CertifiedKey, DeviceCertParams};
use time::{Duration, OffsetDateTime};

use super::Clock;
use crate::identity::{IssuedCertificate, RenewalPlan};
use crate::model::{
    CertSerial, DeviceId, Enrollment, EnrollmentCommit, EnrollmentId, IssuanceEvent, IssuanceLogEntry, Thumbprint,
};
use crate::store::{EnrollmentStore, StoreError};

/// How device certificates are issued.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Organisation written into the certificates' subject.
    pub organization: String,
    pub validity: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The CA could not sign (a bad key in the request, for one).
    #[error("cannot issue the certificate: {0}")]
    Issue(String),
    /// The presented certificate is neither the enrollment's current nor its previous one (or the
    /// enrollment is no longer active).
    #[error("the certificate is no longer current")]
    NotCurrent,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Who a certificate is for.
#[derive(Debug, Clone)]
pub struct CertificateSubject {
    pub common_name: String,
    pub organizational_unit: Option<String>,
}

#[derive(Clone)]
pub struct Identity {
    store: Arc<dyn EnrollmentStore>,
    ca: Arc<CertifiedKey>,
    settings: IdentitySettings,
    clock: Arc<dyn Clock>,
}

/// Back-dating of a new certificate's NotBefore: five minutes absorbs clock skew; no more
/// (back-dating by the renewal period made Fleet's certificates look older than they were,
/// fleetdm/fleet#52601).
const BACKDATE: Duration = Duration::minutes(5);

impl Identity {
    pub fn new(
        store: Arc<dyn EnrollmentStore>,
        ca: Arc<CertifiedKey>,
        settings: IdentitySettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            ca,
            settings,
            clock,
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Signs a device identity certificate for `spki_der` (off the async workers: RSA signing costs
    /// ~1 ms).
    pub async fn issue(
        &self,
        subject: CertificateSubject,
        spki_der: Vec<u8>,
    ) -> Result<IssuedCertificate, IdentityError> {
        let now = self.clock.now();
        let serial = steward_pki::random_bytes::<16>().map_err(|e| IdentityError::Internal(e.to_string()))?;
        let params = DeviceCertParams {
            serial,
            common_name: subject.common_name.clone(),
            organizational_unit: subject.organizational_unit.clone(),
            not_before: now - BACKDATE,
            not_after: now + self.settings.validity,
        };
        let ca = self.ca.clone();
        let issued =
            tokio::task::spawn_blocking(move || steward_pki::issue_device_certificate(&ca, &spki_der, &params))
                .await
                .map_err(|e| IdentityError::Internal(e.to_string()))?
                .map_err(|e| IdentityError::Issue(e.to_string()))?;
        let subject = match &subject.organizational_unit {
            Some(ou) => format!("CN={}, OU={ou}, O={}", subject.common_name, self.settings.organization),
            None => format!("CN={}, O={}", subject.common_name, self.settings.organization),
        };
        Ok(IssuedCertificate {
            serial: CertSerial::new(issued.serial_hex),
            thumbprint: Thumbprint::of_der(&issued.der),
            der: issued.der,
            subject,
            not_before: issued.not_before,
            not_after: issued.not_after,
        })
    }

    /// Commits an enrollment whose certificate was issued; if the commit fails, the certificate is
    /// logged void and the error returned.
    pub async fn commit_enrollment(&self, c: &EnrollmentCommit, issued: &IssuedCertificate) -> Result<(), StoreError> {
        if let Err(e) = self.store.commit_enrollment(c).await {
            self.record_void(
                issued,
                &c.enrollment.device_id,
                None,
                format!("enrollment not committed: {e}"),
            )
            .await;
            return Err(e);
        }
        Ok(())
    }

    /// Renews the certificate of an active enrollment authenticated by `presented` (its current or
    /// previous certificate): issues the new one and commits the renewal under the rules of
    /// [`RenewalPlan`].
    pub async fn renew(
        &self,
        enrollment: &Enrollment,
        presented: &Thumbprint,
        subject: CertificateSubject,
        spki_der: Vec<u8>,
    ) -> Result<IssuedCertificate, IdentityError> {
        let plan = RenewalPlan::for_enrollment(enrollment, presented).ok_or(IdentityError::NotCurrent)?;
        let issued = self.issue(subject, spki_der).await?;
        let commit = plan.commit(
            enrollment,
            issued.cert_ref(),
            issued.subject.clone(),
            issued.not_before,
            issued.not_after,
            self.clock.now(),
        );
        if let Err(e) = self.store.commit_renewal(&commit).await {
            self.record_void(
                &issued,
                &enrollment.device_id,
                Some(enrollment.id),
                format!("renewal not committed: {e}"),
            )
            .await;
            return Err(match e {
                StoreError::NotFound => IdentityError::NotCurrent,
                other => IdentityError::Store(other),
            });
        }
        Ok(issued)
    }

    /// Accounts for a signed certificate whose delivering change did not commit: `void` in the
    /// issuance log, so it is never mistaken for a live identity.
    pub async fn record_void(
        &self,
        issued: &IssuedCertificate,
        device_id: &DeviceId,
        enrollment_id: Option<EnrollmentId>,
        reason: String,
    ) {
        let void = IssuanceLogEntry {
            serial: issued.serial.clone(),
            event: IssuanceEvent::Void,
            thumbprint: Some(issued.thumbprint.clone()),
            subject: Some(issued.subject.clone()),
            device_id: Some(device_id.clone()),
            enrollment_id,
            not_before: Some(issued.not_before),
            not_after: Some(issued.not_after),
            reason: Some(reason),
            at: self.clock.now(),
        };
        if let Err(e) = self.store.append_issuance_log(&void).await {
            tracing::error!(serial = %issued.serial, error = %e, "could not record void certificate");
        }
    }
}

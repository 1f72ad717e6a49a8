//! Device identity certificates, for every platform's enrollment and renewal: deciding whether a
//! new enrollment may take a DeviceID that is already enrolled (and recording a refused takeover),
//! issuing from the device-identity CA (only the public key comes from the device), committing the
//! enrollment or the renewal, and — when the commit fails — logging the signed-but-never-delivered
//! certificate as `void`, so every serial is accounted for.

use std::net::IpAddr;
use std::sync::Arc;

use steward_pki::{CertifiedKey, DeviceCertParams};
use time::{Duration, OffsetDateTime};

use super::Clock;
use super::audit::{AuditEntry, AuditTrail};
use crate::event::NewDeviceEvent;
use crate::identity::{EnrollmentClaim, IssuedCertificate, Reenrollment, RenewalPlan, ReplacedEnrollment};
use crate::model::{
    AuthMethod, CertSerial, DeviceId, Enrollment, EnrollmentCommit, EnrollmentId, EnrollmentTokenId, IssuanceEvent,
    IssuanceLogEntry, Thumbprint,
};
use crate::secret::TokenHash;
use crate::store::{EnrollmentStore, EventLog, StoreError};

/// The audit action of a refused takeover.
pub const TAKEOVER_REFUSED: &str = "enrollment.takeover_refused";

/// How device certificates are issued.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
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
    /// The DeviceID is enrolled, and the request shows no link to that enrollment (see
    /// [`Reenrollment`]).
    #[error(
        "this device is already enrolled with another credential: re-enroll it as the user or with the \
         enrollment token that enrolled it, or ask an administrator to unenroll it first"
    )]
    TakeoverRefused,
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

/// A request to enroll a DeviceID, as [`Identity::replaceable`] judges it.
#[derive(Debug, Clone, Copy)]
pub struct EnrollmentAttempt<'a> {
    pub device_id: &'a DeviceId,
    pub auth_method: AuthMethod,
    /// The user: proved by a password or a federated sign-in, or — with an enrollment token —
    /// only the name typed with it.
    pub user: Option<&'a str>,
    pub token: Option<EnrollmentTokenId>,
    /// The verified client certificate on the request's connection, if any.
    pub certificate: Option<&'a Thumbprint>,
    pub source_ip: Option<IpAddr>,
}

impl EnrollmentAttempt<'_> {
    fn claim(&self) -> EnrollmentClaim<'_> {
        EnrollmentClaim {
            user: self.user.filter(|_| self.auth_method != AuthMethod::EnrollmentToken),
            token: self.token,
            certificate: self.certificate,
        }
    }

    /// Who the audit log names: the credential that was presented (and its id, for a token).
    fn actor(&self) -> (String, Option<String>) {
        let user = self.user.unwrap_or("unknown user");
        match (self.auth_method, self.token) {
            (AuthMethod::EnrollmentToken, Some(t)) => (format!("enrollment token {t}"), Some(t.to_string())),
            (AuthMethod::EnrollmentToken, None) => ("enrollment token".into(), None),
            (AuthMethod::UserPassword, _) => (format!("{user} (enrollment password)"), None),
            (AuthMethod::Federated, _) => (format!("{user} (federated sign-in)"), None),
        }
    }
}

#[derive(Clone)]
pub struct Identity {
    store: Arc<dyn EnrollmentStore>,
    events: Arc<dyn EventLog>,
    audit: AuditTrail,
    ca: Arc<CertifiedKey>,
    settings: IdentitySettings,
    clock: Arc<dyn Clock>,
}

/// Back-dating of a new certificate's NotBefore: one hour, so a device whose clock runs behind
/// (a VM restored from a snapshot, a machine in OOBE before its first time sync) does not hold a
/// not-yet-valid certificate that Schannel skips (interop review C-3). No more than that:
/// back-dating by the renewal period made Fleet's certificates look older than they were
/// (fleetdm/fleet#52601).
pub const BACKDATE: Duration = Duration::hours(1);

impl Identity {
    pub fn new(
        store: Arc<dyn EnrollmentStore>,
        events: Arc<dyn EventLog>,
        audit: AuditTrail,
        ca: Arc<CertifiedKey>,
        settings: IdentitySettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            events,
            audit,
            ca,
            settings,
            clock,
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The device's active enrollment that a new enrollment of `attempt.device_id` replaces (None
    /// for a new device), if the attempt may replace it ([`Reenrollment::decide`]). Read before
    /// anything is signed; the store refuses the commit if the active enrollment changed meanwhile.
    /// A refused takeover is audited ([`TAKEOVER_REFUSED`], as the attempt's credential, a failure)
    /// and recorded as a `reenrollment_refused` event on the targeted enrollment, for webhooks.
    pub async fn replaceable(
        &self,
        attempt: &EnrollmentAttempt<'_>,
    ) -> Result<Option<ReplacedEnrollment>, IdentityError> {
        let active = self.store.active_enrollment_by_device_id(attempt.device_id).await?;
        let (link, target) = match (Reenrollment::decide(active.as_ref(), &attempt.claim()), active) {
            (Reenrollment::NewDevice, _) | (_, None) => return Ok(None),
            (Reenrollment::Replaces(link), Some(e)) => (link, e),
            (Reenrollment::Refused, Some(e)) => {
                self.refused(attempt, &e).await;
                return Err(IdentityError::TakeoverRefused);
            }
        };
        tracing::info!(device.id = %attempt.device_id, enrollment.id = %target.id, ?link, "re-enrollment");
        Ok(ReplacedEnrollment::of(&target))
    }

    async fn refused(&self, attempt: &EnrollmentAttempt<'_>, target: &Enrollment) {
        tracing::warn!(
            device.id = %attempt.device_id,
            enrollment.id = %target.id,
            auth = attempt.auth_method.as_str(),
            source = ?attempt.source_ip,
            "re-enrollment refused: no link to the device's active enrollment"
        );
        let (actor, actor_id) = attempt.actor();
        let entry = AuditEntry {
            action: TAKEOVER_REFUSED.to_owned(),
            target: Some(attempt.device_id.as_str().to_owned()),
            details: Some(format!("active enrollment {}", target.id)),
            source_ip: attempt.source_ip.map(|ip| ip.to_string()),
            status: None,
        };
        self.audit.record_as(&actor, actor_id, None, false, entry).await;
        let event =
            NewDeviceEvent::reenrollment_refused(attempt.auth_method, attempt.user, attempt.token, attempt.source_ip);
        if let Err(e) = self
            .events
            .append_device_event(target.id, &event, self.clock.now())
            .await
        {
            tracing::error!(error = %e, enrollment.id = %target.id, "cannot record the refused re-enrollment event");
        }
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
        // As encoded by steward_pki::issue_device_certificate: CN, then OU when asked for; no O.
        let subject = match &subject.organizational_unit {
            Some(ou) => format!("CN={}, OU={ou}", subject.common_name),
            None => format!("CN={}", subject.common_name),
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

    /// Whether a single-use token nonce (a federated token's `jti`) was already consumed by a
    /// committed enrollment. Asked before [`Identity::issue`], so a sequential replay is refused
    /// without a signature or a void log row; two concurrent first uses both pass and race to the
    /// commit, which refuses the loser ([`StoreError::NonceReused`]; its certificate is logged void).
    pub async fn nonce_spent(&self, nonce: &TokenHash) -> Result<bool, StoreError> {
        self.store.nonce_spent(nonce).await
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

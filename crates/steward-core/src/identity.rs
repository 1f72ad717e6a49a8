//! Device identity certificates over an enrollment's life: what an enrollment commits, and the
//! renewal rules (which certificate stays accepted, which is revoked) decided here rather than in a
//! backend.

use time::OffsetDateTime;

use crate::checkin::reasons;
use crate::event::NewDeviceEvent;
use crate::model::{CertRef, CertSerial, Enrollment, EnrollmentId, EnrollmentState, Thumbprint};

/// The device's active enrollment that a new enrollment replaces (read before the commit; the store
/// refuses the commit if the device's active enrollment changed meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedEnrollment {
    pub id: EnrollmentId,
    pub cert: CertRef,
}

impl ReplacedEnrollment {
    pub fn of(e: &Enrollment) -> Option<Self> {
        (e.state == EnrollmentState::Active).then(|| Self {
            id: e.id,
            cert: e.certificate(),
        })
    }
}

/// A renewed identity certificate (Windows: MS-WSTEP Renew), committed by
/// [`crate::store::EnrollmentStore::commit_renewal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalCommit {
    pub enrollment_id: EnrollmentId,
    /// The enrollment's current certificate when the plan was made; the store refuses the commit if
    /// it changed meanwhile (a concurrent renewal).
    pub expected_current: Thumbprint,
    /// Keep the current certificate accepted as the previous one (a normal renewal: the device uses
    /// it until the new one is installed), instead of leaving the previous one as it is.
    pub current_becomes_previous: bool,
    /// Certificates to revoke (logged) with the reason.
    pub revoke: Vec<(CertRef, &'static str)>,
    pub new_cert: CertRef,
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub event: NewDeviceEvent,
    pub at: OffsetDateTime,
}

/// What a renewal authenticated with `presented` does to the enrollment's certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewalPlan {
    /// Renewal with the current certificate: it stays accepted as the previous one until the device
    /// uses the new one; a previous one from an earlier renewal is revoked now.
    Normal { revoke_previous: Option<CertRef> },
    /// Renewal again with the previous certificate: the device never got (or never used) the one
    /// issued last time, which is revoked; the previous one stays accepted.
    Retry { revoke_unused: CertRef },
}

impl RenewalPlan {
    /// The plan for an active enrollment, or None if `presented` is neither its current nor its
    /// previous certificate (the renewal is refused).
    pub fn for_enrollment(e: &Enrollment, presented: &Thumbprint) -> Option<Self> {
        if e.state != EnrollmentState::Active {
            return None;
        }
        if *presented == e.cert_thumbprint {
            return Some(Self::Normal {
                revoke_previous: e.previous_cert.clone(),
            });
        }
        match &e.previous_cert {
            Some(p) if p.thumbprint == *presented => Some(Self::Retry {
                revoke_unused: e.certificate(),
            }),
            _ => None,
        }
    }

    /// The commit that carries out this plan with the newly issued certificate.
    pub fn commit(
        self,
        e: &Enrollment,
        new_cert: CertRef,
        subject: String,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        at: OffsetDateTime,
    ) -> RenewalCommit {
        let (current_becomes_previous, revoke) = match self {
            Self::Normal { revoke_previous } => (
                true,
                revoke_previous
                    .map(|c| (c, reasons::SUPERSEDED_BY_SECOND_RENEWAL))
                    .into_iter()
                    .collect(),
            ),
            Self::Retry { revoke_unused } => (false, vec![(revoke_unused, reasons::RENEWAL_ANSWER_NOT_USED)]),
        };
        RenewalCommit {
            enrollment_id: e.id,
            expected_current: e.cert_thumbprint.clone(),
            current_becomes_previous,
            revoke,
            event: NewDeviceEvent::certificate_renewed(&new_cert.serial, not_after),
            new_cert,
            subject,
            not_before,
            not_after,
            at,
        }
    }
}

/// A certificate signed for an enrollment, before the enrollment commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub der: Vec<u8>,
    pub serial: CertSerial,
    pub thumbprint: Thumbprint,
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl IssuedCertificate {
    pub fn cert_ref(&self) -> CertRef {
        CertRef {
            serial: self.serial.clone(),
            thumbprint: self.thumbprint.clone(),
        }
    }
}

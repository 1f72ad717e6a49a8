//! Device identity certificates over an enrollment's life: what an enrollment commits, and the
//! renewal rules (which certificate stays accepted, which is revoked) decided here rather than in a
//! backend.

use time::OffsetDateTime;

use crate::checkin::reasons;
use crate::event::NewDeviceEvent;
use crate::model::{
    AuthMethod, CertRef, CertSerial, Enrollment, EnrollmentId, EnrollmentState, EnrollmentTokenId, Thumbprint,
};

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

/// How a request to enroll a DeviceID authenticated, as far as its link to the device's active
/// enrollment goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnrollmentClaim<'a> {
    /// The user the credential proved (a user's password, a federated sign-in). None for an
    /// enrollment token: the user name typed with a token is only a claim.
    pub user: Option<&'a str>,
    /// The enrollment token the request used.
    pub token: Option<EnrollmentTokenId>,
    /// The client certificate presented on the request's connection (the TLS layer verified it
    /// against our device-identity CA), if any.
    pub certificate: Option<&'a Thumbprint>,
}

/// What links a re-enrollment to the device's active enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReenrollmentLink {
    /// The same user, proved by password or federated sign-in, enrolled it (a reinstall).
    SameUser,
    /// The same enrollment token enrolled it.
    SameToken,
    /// The request came with the enrollment's current (or still accepted previous) certificate:
    /// the device itself.
    CurrentCertificate,
}

/// Whether a new enrollment may take a DeviceID. A DeviceID is a claim the device makes, not an
/// identity: re-enrolling an *active* one must prove a link to that enrollment, or anyone holding
/// any valid credential could take the device over (its certificate revoked, its commands and
/// policies redirected). Without a link an administrator ends the enrollment first
/// (`Devices::unenroll`), which releases the DeviceID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reenrollment {
    /// The DeviceID has no active enrollment: a new device (or one an admin released).
    NewDevice,
    /// Re-enrollment of the device's active enrollment, which it replaces.
    Replaces(ReenrollmentLink),
    /// No link to the active enrollment: refused.
    Refused,
}

impl Reenrollment {
    /// The rule, for the device's active enrollment (if any) and the new request's credential.
    /// A user matches only if the active enrollment's user was proved too (a password or a
    /// federated sign-in, compared ignoring case); a token only if it is the one the enrollment used.
    pub fn decide(active: Option<&Enrollment>, claim: &EnrollmentClaim<'_>) -> Self {
        let Some(e) = active.filter(|e| e.state == EnrollmentState::Active) else {
            return Self::NewDevice;
        };
        if let Some(cert) = claim.certificate
            && (*cert == e.cert_thumbprint || e.previous_cert.as_ref().is_some_and(|p| p.thumbprint == *cert))
        {
            return Self::Replaces(ReenrollmentLink::CurrentCertificate);
        }
        let proved_user = matches!(e.auth_method, AuthMethod::UserPassword | AuthMethod::Federated);
        if proved_user
            && let (Some(theirs), Some(ours)) = (e.user_email.as_deref(), claim.user)
            && theirs.eq_ignore_ascii_case(ours.trim())
        {
            return Self::Replaces(ReenrollmentLink::SameUser);
        }
        if claim.token.is_some() && claim.token == e.enrollment_token_id {
            return Self::Replaces(ReenrollmentLink::SameToken);
        }
        Self::Refused
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, EnrollmentType, Platform};

    fn active(auth_method: AuthMethod, user: Option<&str>, token: Option<EnrollmentTokenId>) -> Enrollment {
        let now = OffsetDateTime::now_utc();
        Enrollment {
            id: EnrollmentId::new(),
            platform: Platform::Windows,
            device_id: DeviceId::parse("00112233445566778899AABBCCDDEEFF").unwrap(),
            hardware_id: None,
            device_name: None,
            os_version: None,
            os_edition: None,
            enrollment_type: EnrollmentType::Full,
            user_email: user.map(str::to_owned),
            auth_method,
            enrollment_token_id: token,
            group_id: None,
            cert_serial: CertSerial::new("01"),
            cert_thumbprint: Thumbprint::of_der(b"current"),
            cert_not_after: now,
            previous_cert: Some(CertRef {
                serial: CertSerial::new("00"),
                thumbprint: Thumbprint::of_der(b"previous"),
            }),
            state: EnrollmentState::Active,
            enrolled_at: now,
            updated_at: now,
            last_seen_at: None,
        }
    }

    fn claim<'a>(
        user: Option<&'a str>,
        token: Option<EnrollmentTokenId>,
        certificate: Option<&'a Thumbprint>,
    ) -> EnrollmentClaim<'a> {
        EnrollmentClaim {
            user,
            token,
            certificate,
        }
    }

    #[test]
    fn reenrolling_an_active_device_id_needs_a_link() {
        use Reenrollment::*;
        use ReenrollmentLink::*;
        let token = EnrollmentTokenId::new();
        let other_token = EnrollmentTokenId::new();
        let by_token = active(AuthMethod::EnrollmentToken, Some("typed@example.com"), Some(token));
        let by_user = active(AuthMethod::UserPassword, Some("ada@example.com"), None);
        let by_federated = active(AuthMethod::Federated, Some("ada@example.com"), None);

        // No active enrollment: a new device, whatever the credential.
        assert_eq!(
            Reenrollment::decide(None, &claim(None, Some(other_token), None)),
            NewDevice
        );
        let mut ended = by_token.clone();
        ended.state = EnrollmentState::Unenrolled;
        assert_eq!(
            Reenrollment::decide(Some(&ended), &claim(None, Some(other_token), None)),
            NewDevice
        );

        // The same token, the same proved user (any case), the current or previous certificate.
        assert_eq!(
            Reenrollment::decide(Some(&by_token), &claim(None, Some(token), None)),
            Replaces(SameToken)
        );
        for e in [&by_user, &by_federated] {
            assert_eq!(
                Reenrollment::decide(Some(e), &claim(Some(" Ada@Example.com"), None, None)),
                Replaces(SameUser)
            );
        }
        for cert in [Thumbprint::of_der(b"current"), Thumbprint::of_der(b"previous")] {
            assert_eq!(
                Reenrollment::decide(Some(&by_token), &claim(None, Some(other_token), Some(&cert))),
                Replaces(CurrentCertificate)
            );
        }

        // Anything else is refused: another token, another user, a user against a token's typed
        // name (never proved), a token against a user's enrollment, a foreign certificate.
        let foreign = Thumbprint::of_der(b"someone else");
        for (e, c) in [
            (&by_token, claim(None, Some(other_token), None)),
            (&by_token, claim(Some("typed@example.com"), None, None)),
            (&by_user, claim(Some("eve@example.com"), None, None)),
            (&by_user, claim(None, Some(token), None)),
            (&by_federated, claim(None, Some(other_token), Some(&foreign))),
            (&by_token, claim(None, None, None)),
        ] {
            assert_eq!(Reenrollment::decide(Some(e), &c), Refused, "{c:?}");
        }
    }
}

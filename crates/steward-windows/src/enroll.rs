//! MS-MDE2 enrollment handlers: Discovery (§3.1), MS-XCEP GetPolicies (§3.3 / MS-XCEP §3.1.4.1) and
//! MS-WSTEP RequestSecurityToken (§3.4 / MS-WSTEP §3.1.4.1).
//!
//! Every request is authenticated except the discovery probe and Discover itself. An enrollment
//! either commits completely (token use consumed, device recorded, certificate logged) or answers a
//! fault and leaves nothing behind but a `void` line in the issuance log for a certificate that was
//! signed but never delivered.

use std::net::IpAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, StatusCode};
use steward_core::service::PasswordRefused;
use steward_core::service::identity::{CertificateSubject, EnrollmentAttempt, IdentityError};
use steward_core::*;
use steward_http::{BodyError, ConnInfo, read_body};
use steward_windows_proto::mde2::{self, Credential, FaultSubcode, RequestBody, SoapRequest};
use time::OffsetDateTime;

use crate::fault::{SOAP_CONTENT_TYPE, SoapFault};
use crate::{AuthPolicy, WindowsState, federated};

/// Largest base64 CSR we accept (an RSA-4096 CSR is ~2 KB of base64).
pub(crate) const MAX_CSR_BASE64: usize = 16 * 1024;

pub(crate) fn soap_ok(body: String) -> Response {
    // axum sets Content-Length for a complete body; Windows' client rejects chunked responses.
    ([(http::header::CONTENT_TYPE, SOAP_CONTENT_TYPE)], body).into_response()
}

/// GET on the discovery URL: Windows probes reachability before POSTing Discover (MS-MDE2 §3.1.4.1).
pub async fn discovery_probe() -> StatusCode {
    StatusCode::OK
}

/// Reads and parses a SOAP request, checking that the body operation is `expected` and that
/// `a:Action` names that operation. Large bodies are parsed off the async workers
/// ([`crate::parse`]): this runs before anyone is authenticated.
async fn read_request(
    state: &WindowsState,
    headers: &HeaderMap,
    body: Body,
    expected: &'static str,
) -> Result<SoapRequest, SoapFault> {
    let bytes = read_body(headers, body, state.settings.enrollment_body_bytes)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(_) => {
                SoapFault::new(FaultSubcode::MessageFormat, e.to_string()).with_status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            BodyError::Read(_) => SoapFault::new(FaultSubcode::MessageFormat, e.to_string()),
        })?;
    let req = crate::parse::off_workers(&state.parsers.enrollment, bytes.len(), move || parse_soap(&bytes))
        .await
        .map_err(|e| match e {
            crate::parse::ParseRefused::Busy => SoapFault::retryable(e.to_string()),
            other => SoapFault::internal(other.to_string()),
        })??;
    let fault = |m: String| SoapFault::new(FaultSubcode::MessageFormat, m).relates_to(req.header.message_id.as_deref());
    if req.body.expected_action() != expected {
        return Err(fault(format!("this endpoint does not accept {}", body_name(&req.body))));
    }
    if req.header.action != expected {
        return Err(fault(format!(
            "SOAP action {:?} does not match the request body",
            req.header.action
        )));
    }
    Ok(req)
}

/// One SOAP request from its bytes. The MessageID for the fault's RelatesTo is looked for only when
/// the request does not parse (looking costs a second parse).
fn parse_soap(bytes: &[u8]) -> Result<SoapRequest, SoapFault> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| SoapFault::new(FaultSubcode::MessageFormat, "request body is not UTF-8"))?;
    mde2::parse_request(text).map_err(|e| {
        SoapFault::new(FaultSubcode::MessageFormat, e.to_string()).relates_to(mde2::message_id_of(text).as_deref())
    })
}

fn body_name(b: &RequestBody) -> &'static str {
    match b {
        RequestBody::Discover(_) => "Discover",
        RequestBody::GetPolicies(_) => "GetPolicies",
        RequestBody::RequestSecurityToken(_) => "RequestSecurityToken",
    }
}

/// POST Discover (MS-MDE2 §3.1.4.1.1): tells the device how to authenticate and where the policy and
/// enrollment services are. Any RequestVersion ≥ 4.0 is accepted (Windows 11 25H2 sends 9.0; a
/// strict check broke Fleet, fleetdm/fleet#51419).
pub async fn discovery(
    State(state): State<WindowsState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, SoapFault> {
    // Anonymous by design (MS-MDE2 §3.1), so bounded per peer address before the body is read:
    // a retryable fault, which Windows' enrollment retries, for that address only.
    let peer = steward_http::peer_ip(conn.as_ref().map(|Extension(c)| c));
    if !state.discovery_rate.allow(peer) {
        tracing::warn!(peer = ?peer, "discovery refused as retryable: too many requests from this address");
        return Err(SoapFault::retryable(
            "too many discovery requests from this address; try again shortly",
        ));
    }
    let req = read_request(&state, &headers, body, mde2::ACTION_DISCOVER).await?;
    let relates = req.header.message_id.as_deref();
    let RequestBody::Discover(d) = &req.body else {
        return Err(SoapFault::new(FaultSubcode::MessageFormat, "expected Discover").relates_to(relates));
    };
    let version = d.request_version.as_deref().unwrap_or("4.0");
    match mde2::parse_version(version) {
        Some(v) if v >= (4, 0) => {}
        _ => {
            return Err(SoapFault::new(
                FaultSubcode::MessageFormat,
                format!("RequestVersion {version:?} is not supported; 4.0 or later is required"),
            )
            .relates_to(relates));
        }
    }
    let base = state.base_url();
    let federated = state.settings.auth_policy == AuthPolicy::Federated;
    let resp = mde2::DiscoverResponse {
        auth_policy: if federated {
            mde2::AuthPolicy::Federated
        } else {
            mde2::AuthPolicy::OnPremise
        },
        // 4.0 is the version every Windows 10/11 client accepts, and all this server needs.
        enrollment_version: "4.0".into(),
        policy_service_url: format!("{base}{}", crate::POLICY_URL_PATH),
        // On the device host: enrollment requests a client certificate there (WSTEP renewal
        // presents the device's), discovery and policy stay on the public host (E-3).
        enrollment_service_url: format!("{}{}", state.device_base_url(), crate::ENROLLMENT_URL_PATH),
        authentication_service_url: federated.then(|| format!("{base}{}", crate::AUTH_URL_PATH)),
    };
    Ok(soap_ok(mde2::write_discover_response(relates, &resp)))
}

/// Who an enrollment request authenticated as.
enum Principal {
    Token { token: EnrollmentToken, username: String },
    User(User),
    Federated(federated::VerifiedToken),
}

impl Principal {
    fn method(&self) -> AuthMethod {
        match self {
            Principal::Token { .. } => AuthMethod::EnrollmentToken,
            Principal::User(_) => AuthMethod::UserPassword,
            Principal::Federated(_) => AuthMethod::Federated,
        }
    }
    fn email(&self) -> Option<String> {
        match self {
            Principal::Token { username, .. } => Some(username.clone()).filter(|u| !u.is_empty()),
            Principal::User(u) => Some(u.email.clone()),
            Principal::Federated(t) => Some(t.email.clone()),
        }
    }
}

/// Checks the WS-Security credential. Nothing is consumed here: a token use is spent only when the
/// enrollment commits, so GetPolicies followed by a failed RST costs the user nothing.
async fn authenticate(
    state: &WindowsState,
    cred: Option<&Credential>,
    peer: Option<IpAddr>,
    now: OffsetDateTime,
) -> Result<Principal, SoapFault> {
    let denied = |m: &str| SoapFault::new(FaultSubcode::Authentication, m.to_owned());
    match cred {
        None => Err(denied("this request must carry credentials")),
        Some(Credential::UsernameToken { username, password }) => {
            if TokenKind::Enrollment.matches(password) {
                let token = state
                    .core
                    .store
                    .enrollment_token_by_hash(&TokenHash::of(password))
                    .await
                    .map_err(|e| SoapFault::store(e, "looking up the enrollment token"))?
                    .ok_or_else(|| denied("unknown enrollment token"))?;
                token.usable_at(now).map_err(|e| denied(&e.to_string()))?;
                return Ok(Principal::Token {
                    token,
                    username: username.trim().to_owned(),
                });
            }
            // The one password check: throttled per user and address, Argon2 off the async workers,
            // unknown users checked against a dummy hash.
            match state.core.passwords.check_user(username, password, peer).await {
                Ok(u) => Ok(Principal::User(u)),
                Err(PasswordRefused::Wrong) => Err(denied("user name or password is incorrect")),
                Err(PasswordRefused::Disabled) => Err(SoapFault::new(
                    FaultSubcode::Authorization,
                    "this user may not enroll devices",
                )),
                Err(e @ PasswordRefused::Throttled { .. }) => Err(denied(&e.to_string())),
                Err(e @ PasswordRefused::Busy) => Err(SoapFault::retryable(e.to_string())),
                Err(PasswordRefused::Store(e)) => Err(SoapFault::store(e, "checking the password")),
            }
        }
        Some(Credential::BinarySecurityToken { value_type, token, .. }) => {
            if value_type != mde2::VALUE_TYPE_USER_TOKEN {
                return Err(denied("unsupported security token type"));
            }
            let lifetime = time::Duration::minutes(i64::from(state.settings.federated_token_minutes));
            let verified = federated::verify_token(&state.pki.federation_key, token, now, lifetime)
                .map_err(|refused| denied(&refused.to_string()))?;
            Ok(Principal::Federated(verified))
        }
    }
}

/// POST GetPolicies (MS-XCEP §3.1.4.1): the certificate template the device's CSR must follow.
pub async fn policy(
    State(state): State<WindowsState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, SoapFault> {
    let req = read_request(&state, &headers, body, mde2::ACTION_GET_POLICIES).await?;
    let relates = req.header.message_id.as_deref();
    let peer = steward_http::peer_ip(conn.as_ref().map(|Extension(c)| c));
    authenticate(&state, req.header.credential.as_ref(), peer, state.core.now())
        .await
        .map_err(|f| f.relates_to(relates))?;
    let s = &state.settings;
    let params = mde2::PolicyParams {
        policy_id: format!("{}-device-identity", s.provider_id),
        friendly_name: format!("{} device identity", s.server_name),
        min_key_length: s.min_rsa_bits as u32,
        validity_period_seconds: u64::from(s.device_cert_validity_days) * 86_400,
        renewal_period_seconds: u64::from(s.renew_period_days) * 86_400,
    };
    Ok(soap_ok(mde2::write_get_policies_response(relates, &params)))
}

/// POST RequestSecurityToken (MS-WSTEP §3.1.4.1, MS-MDE2 §3.4): verify the CSR, issue the device's
/// identity certificate and answer with the provisioning document.
pub async fn enrollment(
    State(state): State<WindowsState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, SoapFault> {
    let req = read_request(&state, &headers, body, mde2::ACTION_RST).await?;
    let relates = req.header.message_id.clone();
    let renewal = matches!(&req.body, RequestBody::RequestSecurityToken(r) if r.is_renewal());
    let conn = conn.as_ref().map(|Extension(c)| c);
    // The device's identity certificate, when the connection presents one: renewal needs it, and
    // it links a re-enrollment to the device's active enrollment.
    let tls_cert = steward_http::client_certificate(&state.settings.forwarded_cert, conn, &headers);
    let result = if renewal {
        crate::renew::renew_device(&state, req, tls_cert.as_deref()).await
    } else {
        let presented = tls_cert.as_deref().map(Thumbprint::of_der);
        enroll_device(&state, req, steward_http::peer_ip(conn), presented.as_ref()).await
    };
    result.map_err(|f| f.relates_to(relates.as_deref()))
}

/// The fault for a federated token whose nonce was already consumed (a replay).
fn token_already_used() -> SoapFault {
    SoapFault::new(FaultSubcode::Authentication, "the security token was already used")
}

async fn enroll_device(
    state: &WindowsState,
    req: SoapRequest,
    peer: Option<IpAddr>,
    presented: Option<&Thumbprint>,
) -> Result<Response, SoapFault> {
    let RequestBody::RequestSecurityToken(rst) = &req.body else {
        return Err(SoapFault::new(
            FaultSubcode::MessageFormat,
            "expected RequestSecurityToken",
        ));
    };
    let format = |m: &str| SoapFault::new(FaultSubcode::MessageFormat, m.to_owned());
    let cert_fault = |m: String| SoapFault::new(FaultSubcode::CertificateRequest, m);
    if rst.request_type != mde2::REQUEST_TYPE_ISSUE {
        return Err(format("unsupported RequestType"));
    }
    if rst.token_type != mde2::TOKEN_TYPE_DEVICE_ENROLLMENT {
        return Err(format("unsupported TokenType"));
    }
    let settings = &state.settings;
    let now = state.core.now();
    let principal = authenticate(state, req.header.credential.as_ref(), peer, now).await?;
    // A federated token is single-use (its nonce is consumed by the enrollment commit). Refuse a
    // replay of an already-consumed token here, before anything is signed, rather than signing a
    // certificate the commit then refuses and voids; the commit-time check stays, for two
    // concurrent first uses.
    if let Principal::Federated(t) = &principal {
        let spent = state
            .identity
            .nonce_spent(&t.nonce_hash)
            .await
            .map_err(|e| SoapFault::store(e, "checking the security token"))?;
        if spent {
            return Err(token_already_used());
        }
    }

    let bst = &rst.binary_security_token;
    if bst.value_type != mde2::VALUE_TYPE_PKCS10 {
        return Err(cert_fault("the BinarySecurityToken must be a PKCS#10 request".into()));
    }
    let compact: String = bst.data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > MAX_CSR_BASE64 {
        return Err(cert_fault("the certificate request is too large".into()));
    }
    let csr_der = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| cert_fault("the certificate request is not valid base64".into()))?;
    let csr = steward_pki::verify_csr(&csr_der, settings.min_rsa_bits)
        .map_err(|e| cert_fault(format!("the certificate request was rejected: {e}")))?;

    // MS-MDE2 §3.4.4.1.1.1 AdditionalContext DeviceID; Windows also puts it in CSR extension
    // 1.3.6.1.4.1.311.66.1.0, which we fall back to.
    let device_id = rst
        .context_value("DeviceID")
        .or(csr.device_id_extension.as_deref())
        .and_then(DeviceId::parse)
        .ok_or_else(|| format("the request has no valid DeviceID"))?;
    let enrollment_type = match rst.context_value("EnrollmentType") {
        None => EnrollmentType::Full,
        Some(t) => EnrollmentType::parse(t).ok_or_else(|| format("unknown EnrollmentType"))?,
    };
    let ctx = |name: &str| rst.context_value(name).map(|v| v.chars().take(256).collect::<String>());

    // The device's active enrollment, which this one replaces — only if the request proves a link
    // to it (same user, same token, or the device's current certificate on this connection); a
    // DeviceID alone is a claim anyone can make. Decided before anything is signed (the store
    // refuses the commit if the active enrollment changed meanwhile).
    let (user, token) = match &principal {
        Principal::Token { token, username } => (Some(username.as_str()).filter(|u| !u.is_empty()), Some(token.id)),
        Principal::User(u) => (Some(u.email.as_str()), None),
        Principal::Federated(t) => (Some(t.email.as_str()), None),
    };
    let attempt = EnrollmentAttempt {
        device_id: &device_id,
        auth_method: principal.method(),
        user,
        token,
        certificate: presented,
        source_ip: peer,
    };
    let replaces = state.identity.replaceable(&attempt).await.map_err(|e| match e {
        IdentityError::TakeoverRefused => SoapFault::new(FaultSubcode::Authorization, e.to_string()),
        IdentityError::Store(e) => SoapFault::store(e, "reading the device's active enrollment"),
        other => SoapFault::internal(other.to_string()),
    })?;

    let enrollment_id = EnrollmentId::new();
    let subject = CertificateSubject {
        common_name: device_id.as_str().to_owned(),
        // Subject exactly CN=<DeviceID> (interop review M-1): it is what SSLCLIENTCERTSEARCHCRITERIA
        // names; the enrollment is found by the certificate's thumbprint.
        organizational_unit: None,
    };
    let issued = state
        .identity
        .issue(subject, csr.spki_der.clone())
        .await
        .map_err(issue_fault)?;

    let (consume_token, token_id, group_id) = match &principal {
        Principal::Token { token, .. } => (Some(token.id), Some(token.id), token.group_id),
        _ => (None, None, None),
    };
    let consume_nonce = match &principal {
        Principal::Federated(t) => Some((t.nonce_hash, t.expires_at)),
        _ => None,
    };
    let enrollment = Enrollment {
        id: enrollment_id,
        platform: Platform::Windows,
        device_id: device_id.clone(),
        hardware_id: ctx("HWDevID"),
        device_name: ctx("DeviceName"),
        os_version: ctx("OSVersion").or_else(|| ctx("ApplicationVersion")),
        os_edition: ctx("OSEdition"),
        enrollment_type,
        user_email: principal.email(),
        auth_method: principal.method(),
        enrollment_token_id: token_id,
        group_id,
        cert_serial: issued.serial.clone(),
        cert_thumbprint: issued.thumbprint.clone(),
        cert_not_after: issued.not_after,
        previous_cert: None,
        state: EnrollmentState::Active,
        enrolled_at: now,
        updated_at: now,
        last_seen_at: None,
    };
    // The w7 APPAUTH secrets and nonces every accepted provisioning document carries (interop
    // review E-2). The device's own (APPSRV) credential is its DeviceID and a random secret; with
    // syncml:auth-md5 (opt-in, for clients behind certificate-stripping proxies) we keep its digest
    // key b64(md5(name:secret)) and the first nonce (AAUTHDATA), never the secret.
    let random = |what: &str| -> Result<String, SoapFault> {
        steward_pki::random_bytes::<24>()
            .map(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
            .map_err(|e| SoapFault::internal(format!("generating the w7 {what}: {e}")))
    };
    let nonce = |what: &str| {
        crate::md5::new_nonce().ok_or_else(|| SoapFault::internal(format!("generating the w7 {what} nonce")))
    };
    let device_secret = SecretString::new(random("APPSRV secret")?);
    let device_nonce = nonce("APPSRV")?;
    let server_secret = SecretString::new(random("CLIENT secret")?);
    let server_nonce = nonce("CLIENT")?;
    let md5_credential = settings.md5_auth.then(|| {
        crate::md5::credential_record(
            &crate::md5::digest_key(device_id.as_str(), device_secret.expose()),
            &device_nonce,
        )
    });
    let commit = EnrollmentCommit {
        enrollment,
        subject: issued.subject.clone(),
        not_before: issued.not_before,
        consume_token,
        consume_nonce,
        session_credential: md5_credential,
        replaces,
    };

    // On failure the certificate exists but was never delivered: Identity logs its serial as void.
    if let Err(e) = state.identity.commit_enrollment(&commit, &issued).await {
        return Err(match e {
            StoreError::TokenUnusable(u) => SoapFault::new(FaultSubcode::Authentication, u.to_string()),
            StoreError::NonceReused => token_already_used(),
            other => SoapFault::store(other, "recording the enrollment"),
        });
    }
    tracing::info!(
        device.id = %device_id,
        enrollment.id = %enrollment_id,
        auth = principal.method().as_str(),
        cert.serial = %issued.serial,
        "device enrolled"
    );

    let management_url = state.management_url();
    let device_name = commit.enrollment.device_name.clone().unwrap_or_default();
    let ent_dm_id = enrollment_id.to_string();
    let pki = &state.pki;
    let doc = mde2::ProvisioningDoc {
        root_ca_der: &pki.root_ca_der,
        root_ca_thumbprint: &pki.root_ca_thumbprint,
        intermediate_ca: Some((&pki.issuing_ca_der, &pki.issuing_ca_thumbprint)),
        client_cert_der: &issued.der,
        client_cert_thumbprint: issued.thumbprint.as_str(),
        client_cert_subject_cn: device_id.as_str(),
        client_store: match enrollment_type {
            EnrollmentType::Full => mde2::ClientStore::User,
            EnrollmentType::Device => mde2::ClientStore::System,
        },
        provider_id: &settings.provider_id,
        server_name: &settings.server_name,
        management_url: &management_url,
        ent_device_name: &device_name,
        ent_dm_id: &ent_dm_id,
        poll: mde2::PollSchedule {
            interval_first_minutes: settings.poll_first_interval_minutes,
            number_first: settings.poll_first_count,
            // MS-MDE2 §2.2.9.3: a second set of 0 retries with a non-zero interval repeats
            // forever, and then "the remaining schedule will be disabled", which is the set the
            // session engine tunes. The second set is therefore disabled (interval 0) and the
            // remaining set is the infinite one (interop review M-2).
            interval_second_minutes: 0,
            number_second: 0,
            interval_remaining_minutes: settings.poll_interval_minutes,
            number_remaining: 0,
            poll_on_login: true,
            all_users_poll_on_first_login: true,
        },
        renew_period_days: settings.renew_period_days,
        renew_retry_interval_days: settings.renew_retry_interval_days,
        renew_server_url: None,
        app_auth: mde2::AppAuth {
            device_name: device_id.as_str(),
            device_secret: device_secret.expose(),
            device_nonce: &device_nonce,
            server_secret: server_secret.expose(),
            server_nonce: &server_nonce,
        },
    };
    let doc_xml = mde2::write_provisioning_doc(&doc);
    Ok(soap_ok(mde2::write_rstr(
        req.header.message_id.as_deref(),
        &doc_xml,
        now,
    )))
}

/// The fault for a certificate that could not be issued.
pub(crate) fn issue_fault(e: IdentityError) -> SoapFault {
    match e {
        IdentityError::Issue(m) => SoapFault::new(
            FaultSubcode::CertificateRequest,
            format!("cannot issue the certificate: {m}"),
        ),
        IdentityError::Store(e) => SoapFault::store(e, "issuing the certificate"),
        other => SoapFault::internal(other.to_string()),
    }
}

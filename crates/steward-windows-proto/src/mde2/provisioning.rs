//! The wap-provisioningdoc (OMA Client Provisioning, version 1.1) returned inside the RSTR
//! (MS-MDE2 §3.4.4.1; Learn "federated-authentication-device-enrollment", "Enrollment web
//! service"). It installs the certificates (CertificateStore CSP), creates the OMA-DM account
//! (w7 APPLICATION CSP) and sets the polling schedule (DMClient CSP).

use super::{Mde2Error, Node, XmlOut, attr, strip_ws};
use crate::xml::parse;
use base64::Engine as _;

/// Which certificate store receives the client certificate. Windows asks with the RST
/// AdditionalContext `EnrollmentType`: `Full` (user enrollment) → `My/User`, `Device` → `My/System`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStore {
    User,
    System,
}

impl ClientStore {
    /// The CertificateStore CSP node name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::System => "System",
        }
    }
}

/// DMClient CSP `Provider/<id>/Poll` schedule. Intervals are minutes. MS-MDE2 §2.2.9.3: an
/// interval of 0 disables its set; a count of 0 with a non-zero interval repeats that set forever,
/// and the remaining set is disabled when the first or second set is infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSchedule {
    pub interval_first_minutes: u32,
    pub number_first: u32,
    pub interval_second_minutes: u32,
    pub number_second: u32,
    pub interval_remaining_minutes: u32,
    /// 0 = poll forever at `interval_remaining_minutes`.
    pub number_remaining: u32,
    /// Start a session whenever a user logs on.
    pub poll_on_login: bool,
    /// Start a session on each user's first logon (multi-user devices).
    pub all_users_poll_on_first_login: bool,
}

impl PollSchedule {
    /// The MS-MDE2 §2.2.9.3 rules a schedule must meet, or the reason it breaks one: "The server
    /// MUST NOT set NumberOfFirstRetries to 0", "MUST NOT set all 6 polling parameters to 0 and
    /// MUST NOT set all 3 number of retries nodes to 0 because it will cause a configuration
    /// failure".
    pub fn check(&self) -> Result<(), &'static str> {
        let counts = [self.number_first, self.number_second, self.number_remaining];
        let intervals = [
            self.interval_first_minutes,
            self.interval_second_minutes,
            self.interval_remaining_minutes,
        ];
        if self.number_first == 0 {
            return Err("NumberOfFirstRetries is 0");
        }
        if counts.iter().chain(&intervals).all(|v| *v == 0) {
            return Err("all six polling parameters are 0");
        }
        if counts.iter().all(|v| *v == 0) {
            return Err("all three NumberOf*Retries are 0");
        }
        Ok(())
    }
}

/// The w7 APPLICATION CSP `APPAUTH` credentials. Both levels are always written: the CSP marks
/// AAUTHSECRET "Required" and says "Both APPSRV and CLIENT credentials must be provided in
/// provisioning XML" (Learn w7-application-csp; MS-MDE2 §2.2.9.5), and every document known to
/// have been accepted by a real device carries them (the Windows 10 capture in
/// tests/fixtures/windows: CLIENT AAUTHSECRET + AAUTHDATA, APPSRV AAUTHNAME + AAUTHSECRET +
/// AAUTHDATA).
#[derive(Debug, Clone, Copy)]
pub struct AppAuth<'a> {
    /// APPSRV ("the client authenticates itself to the OMA DM Server", w7 CSP; DMAcc CLCRED):
    /// AAUTHNAME, the device's name for `syncml:auth-md5` (its DeviceID).
    pub device_name: &'a str,
    /// APPSRV AAUTHSECRET: the secret the device's `syncml:auth-md5` Cred proves. Only its digest
    /// key is kept, and only when `management.md5_auth` is on; otherwise a random value nobody
    /// checks (the session is authenticated by the TLS client certificate).
    pub device_secret: &'a str,
    /// APPSRV AAUTHDATA: the first nonce (base64) the device builds its Cred with.
    pub device_nonce: &'a str,
    /// CLIENT ("the server authenticates itself to the OMA DM Client"; DMAcc SRVCRED) AAUTHSECRET:
    /// random; we never send the device a Cred.
    pub server_secret: &'a str,
    /// CLIENT AAUTHDATA (base64 nonce).
    pub server_nonce: &'a str,
}

/// Inputs of [`write_provisioning_doc`]. Certificates are DER; thumbprints are the uppercase hex
/// SHA-1 the CertificateStore CSP uses as node names.
#[derive(Debug, Clone, Copy)]
pub struct ProvisioningDoc<'a> {
    pub root_ca_der: &'a [u8],
    pub root_ca_thumbprint: &'a str,
    /// `(der, thumbprint)` of an issuing CA below the root, installed into `CA/System`.
    pub intermediate_ca: Option<(&'a [u8], &'a str)>,
    pub client_cert_der: &'a [u8],
    pub client_cert_thumbprint: &'a str,
    /// The client certificate's whole subject is `CN=<this>` (steward-pki issues exactly that),
    /// which SSLCLIENTCERTSEARCHCRITERIA selects it by.
    pub client_cert_subject_cn: &'a str,
    pub client_store: ClientStore,
    /// w7 `PROVIDER-ID` and the DMClient `Provider/<id>` node; they must match (Learn).
    pub provider_id: &'a str,
    /// w7 `NAME`, shown in Settings > Accounts > Access work or school.
    pub server_name: &'a str,
    /// w7 `ADDR`: the OMA-DM management endpoint.
    pub management_url: &'a str,
    /// DMClient `EntDeviceName`; omitted when empty.
    pub ent_device_name: &'a str,
    /// DMClient `EntDMID`: the server's id for this enrollment; Learn requires it to be set before
    /// renewal is triggered.
    pub ent_dm_id: &'a str,
    pub poll: PollSchedule,
    /// CertificateStore `My/WSTEP/Renew/RenewPeriod`: days before expiry that renewal starts.
    pub renew_period_days: u32,
    /// CertificateStore `My/WSTEP/Renew/RetryInterval`: days between renewal attempts.
    pub renew_retry_interval_days: u32,
    /// CertificateStore `My/WSTEP/Renew/ServerURL`; when absent the device renews at the
    /// enrollment URL.
    pub renew_server_url: Option<&'a str>,
    /// The w7 APPAUTH blocks.
    pub app_auth: AppAuth<'a>,
}

/// One `<parm name=… value=…/>`, with `datatype` when the CSP documents one.
fn parm(w: &mut XmlOut, name: &str, value: &str, datatype: Option<&str>) {
    match datatype {
        Some(dt) => w.empty("parm", &[("name", name), ("value", value), ("datatype", dt)]),
        None => w.empty("parm", &[("name", name), ("value", value)]),
    }
}

fn characteristic(w: &mut XmlOut, ty: &str) {
    w.open("characteristic", &[("type", ty)]);
}

fn end(w: &mut XmlOut) {
    w.close("characteristic");
}

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// `CertificateStore/<store>/System/<thumbprint>/EncodedCertificate` for a CA certificate.
fn ca_store(w: &mut XmlOut, store: &str, der: &[u8], thumbprint: &str) {
    characteristic(w, "CertificateStore");
    characteristic(w, store);
    characteristic(w, "System");
    characteristic(w, thumbprint);
    parm(w, "EncodedCertificate", &b64(der), None);
    end(w);
    end(w);
    end(w);
    end(w);
}

/// Percent-encodes everything outside the RFC 2396 "unreserved" set, as the w7 APPLICATION CSP
/// requires for SSLCLIENTCERTSEARCHCRITERIA names and values.
fn uri_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0x0F)]));
        }
    }
    out
}

/// Where the empty `PrivateKeyContainer` characteristic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyContainer {
    /// A sibling of the thumbprint characteristic: the MS-MDE2 §2.2.9.1 enrollment example, and
    /// what the captured Windows 10 enrollment accepted.
    BesideThumbprint,
    /// Inside the thumbprint characteristic: Learn's "Certificate renewal response" example.
    InsideThumbprint,
}

/// `CertificateStore/My/<store>/<thumbprint>` with the issued certificate, and `My/WSTEP/Renew`.
#[allow(clippy::too_many_arguments)]
fn my_store(
    w: &mut XmlOut,
    store: &str,
    der: &[u8],
    thumbprint: &str,
    renew_period_days: u32,
    retry_interval_days: u32,
    renew_server_url: Option<&str>,
    key_container: KeyContainer,
) {
    // CertificateStore CSP: the issued client certificate. PrivateKeyContainer is required by the
    // enrollment client (Learn); it is empty because the key already lives where the CSR was made.
    characteristic(w, "CertificateStore");
    characteristic(w, "My");
    characteristic(w, store);
    characteristic(w, thumbprint);
    parm(w, "EncodedCertificate", &b64(der), None);
    if key_container == KeyContainer::InsideThumbprint {
        w.empty("characteristic", &[("type", "PrivateKeyContainer")]);
    }
    end(w);
    if key_container == KeyContainer::BesideThumbprint {
        w.empty("characteristic", &[("type", "PrivateKeyContainer")]);
    }
    end(w);
    // CertificateStore CSP My/WSTEP/Renew: automatic (ROBO) renewal. Learn: if the datatypes are
    // given they must be explicit, so they are always written.
    characteristic(w, "WSTEP");
    characteristic(w, "Renew");
    parm(w, "ROBOSupport", "true", Some("boolean"));
    parm(w, "RenewPeriod", &renew_period_days.to_string(), Some("integer"));
    parm(w, "RetryInterval", &retry_interval_days.to_string(), Some("integer"));
    if let Some(url) = renew_server_url {
        parm(w, "ServerURL", url, Some("string"));
    }
    end(w);
    end(w);
    end(w);
    end(w);
}

/// What a renewal answer carries, shaped like Learn "certificate-renewal-windows-mdm"'s
/// "Certificate renewal response" example: the new client certificate with its
/// PrivateKeyContainer inside the thumbprint characteristic, the renewal settings, and
/// `APPLICATION/PROVIDER-ID` naming the account whose certificate is replaced. The trust anchors,
/// the rest of the w7 account and DMClient stay as enrolled.
#[derive(Debug, Clone, Copy)]
pub struct RenewalDoc<'a> {
    /// The w7 PROVIDER-ID of the enrolled account (the example's only APPLICATION parm).
    pub provider_id: &'a str,
    pub client_cert_der: &'a [u8],
    pub client_cert_thumbprint: &'a str,
    pub client_store: ClientStore,
    pub renew_period_days: u32,
    pub renew_retry_interval_days: u32,
    pub renew_server_url: Option<&'a str>,
}

/// The wap-provisioningdoc of a renewal RSTR.
pub fn write_renewal_provisioning_doc(doc: &RenewalDoc<'_>) -> String {
    let mut w = XmlOut::new();
    w.open("wap-provisioningdoc", &[("version", "1.1")]);
    my_store(
        &mut w,
        doc.client_store.as_str(),
        doc.client_cert_der,
        doc.client_cert_thumbprint,
        doc.renew_period_days,
        doc.renew_retry_interval_days,
        doc.renew_server_url,
        KeyContainer::InsideThumbprint,
    );
    characteristic(&mut w, "APPLICATION");
    parm(&mut w, "PROVIDER-ID", doc.provider_id, None);
    end(&mut w);
    w.close("wap-provisioningdoc");
    w.finish()
}

/// Builds the enrollment wap-provisioningdoc. Every value is escaped, so URLs and device names
/// holding markup characters stay data.
pub fn write_provisioning_doc(doc: &ProvisioningDoc<'_>) -> String {
    let store = doc.client_store.as_str();
    let mut w = XmlOut::new();
    w.open("wap-provisioningdoc", &[("version", "1.1")]);

    // CertificateStore CSP: the trust anchor (at most one root and one intermediate, per Learn).
    ca_store(&mut w, "Root", doc.root_ca_der, doc.root_ca_thumbprint);
    if let Some((der, thumbprint)) = doc.intermediate_ca {
        ca_store(&mut w, "CA", der, thumbprint);
    }

    my_store(
        &mut w,
        store,
        doc.client_cert_der,
        doc.client_cert_thumbprint,
        doc.renew_period_days,
        doc.renew_retry_interval_days,
        doc.renew_server_url,
        KeyContainer::BesideThumbprint,
    );

    // w7 APPLICATION CSP: the OMA-DM account. Parm names are case-sensitive and uppercase.
    characteristic(&mut w, "APPLICATION");
    parm(&mut w, "APPID", "w7", None);
    parm(&mut w, "PROVIDER-ID", doc.provider_id, None);
    parm(&mut w, "NAME", doc.server_name, None);
    parm(&mut w, "ADDR", doc.management_url, None);
    // Connection retry: 6 tries, backing off from 30 s to 120 s (the Learn example's values).
    parm(&mut w, "CONNRETRYFREQ", "6", None);
    parm(&mut w, "INITIALBACKOFFTIME", "30000", None);
    parm(&mut w, "MAXBACKOFFTIME", "120000", None);
    w.empty("parm", &[("name", "BACKCOMPATRETRYDISABLED")]);
    // XML, not WBXML: the SyncML codec speaks XML and Windows honours either.
    parm(&mut w, "DEFAULTENCODING", "application/vnd.syncml.dm+xml", None);
    // "Subject=<uri-escaped DN>&Stores=<uri-escaped store>": the value is a list of name=value
    // pairs separated by "&", each URI-escaped (w7 APPLICATION CSP). The "&" is escaped by the
    // writer to "&amp;" in the attribute.
    let criteria = format!(
        "Subject={}&Stores={}",
        uri_escape(&format!("CN={}", doc.client_cert_subject_cn)),
        uri_escape(&format!("MY\\{store}")),
    );
    parm(&mut w, "SSLCLIENTCERTSEARCHCRITERIA", &criteria, None);
    // Both credential levels, each with its secret and nonce (see [`AppAuth`]). CLIENT is the
    // server's credential, APPSRV the device's: W7 "APPSRV — the client authenticates itself to the
    // OMA DM Server; CLIENT — the server authenticates itself to the OMA DM Client". DIGEST is
    // syncml:auth-md5 (DMAcc: "When AAUTHLEVEL is CLIENT, AAUTHTYPE must be DIGEST").
    let a = &doc.app_auth;
    characteristic(&mut w, "APPAUTH");
    parm(&mut w, "AAUTHLEVEL", "CLIENT", None);
    parm(&mut w, "AAUTHTYPE", "DIGEST", None);
    parm(&mut w, "AAUTHSECRET", a.server_secret, None);
    parm(&mut w, "AAUTHDATA", a.server_nonce, None);
    end(&mut w);
    characteristic(&mut w, "APPAUTH");
    parm(&mut w, "AAUTHLEVEL", "APPSRV", None);
    parm(&mut w, "AAUTHTYPE", "DIGEST", None);
    parm(&mut w, "AAUTHNAME", a.device_name, None);
    parm(&mut w, "AAUTHSECRET", a.device_secret, None);
    parm(&mut w, "AAUTHDATA", a.device_nonce, None);
    end(&mut w);
    end(&mut w);

    // DMClient CSP Provider/<ProviderID>: identity and polling schedule (datatypes per the CSP).
    characteristic(&mut w, "DMClient");
    characteristic(&mut w, "Provider");
    characteristic(&mut w, doc.provider_id);
    // An empty string is omitted rather than written as value="" (interop review E-5: cheap
    // insurance against a DMClient CSP refusing it and failing the whole document).
    if !doc.ent_device_name.is_empty() {
        parm(&mut w, "EntDeviceName", doc.ent_device_name, Some("string"));
    }
    parm(&mut w, "EntDMID", doc.ent_dm_id, Some("string"));
    characteristic(&mut w, "Poll");
    let p = &doc.poll;
    let ints = [
        ("IntervalForFirstSetOfRetries", p.interval_first_minutes),
        ("NumberOfFirstRetries", p.number_first),
        ("IntervalForSecondSetOfRetries", p.interval_second_minutes),
        ("NumberOfSecondRetries", p.number_second),
        ("IntervalForRemainingScheduledRetries", p.interval_remaining_minutes),
        ("NumberOfRemainingScheduledRetries", p.number_remaining),
    ];
    for (name, value) in ints {
        parm(&mut w, name, &value.to_string(), Some("integer"));
    }
    parm(&mut w, "PollOnLogin", bool_str(p.poll_on_login), Some("boolean"));
    parm(
        &mut w,
        "AllUsersPollOnFirstLogin",
        bool_str(p.all_users_poll_on_first_login),
        Some("boolean"),
    );
    end(&mut w);
    end(&mut w);
    end(&mut w);
    end(&mut w);

    w.close("wap-provisioningdoc");
    w.finish()
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// A provisioning doc flattened to `(path, value)` pairs, where the path is the characteristic
/// types and the parm name joined by `/` (e.g. `CertificateStore/My/User/<thumb>/EncodedCertificate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedProvisioningDoc {
    /// In document order; a parm without a value (BACKCOMPATRETRYDISABLED) has an empty value.
    pub parms: Vec<(String, String)>,
    /// Every characteristic as `(path, instance)` in document order, e.g.
    /// `("APPLICATION/APPAUTH", 7)`: repeated characteristics (the two APPAUTH blocks) have the same
    /// path and different instances.
    pub characteristics: Vec<(String, usize)>,
    /// For each entry of `parms`, the instance of the characteristic holding it (0: none).
    pub parm_owners: Vec<usize>,
}

impl ParsedProvisioningDoc {
    /// The parms of each characteristic instance at `path` (as `(name, value)`), in document order.
    pub fn instances(&self, path: &str) -> Vec<Vec<(&str, &str)>> {
        self.characteristics
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(p, id)| {
                self.parms
                    .iter()
                    .zip(&self.parm_owners)
                    .filter(|(_, owner)| *owner == id)
                    .filter_map(|((full, value), _)| {
                        let name = full.strip_prefix(p.as_str())?.strip_prefix('/')?;
                        Some((name, value.as_str()))
                    })
                    .collect()
            })
            .collect()
    }

    /// The first value at exactly this path.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.parms.iter().find(|(p, _)| p == path).map(|(_, v)| v.as_str())
    }

    /// The w7 APPLICATION `ADDR`, i.e. the management URL.
    pub fn management_url(&self) -> Option<&str> {
        (self.get("APPLICATION/APPID") == Some("w7"))
            .then(|| self.get("APPLICATION/ADDR"))
            .flatten()
    }

    /// The value of `<prefix>/<thumbprint>/EncodedCertificate` for the first matching thumbprint.
    fn encoded_cert(&self, prefixes: &[&str]) -> Option<(&str, &str)> {
        self.parms.iter().find_map(|(path, value)| {
            let rest = path.strip_suffix("/EncodedCertificate")?;
            let thumb = prefixes.iter().find_map(|p| rest.strip_prefix(p))?;
            (!thumb.is_empty() && !thumb.contains('/')).then_some((thumb, value.as_str()))
        })
    }

    fn decode(value: &str) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD.decode(strip_ws(value)).ok()
    }

    /// DER of the client certificate from `My/User` or `My/System`.
    pub fn client_certificate_der(&self) -> Option<Vec<u8>> {
        self.encoded_cert(&MY_PREFIXES).and_then(|(_, v)| Self::decode(v))
    }

    /// Thumbprint (characteristic name) of the client certificate.
    pub fn client_certificate_thumbprint(&self) -> Option<&str> {
        self.encoded_cert(&MY_PREFIXES).map(|(t, _)| t)
    }

    /// DER of the `Root/System` certificate.
    pub fn root_certificate_der(&self) -> Option<Vec<u8>> {
        self.encoded_cert(&["CertificateStore/Root/System/"])
            .and_then(|(_, v)| Self::decode(v))
    }

    /// DER of the `CA/System` (intermediate) certificate.
    pub fn intermediate_certificate_der(&self) -> Option<Vec<u8>> {
        self.encoded_cert(&["CertificateStore/CA/System/"])
            .and_then(|(_, v)| Self::decode(v))
    }
}

const MY_PREFIXES: [&str; 2] = ["CertificateStore/My/User/", "CertificateStore/My/System/"];

/// Parses a wap-provisioningdoc into path/value pairs (simulator side). Elements other than
/// `characteristic` and `parm` (e.g. `nocharacteristic`) are skipped with their content.
pub fn parse_provisioning_doc(xml: &str) -> Result<ParsedProvisioningDoc, Mde2Error> {
    let doc = parse(xml)?;
    let root = doc.root_element();
    if root.tag_name().name() != "wap-provisioningdoc" || root.tag_name().namespace().is_some() {
        return Err(Mde2Error::Invalid("root is not wap-provisioningdoc".to_owned()));
    }
    let mut parms = Vec::new();
    let mut parm_owners = Vec::new();
    let mut characteristics = Vec::new();
    // Iterative walk in document order: children are pushed in reverse so the first is popped
    // first. The input depth is already capped by crate::xml::parse.
    let mut stack: Vec<(Node<'_, '_>, String, usize)> = Vec::new();
    push_children(&mut stack, root, "", 0);
    while let Some((node, prefix, owner)) = stack.pop() {
        if is_plain(node, "parm") {
            let name = attr(node, "name").ok_or(Mde2Error::MissingElement("parm name"))?;
            let value = attr(node, "value").unwrap_or_default();
            parms.push((format!("{prefix}{name}"), value.to_owned()));
            parm_owners.push(owner);
        } else if is_plain(node, "characteristic") {
            let ty = attr(node, "type").ok_or(Mde2Error::MissingElement("characteristic type"))?;
            let path = format!("{prefix}{ty}");
            let id = characteristics.len() + 1;
            characteristics.push((path.clone(), id));
            push_children(&mut stack, node, &format!("{path}/"), id);
        }
    }
    Ok(ParsedProvisioningDoc {
        parms,
        characteristics,
        parm_owners,
    })
}

fn push_children<'a, 'i>(
    stack: &mut Vec<(Node<'a, 'i>, String, usize)>,
    node: Node<'a, 'i>,
    prefix: &str,
    owner: usize,
) {
    let kids: Vec<_> = node.children().filter(|c| c.is_element()).collect();
    for k in kids.into_iter().rev() {
        stack.push((k, prefix.to_owned(), owner));
    }
}

/// An un-namespaced element with this name (the provisioning doc has no namespace).
fn is_plain(node: Node<'_, '_>, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace().is_none() && node.tag_name().name() == name
}

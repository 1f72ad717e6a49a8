//! The management tree of a simulated Windows 11 device: the CSP nodes an MDM server reads and
//! writes over OMA-DM (MS-MDM §2.2.7 commands; Learn "Configuration service provider reference").
//!
//! The tree answers Get/Add/Replace/Delete/Exec with the status codes Windows uses
//! (OMA-TS-DM_Protocol-V1_2 §10 response codes; MS-MDM §2.2.6.1):
//!
//! | case | code |
//! |---|---|
//! | Get of a leaf / interior node | 200 (interior: Format `node`, Data = child names joined by `/`) |
//! | Get / Delete / Exec of an unknown node | 404 |
//! | Get of a write-only node (Exec-only nodes, `AAuthSecret`) | 405 |
//! | Add of an existing node | 418 |
//! | Add where the CSP does not allow creation | 405 (404 when even the parent is unknown) |
//! | Replace of a read-only node | 405 |
//! | Replace of an unknown node outside a creatable subtree | 404 |
//! | value that does not match its Format (`int`, `bool`, `xml`) | 400 |
//! | Exec of a node that is not executable | 405 |
//! | Exec of `EnterpriseDesktopAppManagement/MSI/{id}/DownloadInstall` | 202 (asynchronous) |
//! | any command on `./User/…` while no user is signed in | 500 |
//!
//! The last row follows what Fleet observed on real devices (fleetdm/fleet #25713, #26942, #50196):
//! user-scoped commands fail with 500 (and the enclosing Atomic with 507) before a user session
//! exists; the device does not pretend the node is missing.
//!
//! Device-scope aliases: Windows accepts both `./Vendor/MSFT/X` and `./Device/Vendor/MSFT/X` for the
//! device-scope instance of a CSP (Learn "CSP DDF files": "./Vendor/MSFT" is the legacy root of
//! device-scope CSPs), so both are normalised to `./Device/Vendor/MSFT/X` before lookup. Results echo
//! the LocURI the server used, like Windows does.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Value format of a node (OMA-TS-DM_TND-V1_2 §7 Format; MS-MDM §2.2.5.3 Meta Format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Chr,
    Int,
    Bool,
    B64,
    Xml,
    Node,
    Bin,
    Float,
    Date,
    Time,
    Null,
}

impl Format {
    /// The `Meta/Format` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Chr => "chr",
            Format::Int => "int",
            Format::Bool => "bool",
            Format::B64 => "b64",
            Format::Xml => "xml",
            Format::Node => "node",
            Format::Bin => "bin",
            Format::Float => "float",
            Format::Date => "date",
            Format::Time => "time",
            Format::Null => "null",
        }
    }

    /// Parses a `Meta/Format` value (case-insensitive, as servers differ).
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "chr" => Format::Chr,
            "int" => Format::Int,
            "bool" => Format::Bool,
            "b64" => Format::B64,
            "xml" => Format::Xml,
            "node" => Format::Node,
            "bin" => Format::Bin,
            "float" => Format::Float,
            "date" => Format::Date,
            "time" => Format::Time,
            "null" => Format::Null,
            _ => return None,
        })
    }

    /// Whether `data` is a valid value of this format. Windows' CSPs refuse an `int` that is not a
    /// number or a `bool` other than `true`/`false` (OMA-TS-DM_TND §7 value formats) and an
    /// ill-formed `xml` payload.
    fn accepts(self, data: &str) -> bool {
        match self {
            Format::Int => data.trim().parse::<i64>().is_ok(),
            Format::Bool => matches!(data.trim(), "true" | "false"),
            Format::Xml => steward_windows_proto::syncml::is_well_formed_fragment(data),
            Format::B64 => STANDARD.decode(data.trim()).is_ok(),
            Format::Float => data.trim().parse::<f64>().is_ok(),
            _ => true,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Allowed operations of a node (the DDF `AccessType`), as a small bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Access(u8);

impl Access {
    pub const NONE: Access = Access(0);
    pub const GET: Access = Access(1);
    pub const ADD: Access = Access(2);
    pub const REPLACE: Access = Access(4);
    pub const DELETE: Access = Access(8);
    pub const EXEC: Access = Access(16);
    /// Get + Replace: a writable setting.
    pub const GET_REPLACE: Access = Access(1 | 4);
    /// Get + Add + Replace + Delete: a node in a creatable subtree.
    pub const DYNAMIC: Access = Access(1 | 2 | 4 | 8);

    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

/// One node of the tree. Interior nodes have `Format::Node` and no value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CspNode {
    pub format: Format,
    pub value: Option<String>,
    pub access: Access,
    /// `Meta/Type` the server gave, echoed in Results (e.g. `text/plain`).
    pub mime: Option<String>,
}

impl CspNode {
    fn interior(access: Access) -> Self {
        Self {
            format: Format::Node,
            value: None,
            access,
            mime: None,
        }
    }

    fn leaf(format: Format, access: Access, value: impl Into<String>) -> Self {
        Self {
            format,
            value: Some(value.into()),
            access,
            mime: None,
        }
    }
}

/// Why a CSP operation failed; [`CspError::status`] is the OMA-DM status code the device returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CspError {
    #[error("{0}: not a valid LocURI")]
    BadUri(String),
    #[error("{0}: value does not match its format or is ill-formed")]
    BadValue(String),
    #[error("{0}: node not found")]
    NotFound(String),
    #[error("{0}: command not allowed on this node")]
    NotAllowed(String),
    #[error("{0}: node already exists")]
    AlreadyExists(String),
    #[error("{0}: user-scoped node but no user is signed in")]
    NoUserSession(String),
    /// The device refuses to write this node (a test's [`CspTree::refuse_writes`]: a policy the
    /// device rejects, as a real Windows does with 500 and an error text).
    #[error("{0}: the device refused the value")]
    Refused(String),
}

impl CspError {
    /// The status code Windows answers with (see the module table).
    pub fn status(&self) -> u16 {
        match self {
            CspError::BadUri(_) | CspError::BadValue(_) => 400,
            CspError::NotFound(_) => 404,
            CspError::NotAllowed(_) => 405,
            CspError::AlreadyExists(_) => 418,
            CspError::NoUserSession(_) | CspError::Refused(_) => 500,
        }
    }
}

/// The value a Get returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    pub format: Format,
    pub mime: Option<String>,
    pub data: String,
}

/// A side effect of an Exec that the device (not the tree) carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEffect {
    /// Nothing beyond the status.
    None,
    /// RemoteWipe CSP `doWipe*` or AutomaticRedeployment: the variant is the node name.
    Wipe(String),
    /// Reboot CSP `RebootNow`.
    Reboot,
    /// RemoteLock CSP `Lock`.
    Lock,
    /// EnterpriseDesktopAppManagement `DownloadInstall`: completes asynchronously; the device sends
    /// an MSI completion alert (1224, the CSP's "Alert example") with Source = this LocURI (as the
    /// server wrote it) in a later session.
    MsiInstall { loc_uri: String },
}

/// The result of a successful Exec: the status (200, or 202 when asynchronous) and its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub status: u16,
    pub effect: ExecEffect,
}

/// What a simulated device reports about itself. All values are plain data so integration tests
/// can assert them; [`DeviceProfile::random`] derives them deterministically from the DeviceID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProfile {
    /// 32 hex digits, as in the enrollment (`./DevInfo/DevId`).
    pub device_id: String,
    pub device_name: String,
    pub manufacturer: String,
    pub model: String,
    pub serial_number: String,
    /// `./DevDetail/SwV`, e.g. `10.0.26100.2605`.
    pub os_version: String,
    /// DeviceStatus `OS/Edition`: the Windows product type (4 Enterprise, 48 Pro, 121 Education).
    pub edition: u32,
    pub firmware_version: String,
    pub hardware_version: String,
    pub total_ram_mb: u64,
    pub total_storage_mb: u64,
    /// DMClient `Provider/<ProviderID>` (= w7 PROVIDER-ID).
    pub provider_id: String,
    /// DMClient `EntDMID`, when the server provisioned one.
    pub ent_dm_id: Option<String>,
    pub language: String,
    /// DMClient `HWDevID` (64 hex digits).
    pub hw_dev_id: String,
    pub tpm_version: String,
    /// Whether the device is a secured-core PC: DMClient `Provider/<ProviderID>/ConfigLock/
    /// SecureCore` (Learn DMClient CSP; Get only), which decides whether ConfigLock works.
    #[serde(default)]
    pub secured_core: bool,
}

impl DeviceProfile {
    /// Plausible hardware for `device_id`, derived deterministically from it (same id, same values).
    pub fn random(device_id: &str) -> Self {
        use md5::{Digest, Md5};
        let h: [u8; 16] = Md5::digest(device_id.as_bytes()).into();
        let pick = |i: usize, n: usize| usize::from(h[i]) % n;
        const HW: [(&str, &str); 5] = [
            ("Dell Inc.", "Latitude 7440"),
            ("LENOVO", "21HMCTO1WW"),
            ("HP", "HP EliteBook 840 G10 Notebook PC"),
            ("Microsoft Corporation", "Surface Laptop 5"),
            ("Microsoft Corporation", "Virtual Machine"),
        ];
        let (manufacturer, model) = HW[pick(0, HW.len())];
        let hex: String = h.iter().map(|b| format!("{b:02X}")).collect();
        let ram = [8192u64, 16384, 32768][pick(1, 3)];
        let storage = [244_198u64, 488_386, 976_762][pick(2, 3)];
        let edition = [4u32, 48, 121][pick(3, 3)];
        let hw_dev_id = format!("{device_id}{device_id}").to_uppercase();
        Self {
            device_id: device_id.to_owned(),
            device_name: format!("DESKTOP-{}", &hex[..7]),
            manufacturer: manufacturer.to_owned(),
            model: model.to_owned(),
            serial_number: format!("SN{}", &hex[8..18]),
            os_version: "10.0.26100.2605".to_owned(),
            edition,
            firmware_version: format!("1.{}.{}", h[4] % 30, h[5] % 10),
            hardware_version: format!("{}", h[6] % 4 + 1),
            total_ram_mb: ram,
            total_storage_mb: storage,
            provider_id: "Steward".to_owned(),
            ent_dm_id: None,
            language: "en-US".to_owned(),
            hw_dev_id,
            tpm_version: "2.0".to_owned(),
            secured_core: false,
        }
    }

    /// Edition name for `OSPlatform` (Learn DeviceStatus CSP `OS/Edition`; product types from
    /// GetProductInfo).
    pub fn edition_name(&self) -> &'static str {
        match self.edition {
            4 => "Enterprise",
            48 => "Pro",
            121 => "Education",
            101 => "Home",
            _ => "Enterprise",
        }
    }
}

// ---- Paths ----

const DEVICE_MSFT: &str = "./Device/Vendor/MSFT";
const POLICY_DEVICE: &str = "./Device/Vendor/MSFT/Policy/Config";
const POLICY_USER: &str = "./User/Vendor/MSFT/Policy/Config";
const MSI_ROOT: &str = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI";
const DEFENDER_CONFIGURATION: &str = "./Device/Vendor/MSFT/Defender/Configuration";
const LOCAL_TIME: &str = "./DevDetail/Ext/Microsoft/LocalTime";

/// Normalises a LocURI to the key the tree uses: `./Vendor/MSFT…` becomes `./Device/Vendor/MSFT…`,
/// a trailing `/` is dropped. Returns `None` for URIs Windows would not accept: absolute (`/x`,
/// MS-MDM §2.2.3.9 requires relative `./` URIs), empty segments, `.`/`..` segments.
pub fn normalize(uri: &str) -> Option<String> {
    let uri = uri.trim();
    let uri = uri.strip_suffix('/').unwrap_or(uri);
    if uri == "." {
        return Some(".".to_owned());
    }
    let rest = uri.strip_prefix("./")?;
    if rest.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return None;
    }
    // The scope and `Vendor` segments are matched ignoring ASCII case: Learn "OMA DM protocol
    // support" addresses the per-user tree as `./user/vendor/MSFT/…`, so Windows accepts it.
    let mut segments: Vec<&str> = rest.split('/').collect();
    let canonical = |s: &str, names: &[&'static str]| names.iter().copied().find(|n| s.eq_ignore_ascii_case(n));
    if let Some(first) = segments.first_mut()
        && let Some(c) = canonical(first, &["User", "Device", "Vendor"])
    {
        *first = c;
    }
    if matches!(segments.first(), Some(&("User" | "Device")))
        && let Some(second) = segments.get_mut(1)
        && let Some(c) = canonical(second, &["Vendor"])
    {
        *second = c;
    }
    let rest = segments.join("/");
    if rest == "Vendor/MSFT" || rest.starts_with("Vendor/MSFT/") {
        return Some(format!("./Device/{rest}"));
    }
    Some(format!("./{rest}"))
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

fn last_segment(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

fn under(path: &str, root: &str) -> bool {
    path.len() > root.len() && path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/')
}

/// What the CSP allows for a node that does not exist yet (dynamic nodes).
struct Creatable {
    access: Access,
    /// Format when the server gives none.
    default_format: Format,
    /// The parent must already exist (the CSP does not create it implicitly).
    needs_parent: bool,
}

/// The subtrees where Add (and Replace, for the Policy CSP) create nodes.
fn creatable(path: &str) -> Option<Creatable> {
    // Policy CSP: `Config/<Area>/<Policy>`; Replace creates-or-updates (Learn Policy CSP: "Add and
    // Replace behave the same"), Delete removes the setting.
    if under(path, POLICY_DEVICE) || under(path, POLICY_USER) {
        return Some(Creatable {
            access: Access::DYNAMIC,
            default_format: Format::Chr,
            needs_parent: false,
        });
    }
    // Defender CSP `Configuration/<Setting>`: fixed DDF leaves with Add, Delete, Get and Replace
    // (Learn Defender CSP). The simulator holds only what the server wrote, so a leaf appears on its
    // first Add or Replace and Delete removes it, as a Policy CSP setting does.
    if let Some(rest) = path
        .strip_prefix(DEFENDER_CONFIGURATION)
        .and_then(|r| r.strip_prefix('/'))
        && !rest.contains('/')
    {
        return Some(Creatable {
            access: Access::DYNAMIC,
            default_format: Format::Int,
            needs_parent: false,
        });
    }
    // EnterpriseDesktopAppManagement CSP: MSI/{ProductID} (Add, Delete, Get) and
    // MSI/{ProductID}/DownloadInstall (Add, Delete, Get, Replace, Exec).
    if let Some(rest) = path.strip_prefix(MSI_ROOT).and_then(|r| r.strip_prefix('/')) {
        let segs: Vec<&str> = rest.split('/').collect();
        return match segs.as_slice() {
            [_id] => Some(Creatable {
                access: Access::GET | Access::ADD | Access::DELETE,
                default_format: Format::Node,
                needs_parent: false,
            }),
            [_id, "DownloadInstall"] => Some(Creatable {
                access: Access::DYNAMIC | Access::EXEC,
                default_format: Format::Xml,
                needs_parent: true,
            }),
            _ => None,
        };
    }
    // DMAcc (OMA-DM DM account): the server may provision application credentials, e.g. Fleet's
    // `./SyncML/DMAcc/<acct>/AppAuth/CLCRED/AAuthName|AAuthSecret` for syncml:auth-md5.
    if let Some(rest) = path.strip_prefix("./SyncML/DMAcc/") {
        let mut segs = rest.split('/');
        let (_acct, app_auth) = (segs.next(), segs.next());
        if app_auth == Some("AppAuth") && segs.next().is_some() {
            // Secrets are write-only (OMA-TS-DM_StdObj DMAcc: AAuthSecret has no Get).
            let access = if last_segment(path) == "AAuthSecret" {
                Access::ADD | Access::REPLACE | Access::DELETE
            } else {
                Access::DYNAMIC
            };
            return Some(Creatable {
                access,
                default_format: Format::Chr,
                needs_parent: false,
            });
        }
    }
    None
}

/// The in-memory management tree (serializable, so the `session` command keeps what the server
/// wrote from one run to the next, as a device's registry does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CspTree {
    nodes: BTreeMap<String, CspNode>,
    user_session: bool,
    /// Nodes whose Add and Replace the device refuses ([`CspTree::refuse_writes`]).
    refused: std::collections::BTreeSet<String>,
}

/// A copy of the tree's nodes, taken before an Atomic and restored when it fails.
#[derive(Debug, Clone)]
pub struct TreeSnapshot(BTreeMap<String, CspNode>);

impl CspTree {
    /// An empty tree with only the root.
    pub fn empty() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(".".to_owned(), CspNode::interior(Access::GET));
        Self {
            nodes,
            user_session: true,
            refused: Default::default(),
        }
    }

    /// From now on the device refuses Add and Replace of `uri` with 500 (a test's stand-in for a
    /// policy the device rejects); `allow_writes` undoes it.
    pub fn refuse_writes(&mut self, uri: &str) {
        if let Some(p) = normalize(uri) {
            self.refused.insert(p);
        }
    }

    pub fn allow_writes(&mut self, uri: &str) {
        if let Some(p) = normalize(uri) {
            self.refused.remove(&p);
        }
    }

    /// The tree of a Windows 11 device described by `p` (node paths and formats from the Learn CSP
    /// pages: DevInfo, DevDetail, DMClient, DeviceStatus, Defender, BitLocker, RemoteWipe,
    /// AutomaticRedeployment, Reboot, RemoteLock, Policy, EnterpriseDesktopAppManagement).
    pub fn windows_11(p: &DeviceProfile) -> Self {
        use Format::*;
        let mut t = Self::empty();
        let get = Access::GET;
        let rw = Access::GET_REPLACE;
        // DevInfo (OMA-TS-DM_StdObj §5.3; MS-MDM §2.2: sent in every session's first Replace).
        t.seed("./DevInfo/DevId", Chr, get, &p.device_id);
        t.seed("./DevInfo/Man", Chr, get, &p.manufacturer);
        t.seed("./DevInfo/Mod", Chr, get, &p.model);
        // DmV: the OMA-DM client version Windows reports (fleet POC capture 04: "1.3").
        t.seed("./DevInfo/DmV", Chr, get, "1.3");
        t.seed("./DevInfo/Lang", Chr, get, &p.language);
        // DevDetail CSP.
        t.seed("./DevDetail/DevTyp", Chr, get, &p.model);
        t.seed("./DevDetail/OEM", Chr, get, &p.manufacturer);
        t.seed("./DevDetail/FwV", Chr, get, &p.firmware_version);
        t.seed("./DevDetail/SwV", Chr, get, &p.os_version);
        t.seed("./DevDetail/HwV", Chr, get, &p.hardware_version);
        t.seed("./DevDetail/LrgObj", Bool, get, "true");
        let ext = "./DevDetail/Ext/Microsoft";
        // OSPlatform carries the registry ProductName, which still says "Windows 10" on Windows 11.
        t.seed(
            &format!("{ext}/OSPlatform"),
            Chr,
            get,
            &format!("Windows 10 {}", p.edition_name()),
        );
        // PROCESSOR_ARCHITECTURE_AMD64 = 9, PROCESSOR_AMD_X8664 = 8664 (DevDetail CSP).
        t.seed(&format!("{ext}/ProcessorArchitecture"), Int, get, "9");
        t.seed(&format!("{ext}/ProcessorType"), Int, get, "8664");
        t.seed(&format!("{ext}/TotalRAM"), Int, get, &p.total_ram_mb.to_string());
        t.seed(
            &format!("{ext}/TotalStorage"),
            Int,
            get,
            &p.total_storage_mb.to_string(),
        );
        t.seed(&format!("{ext}/SMBIOSSerialNumber"), Chr, get, &p.serial_number);
        t.seed(&format!("{ext}/DeviceName"), Chr, get, &p.device_name);
        t.seed(&format!("{ext}/DNSComputerName"), Chr, get, &p.device_name);
        t.seed(LOCAL_TIME, Chr, get, "");
        t.seed(&format!("{ext}/MobileID"), Chr, get, "Not Present");
        // DMClient CSP.
        let dmc = format!("{DEVICE_MSFT}/DMClient");
        t.seed(&format!("{dmc}/HWDevID"), Chr, get, &p.hw_dev_id);
        let prov = format!("{dmc}/Provider/{}", p.provider_id);
        t.seed(
            &format!("{prov}/EntDMID"),
            Chr,
            rw,
            p.ent_dm_id.as_deref().unwrap_or_default(),
        );
        t.seed(&format!("{prov}/EntDeviceName"), Chr, rw, &p.device_name);
        for (name, v) in [
            ("IntervalForFirstSetOfRetries", "3"),
            ("NumberOfFirstRetries", "5"),
            ("IntervalForSecondSetOfRetries", "15"),
            ("NumberOfSecondRetries", "8"),
            ("IntervalForRemainingScheduledRetries", "480"),
            ("NumberOfRemainingScheduledRetries", "0"),
        ] {
            t.seed(&format!("{prov}/Poll/{name}"), Int, rw, v);
        }
        t.seed(&format!("{prov}/Poll/PollOnLogin"), Bool, rw, "true");
        // ConfigLock (Learn DMClient CSP, Windows 11 21H2+): SecureCore is Get only; Lock (0 unlock,
        // the default; 1 lock) and UnlockDuration (minutes, default 480) take Add, Delete, Get and
        // Replace.
        let lock = format!("{prov}/ConfigLock");
        t.seed(
            &format!("{lock}/SecureCore"),
            Bool,
            get,
            if p.secured_core { "true" } else { "false" },
        );
        t.seed(&format!("{lock}/Lock"), Int, Access::DYNAMIC, "0");
        t.seed(&format!("{lock}/UnlockDuration"), Int, Access::DYNAMIC, "480");
        // DeviceStatus CSP (values: Learn devicestatus-csp: Antivirus/Status 0 = good,
        // SignatureStatus 1 = up to date, Firewall/Status 0 = on, EncryptionCompliance 1 = encrypted).
        let ds = format!("{DEVICE_MSFT}/DeviceStatus");
        t.seed(&format!("{ds}/OS/Edition"), Int, get, &p.edition.to_string());
        t.seed(&format!("{ds}/OS/Mode"), Int, get, "0");
        t.seed(&format!("{ds}/Compliance/EncryptionCompliance"), Int, get, "1");
        t.seed(&format!("{ds}/TPM/SpecificationVersion"), Chr, get, &p.tpm_version);
        t.seed(&format!("{ds}/Antivirus/Status"), Int, get, "0");
        t.seed(&format!("{ds}/Antivirus/SignatureStatus"), Int, get, "1");
        t.seed(&format!("{ds}/Firewall/Status"), Int, get, "0");
        // Defender CSP Health.
        let dh = format!("{DEVICE_MSFT}/Defender/Health");
        t.seed(&format!("{dh}/RtpEnabled"), Bool, get, "true");
        t.seed(&format!("{dh}/DefenderEnabled"), Bool, get, "true");
        t.seed(&format!("{dh}/ProductStatus"), Int, get, "0");
        // BitLocker CSP: 0 = the device is encrypted / compliant.
        t.seed(
            &format!("{DEVICE_MSFT}/BitLocker/Status/DeviceEncryptionStatus"),
            Int,
            get,
            "0",
        );
        // Exec-only nodes (RemoteWipe, AutomaticRedeployment, Reboot, RemoteLock CSPs).
        for n in [
            "doWipe",
            "doWipeProtected",
            "doWipePersistUserData",
            "doWipePersistProvisionedData",
        ] {
            t.seed(&format!("{DEVICE_MSFT}/RemoteWipe/{n}"), Null, Access::EXEC, "");
        }
        t.seed(
            &format!("{DEVICE_MSFT}/AutomaticRedeployment/doAutomaticRedeployment"),
            Null,
            Access::EXEC,
            "",
        );
        t.seed(&format!("{DEVICE_MSFT}/Reboot/RebootNow"), Null, Access::EXEC, "");
        t.seed(&format!("{DEVICE_MSFT}/RemoteLock/Lock"), Null, Access::EXEC, "");
        // Creatable roots.
        t.seed_interior(POLICY_DEVICE, Access::GET);
        t.seed_interior(POLICY_USER, Access::GET);
        t.seed_interior(MSI_ROOT, Access::GET);
        t.seed_interior(DEFENDER_CONFIGURATION, Access::GET);
        t.seed_interior("./SyncML/DMAcc", Access::GET);
        t
    }

    fn ensure_ancestors(&mut self, path: &str) {
        let mut cur = parent(path);
        while let Some(p) = cur {
            if self.nodes.contains_key(p) {
                break;
            }
            let access = if creatable(p).is_some() {
                Access::GET | Access::ADD | Access::DELETE
            } else {
                Access::GET
            };
            self.nodes.insert(p.to_owned(), CspNode::interior(access));
            cur = parent(p);
        }
    }

    /// Inserts (or overwrites) a leaf, creating interior ancestors. For seeding and tests.
    pub fn seed(&mut self, uri: &str, format: Format, access: Access, value: &str) {
        let Some(path) = normalize(uri) else { return };
        self.ensure_ancestors(&path);
        self.nodes.insert(path, CspNode::leaf(format, access, value));
    }

    /// Inserts an interior node (and its ancestors). For seeding and tests.
    pub fn seed_interior(&mut self, uri: &str, access: Access) {
        let Some(path) = normalize(uri) else { return };
        self.ensure_ancestors(&path);
        self.nodes.insert(path, CspNode::interior(access));
    }

    /// A local administrator's change (the Settings app, the registry, Group Policy), not an MDM
    /// command: sets the node's value, creating it (and its ancestors) in a creatable subtree such
    /// as the Policy CSP's `Config/<Area>/<Policy>`. No access check applies (the local
    /// administrator is not the MDM server), but the value must fit the node's format. The next
    /// Get from the server sees the new value: that is drift.
    pub fn set_local(&mut self, uri: &str, value: &str) -> Result<(), CspError> {
        let path = normalize(uri).ok_or_else(|| CspError::BadUri(uri.to_owned()))?;
        if let Some(node) = self.nodes.get_mut(&path) {
            if node.format == Format::Node || !node.format.accepts(value) {
                return Err(CspError::BadValue(uri.to_owned()));
            }
            node.value = Some(value.to_owned());
            return Ok(());
        }
        let rule = creatable(&path).ok_or_else(|| CspError::NotFound(uri.to_owned()))?;
        if rule.default_format == Format::Node {
            return Err(CspError::BadValue(uri.to_owned()));
        }
        self.ensure_ancestors(&path);
        self.nodes
            .insert(path, CspNode::leaf(rule.default_format, rule.access, value));
        Ok(())
    }

    /// A local administrator's removal of a node and its subtree (e.g. a policy reset to its
    /// default). Returns whether there was one.
    pub fn remove_local(&mut self, uri: &str) -> bool {
        let Some(path) = normalize(uri) else { return false };
        if path == "." || !self.nodes.contains_key(&path) {
            return false;
        }
        let prefix = format!("{path}/");
        self.nodes.retain(|k, _| k != &path && !k.starts_with(&prefix));
        true
    }

    /// Whether a user session exists; `./User/…` commands fail with 500 without one.
    pub fn set_user_session(&mut self, signed_in: bool) {
        self.user_session = signed_in;
    }

    pub fn user_session(&self) -> bool {
        self.user_session
    }

    /// The node at `uri` (aliases normalised), if any.
    pub fn node(&self, uri: &str) -> Option<&CspNode> {
        self.nodes.get(&normalize(uri)?)
    }

    /// The value of the leaf at `uri`, if any.
    pub fn value(&self, uri: &str) -> Option<&str> {
        self.node(uri)?.value.as_deref()
    }

    /// Whether a node exists at `uri`.
    pub fn exists(&self, uri: &str) -> bool {
        self.node(uri).is_some()
    }

    /// Direct children names of `uri`, in order.
    pub fn children(&self, uri: &str) -> Vec<String> {
        let Some(path) = normalize(uri) else {
            return Vec::new();
        };
        let prefix = if path == "." {
            "./".to_owned()
        } else {
            format!("{path}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| {
                let rest = &k[prefix.len()..];
                (!rest.contains('/')).then(|| rest.to_owned())
            })
            .collect()
    }

    pub fn snapshot(&self) -> TreeSnapshot {
        TreeSnapshot(self.nodes.clone())
    }

    pub fn restore(&mut self, snapshot: TreeSnapshot) {
        self.nodes = snapshot.0;
    }

    /// Paths of every node, for diagnostics.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    fn resolve(&self, uri: &str) -> Result<String, CspError> {
        let path = normalize(uri).ok_or_else(|| CspError::BadUri(uri.to_owned()))?;
        if (path == "./User" || path.starts_with("./User/")) && !self.user_session {
            return Err(CspError::NoUserSession(uri.to_owned()));
        }
        Ok(path)
    }

    /// Get (MS-MDM §2.2.7.6).
    pub fn get(&self, uri: &str) -> Result<GetResult, CspError> {
        let path = self.resolve(uri)?;
        let node = self
            .nodes
            .get(&path)
            .ok_or_else(|| CspError::NotFound(uri.to_owned()))?;
        if !node.access.contains(Access::GET) && node.format != Format::Node {
            return Err(CspError::NotAllowed(uri.to_owned()));
        }
        if node.format == Format::Node {
            return Ok(GetResult {
                format: Format::Node,
                mime: None,
                data: self.children(&path).join("/"),
            });
        }
        let data = if path == LOCAL_TIME {
            local_time()
        } else {
            node.value.clone().unwrap_or_default()
        };
        Ok(GetResult {
            format: node.format,
            mime: node.mime.clone(),
            data,
        })
    }

    /// Add (MS-MDM §2.2.7.1): creates a node in a creatable subtree; 418 when it exists.
    pub fn add(
        &mut self,
        uri: &str,
        format: Option<&str>,
        mime: Option<&str>,
        data: Option<&str>,
    ) -> Result<u16, CspError> {
        let path = self.resolve(uri)?;
        if self.refused.contains(&path) {
            return Err(CspError::Refused(uri.to_owned()));
        }
        if self.nodes.contains_key(&path) {
            return Err(CspError::AlreadyExists(uri.to_owned()));
        }
        let Some(rule) = creatable(&path) else {
            return Err(self.not_creatable(&path, uri));
        };
        self.create(&path, uri, &rule, format, mime, data)?;
        Ok(200)
    }

    /// Replace (MS-MDM §2.2.7.7): updates a writable leaf; in creatable subtrees it creates the node
    /// (Policy CSP semantics).
    pub fn replace(
        &mut self,
        uri: &str,
        format: Option<&str>,
        mime: Option<&str>,
        data: Option<&str>,
    ) -> Result<u16, CspError> {
        let path = self.resolve(uri)?;
        if self.refused.contains(&path) {
            return Err(CspError::Refused(uri.to_owned()));
        }
        let rule = creatable(&path);
        let Some(node) = self.nodes.get_mut(&path) else {
            return match rule {
                Some(rule) => self.create(&path, uri, &rule, format, mime, data).map(|()| 200),
                None => Err(CspError::NotFound(uri.to_owned())),
            };
        };
        if node.format == Format::Node || !node.access.contains(Access::REPLACE) {
            return Err(CspError::NotAllowed(uri.to_owned()));
        }
        // Dynamic nodes take the format the server declares; fixed nodes keep their DDF format.
        let fmt = match (rule.is_some(), format.and_then(Format::parse)) {
            (true, Some(f)) => f,
            _ => node.format,
        };
        let data = data.unwrap_or_default();
        if !fmt.accepts(data) {
            return Err(CspError::BadValue(uri.to_owned()));
        }
        node.format = fmt;
        node.value = Some(data.to_owned());
        if let Some(m) = mime {
            node.mime = Some(m.to_owned());
        }
        Ok(200)
    }

    /// Delete (MS-MDM §2.2.7.4): removes the node and its subtree.
    pub fn delete(&mut self, uri: &str) -> Result<u16, CspError> {
        let path = self.resolve(uri)?;
        let node = self
            .nodes
            .get(&path)
            .ok_or_else(|| CspError::NotFound(uri.to_owned()))?;
        if !node.access.contains(Access::DELETE) {
            return Err(CspError::NotAllowed(uri.to_owned()));
        }
        let prefix = format!("{path}/");
        self.nodes.retain(|k, _| k != &path && !k.starts_with(&prefix));
        Ok(200)
    }

    /// Exec (MS-MDM §2.2.7.5). `format` is the item's Meta Format; an `xml` payload must be
    /// well-formed (400 otherwise).
    pub fn exec(&mut self, uri: &str, format: Option<&str>, data: Option<&str>) -> Result<ExecOutcome, CspError> {
        let path = self.resolve(uri)?;
        let node = self
            .nodes
            .get(&path)
            .ok_or_else(|| CspError::NotFound(uri.to_owned()))?;
        if !node.access.contains(Access::EXEC) {
            return Err(CspError::NotAllowed(uri.to_owned()));
        }
        let declared = format.and_then(Format::parse);
        if declared == Some(Format::Xml) && !Format::Xml.accepts(data.unwrap_or_default()) {
            return Err(CspError::BadValue(uri.to_owned()));
        }
        let name = last_segment(&path).to_owned();
        let parent_path = parent(&path).unwrap_or_default();
        let effect = if parent_path == format!("{DEVICE_MSFT}/RemoteWipe")
            || path == format!("{DEVICE_MSFT}/AutomaticRedeployment/doAutomaticRedeployment")
        {
            ExecEffect::Wipe(name)
        } else if path == format!("{DEVICE_MSFT}/Reboot/RebootNow") {
            ExecEffect::Reboot
        } else if path == format!("{DEVICE_MSFT}/RemoteLock/Lock") {
            ExecEffect::Lock
        } else if under(&path, MSI_ROOT) && name == "DownloadInstall" {
            // The install itself "runs" now: record its final state in MSI/{id}/Status
            // (EnterpriseDesktopAppManagement CSP: 70 = installed successfully).
            let status = format!("{parent_path}/Status");
            self.nodes.insert(status, CspNode::leaf(Format::Int, Access::GET, "70"));
            return Ok(ExecOutcome {
                status: 202,
                effect: ExecEffect::MsiInstall {
                    loc_uri: uri.trim().to_owned(),
                },
            });
        } else {
            ExecEffect::None
        };
        Ok(ExecOutcome { status: 200, effect })
    }

    fn not_creatable(&self, path: &str, uri: &str) -> CspError {
        match parent(path) {
            Some(p) if self.nodes.contains_key(p) => CspError::NotAllowed(uri.to_owned()),
            _ => CspError::NotFound(uri.to_owned()),
        }
    }

    fn create(
        &mut self,
        path: &str,
        uri: &str,
        rule: &Creatable,
        format: Option<&str>,
        mime: Option<&str>,
        data: Option<&str>,
    ) -> Result<(), CspError> {
        if rule.needs_parent && !parent(path).is_some_and(|p| self.nodes.contains_key(p)) {
            return Err(CspError::NotFound(uri.to_owned()));
        }
        let fmt = format.and_then(Format::parse).unwrap_or(rule.default_format);
        // Interior nodes of a dynamic subtree must be created with Format node (or none).
        if rule.default_format == Format::Node && fmt != Format::Node {
            return Err(CspError::BadValue(uri.to_owned()));
        }
        let node = if fmt == Format::Node {
            CspNode {
                format: Format::Node,
                value: None,
                access: rule.access,
                mime: None,
            }
        } else {
            let data = data.unwrap_or_default();
            if !fmt.accepts(data) {
                return Err(CspError::BadValue(uri.to_owned()));
            }
            CspNode {
                format: fmt,
                value: Some(data.to_owned()),
                access: rule.access,
                mime: mime.map(str::to_owned),
            }
        };
        self.ensure_ancestors(path);
        self.nodes.insert(path.to_owned(), node);
        Ok(())
    }

    /// `syncml:auth-md5` client credentials provisioned under `./SyncML/DMAcc/<acct>/AppAuth/<x>`:
    /// the AppAuth entry named `CLCRED` or whose `AAuthLevel` is `CLCRED` (OMA-TS-DM_StdObj DMAcc).
    pub fn client_credentials(&self) -> Option<(String, String)> {
        let entries: Vec<&str> = self
            .nodes
            .keys()
            .filter_map(|k| k.strip_suffix("/AAuthName"))
            .filter(|p| p.starts_with("./SyncML/DMAcc/"))
            .collect();
        entries.into_iter().find_map(|entry| {
            let is_client =
                last_segment(entry) == "CLCRED" || self.value(&format!("{entry}/AAuthLevel")) == Some("CLCRED");
            if !is_client {
                return None;
            }
            let name = self.value(&format!("{entry}/AAuthName"))?;
            let secret = self.value(&format!("{entry}/AAuthSecret"))?;
            Some((name.to_owned(), secret.to_owned()))
        })
    }
}

/// DevDetail `Ext/Microsoft/LocalTime`: the client's local time, ISO 8601 (Learn DevDetail CSP).
fn local_time() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn tree() -> CspTree {
        CspTree::windows_11(&DeviceProfile::random("B5B954E81FBCB94EB79BD08BE625F4EE"))
    }

    const POL: &str = "./Device/Vendor/MSFT/Policy/Config/Update/ActiveHoursStart";

    #[test]
    fn refused_writes_answer_500_until_allowed() {
        let mut t = tree();
        t.refuse_writes(POL);
        let e = t.replace(POL, Some("int"), None, Some("8")).unwrap_err();
        assert_eq!(e.status(), 500);
        assert_eq!(t.add(POL, Some("int"), None, Some("8")).unwrap_err().status(), 500);
        assert!(t.get(POL).is_err(), "nothing was written");
        t.allow_writes(POL);
        assert_eq!(t.replace(POL, Some("int"), None, Some("8")).unwrap(), 200);
    }

    #[test]
    fn profile_is_deterministic() {
        let a = DeviceProfile::random("ABC");
        assert_eq!(a, DeviceProfile::random("ABC"));
        assert_ne!(a.serial_number, DeviceProfile::random("ABD").serial_number);
        assert_eq!(a.hw_dev_id, "ABCABC");
        assert!(a.device_name.starts_with("DESKTOP-"));
    }

    #[test]
    fn get_leaf_and_interior() {
        let t = tree();
        let r = t.get("./DevDetail/SwV").unwrap();
        assert_eq!((r.format, r.data.as_str()), (Format::Chr, "10.0.26100.2605"));
        let r = t.get("./DevInfo").unwrap();
        assert_eq!(r.format, Format::Node);
        assert_eq!(r.data, "DevId/DmV/Lang/Man/Mod");
        let r = t.get("./DevDetail/Ext/Microsoft/TotalRAM").unwrap();
        assert_eq!(r.format, Format::Int);
        assert!(!t.get(LOCAL_TIME).unwrap().data.is_empty());
        assert_eq!(t.get("./DevDetail/Nope").unwrap_err().status(), 404);
        assert_eq!(t.get("/DevDetail/SwV").unwrap_err().status(), 400);
        // Exec-only nodes cannot be read.
        assert_eq!(
            t.get("./Device/Vendor/MSFT/Reboot/RebootNow").unwrap_err().status(),
            405
        );
    }

    #[test]
    fn aliases_are_normalised() {
        let mut t = tree();
        assert_eq!(
            t.get("./Vendor/MSFT/DeviceStatus/OS/Edition").unwrap(),
            t.get("./Device/Vendor/MSFT/DeviceStatus/OS/Edition").unwrap()
        );
        t.replace(
            "./Vendor/MSFT/Policy/Config/Camera/AllowCamera",
            Some("int"),
            None,
            Some("0"),
        )
        .unwrap();
        assert_eq!(
            t.value("./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera"),
            Some("0")
        );
        assert_eq!(normalize("./Vendor/MSFT/"), Some("./Device/Vendor/MSFT".into()));
        assert_eq!(
            normalize("./user/vendor/MSFT/Policy/Config/X"),
            Some("./User/Vendor/MSFT/Policy/Config/X".into()),
            "scope segments ignore ASCII case (Learn's lower-case example)"
        );
        assert_eq!(
            normalize("./device/Vendor/MSFT/X"),
            Some("./Device/Vendor/MSFT/X".into())
        );
        assert_eq!(normalize("./vendor/MSFT/X"), Some("./Device/Vendor/MSFT/X".into()));
        assert_eq!(normalize("./a//b"), None);
        assert_eq!(normalize("./a/../b"), None);
    }

    #[test]
    fn status_table() {
        let mut t = tree();
        // Add creates, Add again 418, Add on a fixed CSP 405, under an unknown parent 404.
        assert_eq!(t.add(POL, Some("int"), None, Some("8")), Ok(200));
        assert_eq!(t.add(POL, Some("int"), None, Some("8")).unwrap_err().status(), 418);
        assert_eq!(
            t.add("./DevDetail/Foo", None, None, Some("x")).unwrap_err().status(),
            405
        );
        assert_eq!(
            t.add("./Vendor/MSFT/Nope/X", None, None, Some("x"))
                .unwrap_err()
                .status(),
            404
        );
        // Replace: read-only 405, unknown outside creatable subtrees 404, writable 200.
        assert_eq!(
            t.replace("./DevDetail/SwV", None, None, Some("1"))
                .unwrap_err()
                .status(),
            405
        );
        assert_eq!(
            t.replace("./DevDetail/Nope", None, None, Some("1"))
                .unwrap_err()
                .status(),
            404
        );
        let poll = "./Vendor/MSFT/DMClient/Provider/Steward/Poll/IntervalForFirstSetOfRetries";
        assert_eq!(t.replace(poll, Some("int"), None, Some("1")), Ok(200));
        assert_eq!(t.value(poll), Some("1"));
        // Format mismatch → 400.
        assert_eq!(
            t.replace(poll, Some("int"), None, Some("soon")).unwrap_err().status(),
            400
        );
        assert_eq!(
            t.add(
                "./Device/Vendor/MSFT/Policy/Config/A/B",
                Some("bool"),
                None,
                Some("yes")
            )
            .unwrap_err()
            .status(),
            400
        );
        // Replace creates-or-updates in the Policy CSP.
        assert_eq!(t.replace(POL, Some("int"), None, Some("9")), Ok(200));
        assert_eq!(t.value(POL), Some("9"));
        // Delete: 200, then 404; fixed nodes 405.
        assert_eq!(t.delete(POL), Ok(200));
        assert_eq!(t.delete(POL).unwrap_err().status(), 404);
        assert_eq!(t.delete("./DevInfo/Man").unwrap_err().status(), 405);
        // Exec on a non-exec node 405, unknown 404.
        assert_eq!(t.exec("./DevInfo/Man", None, None).unwrap_err().status(), 405);
        assert_eq!(
            t.exec("./Device/Vendor/MSFT/Nope", None, None).unwrap_err().status(),
            404
        );
    }

    #[test]
    fn exec_effects() {
        let mut t = tree();
        let w = t
            .exec("./Device/Vendor/MSFT/RemoteWipe/doWipeProtected", None, None)
            .unwrap();
        assert_eq!(
            w,
            ExecOutcome {
                status: 200,
                effect: ExecEffect::Wipe("doWipeProtected".into())
            }
        );
        let r = t.exec("./Vendor/MSFT/Reboot/RebootNow", None, None).unwrap();
        assert_eq!(r.effect, ExecEffect::Reboot);
        let l = t.exec("./Vendor/MSFT/RemoteLock/Lock", None, None).unwrap();
        assert_eq!(l.effect, ExecEffect::Lock);
    }

    #[test]
    fn msi_download_install() {
        let mut t = tree();
        let id = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7BA1B2%7D";
        let di = format!("{id}/DownloadInstall");
        // The product node must exist first (Add with Format node), then DownloadInstall.
        assert_eq!(t.add(&di, None, None, None).unwrap_err().status(), 404);
        assert_eq!(t.add(id, Some("node"), None, None), Ok(200));
        assert_eq!(t.add(&di, None, None, None), Ok(200));
        let job = "<MsiInstallJob id=\"{A1B2}\"><Product Version=\"1.0\"/></MsiInstallJob>";
        assert_eq!(
            t.exec(&di, Some("xml"), Some("<MsiInstallJob>")).unwrap_err().status(),
            400
        );
        let out = t.exec(&di, Some("xml"), Some(job)).unwrap();
        assert_eq!(out.status, 202);
        assert_eq!(out.effect, ExecEffect::MsiInstall { loc_uri: di.clone() });
        assert_eq!(t.value(&format!("{id}/Status")), Some("70"));
    }

    #[test]
    fn user_scope_needs_a_user() {
        let mut t = tree();
        let u = "./User/Vendor/MSFT/Policy/Config/Start/HideSleep";
        t.set_user_session(false);
        assert_eq!(t.add(u, Some("int"), None, Some("1")).unwrap_err().status(), 500);
        assert_eq!(t.get(u).unwrap_err().status(), 500);
        t.set_user_session(true);
        assert_eq!(t.add(u, Some("int"), None, Some("1")), Ok(200));
        assert_eq!(t.get(u).unwrap().data, "1");
    }

    #[test]
    fn dmacc_credentials_and_secret_is_write_only() {
        let mut t = tree();
        let base = "./SyncML/DMAcc/0x0000800cABF8/AppAuth/CLCRED";
        assert_eq!(
            t.replace(&format!("{base}/AAuthName"), None, None, Some("dev")),
            Ok(200)
        );
        assert_eq!(t.client_credentials(), None);
        assert_eq!(
            t.replace(&format!("{base}/AAuthSecret"), None, None, Some("s3")),
            Ok(200)
        );
        assert_eq!(t.client_credentials(), Some(("dev".into(), "s3".into())));
        assert_eq!(t.get(&format!("{base}/AAuthSecret")).unwrap_err().status(), 405);
    }

    #[test]
    fn policy_nodes_answer_like_windows_and_drift_locally() {
        let mut t = tree();
        let node = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
        // Missing: Get and Delete 404; Replace creates it; Get returns what was set.
        assert_eq!(t.get(node).unwrap_err().status(), 404);
        assert_eq!(t.delete(node).unwrap_err().status(), 404);
        assert_eq!(t.replace(node, Some("int"), None, Some("0")), Ok(200));
        assert_eq!(t.get(node).unwrap().data, "0");
        // Through the legacy spelling too.
        assert_eq!(
            t.get("./Vendor/MSFT/Policy/Config/Camera/AllowCamera").unwrap().data,
            "0"
        );
        // A local administrator changes it: the next Get sees the drift.
        t.set_local(node, "1").unwrap();
        assert_eq!(t.get(node).unwrap().data, "1");
        assert_eq!(
            t.set_local(node, "one").unwrap_err().status(),
            400,
            "an int node keeps its format"
        );
        // And removes it: gone, as for the server.
        assert!(t.remove_local(node));
        assert!(!t.remove_local(node));
        assert_eq!(t.get(node).unwrap_err().status(), 404);
        // A node that did not exist is created where the CSP allows it, refused elsewhere.
        let other = "./User/Vendor/MSFT/Policy/Config/Start/HideSleep";
        t.set_local(other, "1").unwrap();
        assert_eq!(t.get(other).unwrap().data, "1");
        assert_eq!(
            t.set_local("./Device/Vendor/MSFT/Nope/X", "1").unwrap_err().status(),
            404
        );
        assert_eq!(t.add(node, Some("int"), None, Some("2")), Ok(200));
        assert_eq!(t.add(node, Some("int"), None, Some("2")).unwrap_err().status(), 418);
    }

    #[test]
    fn defender_configuration_leaves_are_written_read_and_deleted() {
        let mut t = tree();
        let node = "./Device/Vendor/MSFT/Defender/Configuration/HideExclusionsFromLocalAdmins";
        assert_eq!(t.get(node).unwrap_err().status(), 404);
        assert_eq!(t.replace(node, Some("int"), None, Some("1")), Ok(200));
        assert_eq!(t.get(node).unwrap().data, "1");
        // The default format is int: a value that is not one is refused.
        let other = "./Device/Vendor/MSFT/Defender/Configuration/EnableFileHashComputation";
        assert_eq!(t.replace(other, None, None, Some("yes")).unwrap_err().status(), 400);
        assert_eq!(t.delete(node), Ok(200));
        assert_eq!(t.get(node).unwrap_err().status(), 404);
        // Only the Configuration leaves: deeper paths and other Defender nodes are not created.
        assert_eq!(
            t.replace(&format!("{node}/Deeper"), Some("int"), None, Some("1"))
                .unwrap_err()
                .status(),
            404
        );
        assert_eq!(
            t.replace("./Device/Vendor/MSFT/Defender/Scan", Some("int"), None, Some("1"))
                .unwrap_err()
                .status(),
            404
        );
    }

    #[test]
    fn snapshot_restore() {
        let mut t = tree();
        let snap = t.snapshot();
        t.add(POL, Some("int"), None, Some("1")).unwrap();
        t.restore(snap);
        assert!(!t.exists(POL));
        assert_eq!(t, tree());
    }
}

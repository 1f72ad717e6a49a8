//! SyncML writer: compact (no insignificant whitespace), deterministic, elements in the DTD order
//! MS-MDM §2.2 requires ("the XML in the document MUST adhere to the explicit order defined in the
//! DTD"; OMA-TS-DM_RepPro §5).
//!
//! Output shape, matching what Windows and Intune exchange:
//! - `<SyncML xmlns="SYNCML:SYNCML1.2">`, no XML declaration (UTF-8 is the XML default);
//! - every MetInf child carries its own `xmlns="syncml:metinf"` (`<Meta><Format xmlns=…>`);
//! - SyncBody always declares `xmlns:msft="http://schemas.microsoft.com/MobileDevice/MDM"`
//!   (MS-MDM §2.2.4.3). Declaring an unused prefix is harmless, and doing it unconditionally means a
//!   raw [`ItemData::Xml`] fragment that uses `msft:` is always in scope, the context in which
//!   [`super::is_well_formed_fragment`] checks fragments.
//!
//! Escaping: all character data except [`ItemData::Xml`] is escaped (`<`, `>`, `&`; `\r` as `&#13;`
//! so it survives XML end-of-line normalisation). Characters XML 1.0 §2.2 forbids (C0 controls other
//! than tab, LF, CR, and U+FFFE/U+FFFF) cannot be represented at all, so they are replaced with
//! U+FFFD: the writer never emits an ill-formed document. [`ItemData::Xml`] is emitted verbatim and
//! NOT validated: callers MUST check it with [`super::is_well_formed_fragment`] first.

use super::{Command, Container, Item, ItemCommand, ItemData, LocTarget, Meta, NS_METINF, NS_MSFT, NS_SYNCML, SyncMl};

/// Output abstraction so one serialiser both writes ([`String`]) and measures ([`Counter`]).
trait Sink {
    fn put(&mut self, s: &str);
}

impl Sink for String {
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

/// Counts bytes instead of writing them.
struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, s: &str) {
        self.0 += s.len();
    }
}

/// Serialises `msg` (see the module docs for the exact shape and escaping rules).
pub fn write(msg: &SyncMl) -> String {
    let mut out = String::with_capacity(512 + msg.body.commands.iter().map(estimated_size).sum::<usize>());
    write_into(msg, &mut out);
    out
}

/// [`write()`] appending to an existing buffer (e.g. one reused across messages).
pub fn write_into(msg: &SyncMl, out: &mut String) {
    message(out, msg);
}

/// Byte length `cmd` takes in [`write()`]'s output. It is exact (the writer's own code runs against a
/// byte counter), costs one pass over the command's strings and allocates nothing, so a session
/// engine can pack commands into messages under the device's MaxMsgSize (OMA-TS-DM_Protocol-V1_2
/// multiple messages per package). Message overhead (SyncHdr, the SyncHdr Status, `<Final/>`) is not
/// included.
pub fn estimated_size(cmd: &Command) -> usize {
    let mut c = Counter(0);
    command(&mut c, cmd);
    c.0
}

fn message(o: &mut impl Sink, msg: &SyncMl) {
    let h = &msg.header;
    o.put("<SyncML xmlns=\"");
    o.put(NS_SYNCML);
    o.put("\"><SyncHdr>");
    leaf(o, "VerDTD", &h.ver_dtd);
    leaf(o, "VerProto", &h.ver_proto);
    leaf(o, "SessionID", &h.session_id);
    o.put("<MsgID>");
    o.put(itoa(&mut [0; 20], u64::from(h.msg_id)));
    o.put("</MsgID>");
    if let Some(t) = &h.target {
        loc(o, "Target", t);
    }
    if let Some(s) = &h.source {
        loc(o, "Source", s);
    }
    if let Some(c) = &h.cred {
        o.put("<Cred>");
        if let Some(m) = &c.meta {
            meta(o, m);
        }
        leaf(o, "Data", &c.data);
        o.put("</Cred>");
    }
    if let Some(m) = &h.meta {
        meta(o, m);
    }
    o.put("</SyncHdr><SyncBody xmlns:msft=\"");
    o.put(NS_MSFT);
    o.put("\">");
    for c in &msg.body.commands {
        command(o, c);
    }
    if msg.body.final_ {
        o.put("<Final/>");
    }
    o.put("</SyncBody></SyncML>");
}

fn command(o: &mut impl Sink, cmd: &Command) {
    let name = cmd.name();
    open(o, name);
    leaf(o, "CmdID", cmd.cmd_id());
    match cmd {
        // MS-MDM §2.2.6.1 / OMA-TS-DM_RepPro §6.4:
        // (CmdID, MsgRef, CmdRef, Cmd, Cred?, TargetRef*, SourceRef*, Chal?, Data, Item*)
        Command::Status(s) => {
            leaf(o, "MsgRef", &s.msg_ref);
            leaf(o, "CmdRef", &s.cmd_ref);
            leaf(o, "Cmd", &s.cmd);
            for t in &s.target_ref {
                leaf(o, "TargetRef", t);
            }
            for t in &s.source_ref {
                leaf(o, "SourceRef", t);
            }
            if let Some(m) = &s.chal {
                o.put("<Chal>");
                meta(o, m);
                o.put("</Chal>");
            }
            leaf(o, "Data", &s.data);
            items(o, &s.items);
        }
        // MS-MDM §2.2.7.8: (CmdID, MsgRef?, CmdRef, Meta?, TargetRef?, SourceRef?, Item+)
        Command::Results(r) => {
            if let Some(m) = &r.msg_ref {
                leaf(o, "MsgRef", m);
            }
            leaf(o, "CmdRef", &r.cmd_ref);
            if let Some(m) = &r.meta {
                meta(o, m);
            }
            items(o, &r.items);
        }
        // MS-MDM §2.2.7.2: (CmdID, Data, Item*)
        Command::Alert(a) => {
            leaf(o, "Data", &a.data);
            items(o, &a.items);
        }
        // MS-MDM §2.2.7.1/.4/.5/.6/.7: (CmdID, Meta?, Item+)
        Command::Get(c) | Command::Add(c) | Command::Replace(c) | Command::Delete(c) | Command::Exec(c) => {
            item_command(o, c);
        }
        // MS-MDM §2.2.7.3 / OMA-TS-DM_RepPro §6.5: (CmdID, Meta?, commands+)
        Command::Atomic(c) | Command::Sequence(c) => container(o, c),
        // Only the reader makes these; nothing but the CmdID is known.
        Command::Refused(_) => {}
    }
    close(o, name);
}

fn item_command(o: &mut impl Sink, c: &ItemCommand) {
    if let Some(m) = &c.meta {
        meta(o, m);
    }
    items(o, &c.items);
}

fn container(o: &mut impl Sink, c: &Container) {
    if let Some(m) = &c.meta {
        meta(o, m);
    }
    for cmd in &c.commands {
        command(o, cmd);
    }
}

/// OMA-TS-DM_RepPro §6.3 Item: (Target?, Source?, Meta?, Data?, MoreData?)
fn items(o: &mut impl Sink, items: &[Item]) {
    for it in items {
        o.put("<Item>");
        if let Some(t) = &it.target {
            loc(o, "Target", t);
        }
        if let Some(s) = &it.source {
            loc(o, "Source", s);
        }
        if let Some(m) = &it.meta {
            meta(o, m);
        }
        match &it.data {
            Some(ItemData::Text(t)) => leaf(o, "Data", t),
            Some(ItemData::Xml(x)) => {
                o.put("<Data>");
                o.put(x);
                o.put("</Data>");
            }
            None => {}
        }
        if it.more_data {
            o.put("<MoreData/>");
        }
        o.put("</Item>");
    }
}

fn loc(o: &mut impl Sink, name: &str, l: &LocTarget) {
    open(o, name);
    leaf(o, "LocURI", &l.loc_uri);
    if let Some(n) = &l.loc_name {
        leaf(o, "LocName", n);
    }
    close(o, name);
}

/// MetInf children in the OMA-TS-SyncML_MetaInfo-V1_2 DTD order (Format, Type, Mark, Size,
/// NextNonce, MaxMsgSize, MaxObjSize), each with its own `xmlns="syncml:metinf"` like Windows.
fn meta(o: &mut impl Sink, m: &Meta) {
    let mut buf = [0; 20];
    o.put("<Meta>");
    if let Some(v) = &m.format {
        metinf(o, "Format", v);
    }
    if let Some(v) = &m.type_ {
        metinf(o, "Type", v);
    }
    if let Some(v) = &m.mark {
        metinf(o, "Mark", v);
    }
    if let Some(n) = m.size {
        metinf(o, "Size", itoa(&mut buf, n));
    }
    if let Some(v) = &m.next_nonce {
        metinf(o, "NextNonce", v);
    }
    if let Some(n) = m.max_msg_size {
        metinf(o, "MaxMsgSize", itoa(&mut buf, n));
    }
    if let Some(n) = m.max_obj_size {
        metinf(o, "MaxObjSize", itoa(&mut buf, n));
    }
    o.put("</Meta>");
}

fn metinf(o: &mut impl Sink, name: &str, value: &str) {
    o.put("<");
    o.put(name);
    o.put(" xmlns=\"");
    o.put(NS_METINF);
    o.put("\">");
    text(o, value);
    close(o, name);
}

fn open(o: &mut impl Sink, name: &str) {
    o.put("<");
    o.put(name);
    o.put(">");
}

fn close(o: &mut impl Sink, name: &str) {
    o.put("</");
    o.put(name);
    o.put(">");
}

fn leaf(o: &mut impl Sink, name: &str, value: &str) {
    open(o, name);
    text(o, value);
    close(o, name);
}

/// Escaped character data (see the module docs): markup characters become entities, `\r` becomes
/// `&#13;`, characters outside the XML 1.0 §2.2 `Char` production become U+FFFD.
fn text(o: &mut impl Sink, s: &str) {
    let mut run = 0;
    for (i, ch) in s.char_indices() {
        let rep = match ch {
            '<' => "&lt;",
            '>' => "&gt;",
            '&' => "&amp;",
            '\r' => "&#13;",
            '\t' | '\n' => continue,
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => "\u{fffd}",
            _ => continue,
        };
        o.put(&s[run..i]);
        o.put(rep);
        run = i + ch.len_utf8();
    }
    o.put(&s[run..]);
}

/// Formats `n` in decimal into `buf` without allocating.
fn itoa(buf: &mut [u8; 20], mut n: u64) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

//! A check-in's configuration reconciliation, around the pure session step: before it, the
//! device's plan ([`steward_core::configuration::plan`]) is rendered into synthetic open commands
//! (one per operation, id = the operation's id, so it goes on the wire as the CmdID); after it,
//! everything the session engine recorded for those ids is taken out of the command commit — they
//! have no command rows — and handed to [`steward_core::configuration::absorb`], whose result is
//! the commit's `configuration`.
//!
//! When the check-in context loaded nothing ([`ConfigurationContext::loaded`] None: the device is
//! settled), [`Reconciliation::prepare`] returns None before allocating anything, and the message
//! is processed exactly as without profiles.

use std::collections::HashMap;

use steward_core::configuration::{self, ConfigurationContext, OpAnswers, Plan, VerifyPolicy};
use steward_core::{
    CheckinCommit, Command, CommandId, CommandOrigin, CommandState, Enrollment, Priority, status_is_success,
};
use steward_windows_proto::syncml::{self, SyncMl};
use time::OffsetDateTime;

use crate::commands::OmaDmCommand;
use crate::profile;
use crate::session::OmaDmSession;

/// The origin synthetic configuration commands carry (never stored: they have no rows).
pub const ORIGIN: &str = "configuration";

/// Why an offered operation was not sent (recorded on the device's setting row).
pub mod held {
    pub const NO_USER: &str = "waiting for a user to sign in";
    pub const NO_ROOM: &str = "no room left in this message";
}

/// Longest device error text kept per setting.
const MAX_ERROR_CHARS: usize = 256;

/// One operation offered to the session engine.
#[derive(Debug)]
struct Offered {
    /// Index in the plan's ops.
    op: usize,
    user_scoped: bool,
}

/// The device's plan for this message and the operations offered from it.
#[derive(Debug)]
pub struct Reconciliation {
    plan: Plan,
    offered: HashMap<CommandId, Offered>,
    commands: Vec<Command>,
}

impl Reconciliation {
    /// Plans the device's configuration when the context loaded it; None otherwise (no work, no
    /// allocation). An operation whose stored setting no longer renders is logged and not offered;
    /// its row waits for a new profile version.
    pub fn prepare(enrollment: &Enrollment, ctx: &ConfigurationContext, now: OffsetDateTime) -> Option<Self> {
        ctx.loaded.as_ref()?;
        let plan = configuration::plan(enrollment.id, ctx, now)?;
        let mut offered = HashMap::with_capacity(plan.ops.len());
        let mut commands = Vec::with_capacity(plan.ops.len());
        for (i, op) in plan.ops.iter().enumerate() {
            let body = match profile::render(op) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(device.id = %enrollment.device_id, path = %op.path, error = %e, "setting not sent: it cannot be rendered");
                    continue;
                }
            };
            offered.insert(
                op.id,
                Offered {
                    op: i,
                    user_scoped: body.is_user_scoped(),
                },
            );
            commands.push(synthetic(enrollment, op, &body, now));
        }
        Some(Self {
            plan,
            offered,
            commands,
        })
    }

    /// The synthetic commands to append to the open commands (taken once).
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Moves everything the session engine recorded for the offered operations out of `commit`
    /// (outcomes with their events, completions, re-queues, sent marks) into
    /// `commit.configuration`, through [`configuration::absorb`]. `msg` is the device's message
    /// (for the error text Windows puts in a failed Status).
    pub fn finish(self, msg: &SyncMl, commit: &mut CheckinCommit, policy: &VerifyPolicy, now: OffsetDateTime) {
        let ours = |id: &CommandId| self.offered.contains_key(id);
        let (mut outcomes, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut commit.outcomes)
            .into_iter()
            .partition(|o| ours(&o.command_id));
        commit.outcomes = rest;
        let (sent, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut commit.sent).into_iter().partition(|id| ours(id));
        commit.sent = rest;
        commit.requeue.retain(|r| !ours(&r.command_id));
        commit.completions.retain(|c| !ours(&c.command_id));

        // A raw group sent as a Sequence is answered 200 whatever its commands did.
        for o in &mut outcomes {
            if let Some(op) = self.offered.get(&o.command_id).map(|x| &self.plan.ops[x.op]) {
                let code = profile::group_code(&op.setting, o.status_code, &o.child_codes);
                if code != o.status_code {
                    o.status_code = code;
                    o.state = CommandState::after_status(code);
                }
            }
        }

        let session = commit.session.key.clone();
        let signed_in = OmaDmSession::from_record(&commit.session)
            .and_then(|s| s.login_status)
            .is_some_and(|s| s == "user");
        let mut held_ops = Vec::new();
        for (id, o) in &self.offered {
            let op = &self.plan.ops[o.op];
            let answered = outcomes.iter().any(|x| x.command_id == *id);
            let in_flight_here = op.last_session.as_deref() == Some(session.as_str());
            if answered || in_flight_here || sent.contains(id) {
                continue;
            }
            let why = if o.user_scoped && !signed_in {
                held::NO_USER
            } else {
                held::NO_ROOM
            };
            held_ops.push((*id, why.to_owned()));
        }
        held_ops.sort();
        let errors = device_errors(msg, |id| ours(&id));
        commit.configuration = Some(configuration::absorb(
            &self.plan,
            &OpAnswers {
                session: &session,
                sent: &sent,
                outcomes: &outcomes,
                held: &held_ops,
                errors: &errors,
            },
            policy,
            now,
        ));
    }
}

/// The open command an operation is offered as: normal priority, pending unless it is in flight
/// (then `Sent`, with the session that sent it, so the engine does not send it twice in one
/// session and sends it again in the next if it was never answered).
fn synthetic(
    enrollment: &Enrollment,
    op: &configuration::SettingOp,
    body: &OmaDmCommand,
    now: OffsetDateTime,
) -> Command {
    Command {
        id: op.id,
        enrollment_id: enrollment.id,
        payload: body.to_payload(),
        priority: Priority::ADMIN,
        origin: CommandOrigin::Other(ORIGIN.into()),
        state: if op.last_session.is_some() {
            CommandState::Sent
        } else {
            CommandState::Pending
        },
        created_at: now,
        expires_at: None,
        send_count: 0,
        last_sent_at: None,
        last_session: op.last_session.clone(),
        status_code: None,
        completed_at: None,
    }
}

/// The device's own error text per answered operation: Windows puts it in a failed Status's Item
/// Data as `<msft:originalerror>0x…</msft:originalerror>` (MS-MDM, with `xmlns:msft` on SyncBody;
/// seen in the interop corpus' Atomic failure capture), for the command itself or, in a group, for
/// a child (CmdRef `<op>.<n>`). The first one per operation is kept.
fn device_errors(msg: &SyncMl, ours: impl Fn(CommandId) -> bool) -> Vec<(CommandId, String)> {
    let mut out: Vec<(CommandId, String)> = Vec::new();
    for c in &msg.body.commands {
        let syncml::Command::Status(s) = c else { continue };
        if s.code().is_none_or(status_is_success) {
            continue;
        }
        let id_text = s.cmd_ref.split('.').next().unwrap_or_default();
        let Ok(id) = id_text.parse::<CommandId>() else { continue };
        if !ours(id) || out.iter().any(|(x, _)| *x == id) {
            continue;
        }
        if let Some(text) = s
            .items
            .iter()
            .find_map(|i| i.data.as_ref().and_then(|d| error_text(d.as_str())))
        {
            out.push((id, text));
        }
    }
    out
}

/// `0x86000002` out of `<msft:originalerror>0x86000002</msft:originalerror>`, or a plain text as
/// it is (trimmed, bounded).
fn error_text(data: &str) -> Option<String> {
    let data = data.trim();
    let inner = match (data.find('>'), data.rfind("</")) {
        (Some(start), Some(end)) if data.starts_with('<') && start < end => &data[start + 1..end],
        _ => data,
    };
    let inner = inner.trim();
    (!inner.is_empty() && !inner.contains('<')).then(|| inner.chars().take(MAX_ERROR_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use steward_core::configuration::{
        AssignedProfile, Assignment, DeviceConfiguration, ProfileId, Remediation, Setting, SettingStatus,
    };
    use steward_core::{EventKind, OnRemove, SessionRecord};
    use steward_windows_proto::syncml::{Alert, Command as Sc, Item, ItemData, Meta, Status, SyncBody, SyncHdr};

    use super::*;
    use crate::commands::{CommandItem, Verb};
    use crate::session::tests::{DEVICE, URL, enrollment};
    use crate::session::{self, InventoryPolicy, PollPolicy, SessionInput};

    const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
    const USER_NODE: &str = "./User/Vendor/MSFT/Policy/Config/Start/HideSleep";

    fn setting(path: &str) -> Setting {
        Setting {
            path: path.into(),
            format: "int".into(),
            verb: "replace".into(),
            value: "0".into(),
            type_: None,
            readable: true,
            on_remove: OnRemove::Delete,
            remove_path: None,
        }
    }

    fn context(rows: Vec<steward_core::configuration::DeviceSetting>) -> ConfigurationContext {
        ConfigurationContext {
            epoch: 1,
            state: Default::default(),
            loaded: Some(DeviceConfiguration {
                groups: vec![],
                candidates: vec![AssignedProfile {
                    id: ProfileId::new(),
                    name: "p".into(),
                    priority: 100,
                    remediation: Remediation::Remediate,
                    created_at: OffsetDateTime::UNIX_EPOCH,
                    version: 1,
                    assignment: Assignment {
                        all: true,
                        ..Default::default()
                    },
                    settings: vec![setting(CAMERA), setting(USER_NODE)],
                    config_lock: false,
                }],
                settings: rows,
                ..Default::default()
            }),
        }
    }

    fn admin_command(e: &Enrollment) -> Command {
        let body = OmaDmCommand::single(
            Verb::Get,
            CommandItem {
                target: "./DevDetail/SwV".into(),
                format: None,
                type_: None,
                data: None,
            },
        );
        Command {
            id: CommandId::new(),
            enrollment_id: e.id,
            payload: body.to_payload(),
            priority: 0,
            origin: CommandOrigin::Admin,
            state: CommandState::Pending,
            created_at: OffsetDateTime::now_utc(),
            expires_at: None,
            send_count: 0,
            last_sent_at: None,
            last_session: None,
            status_code: None,
            completed_at: None,
        }
    }

    fn st(cmd_ref: &str, cmd: &str, code: u16, error: Option<&str>) -> Sc {
        Sc::Status(Status {
            cmd_id: "9".into(),
            msg_ref: "1".into(),
            cmd_ref: cmd_ref.into(),
            cmd: cmd.into(),
            data: code.to_string(),
            items: error
                .map(|e| Item {
                    data: Some(ItemData::Xml(format!("<msft:originalerror>{e}</msft:originalerror>"))),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        })
    }

    fn message(msg_id: u32, commands: Vec<Sc>) -> SyncMl {
        SyncMl {
            header: SyncHdr::new("1A", msg_id, URL, DEVICE),
            body: SyncBody { commands, final_: true },
        }
    }

    /// One check-in as manage.rs runs it: prepare, process, finish.
    fn checkin(
        e: &Enrollment,
        msg: &SyncMl,
        prev: Option<&SessionRecord>,
        open: &[Command],
        cfg: &ConfigurationContext,
    ) -> session::SessionOutput {
        let now = OffsetDateTime::now_utc();
        let mut open = open.to_vec();
        let rec = Reconciliation::prepare(e, cfg, now).map(|mut r| {
            open.extend(r.take_commands());
            r
        });
        let mut out = session::process(SessionInput {
            msg,
            raw: "<SyncML/>",
            request_hash: "h".into(),
            enrollment: e,
            management_url: URL,
            previous: prev,
            open_commands: &open,
            awaiting: &[],
            new_key: "key-1".into(),
            header_code: 200,
            next_nonce: None,
            poll: PollPolicy {
                provider_id: "Steward".into(),
                steady_minutes: 60,
                fast_minutes: 3,
                current_minutes: Some(60),
            },
            inventory: InventoryPolicy {
                interval: time::Duration::hours(24),
                collected_at: Some(now),
                command_id: CommandId::new(),
            },
            now,
            retire_previous_certificate: false,
            expire_overdue: false,
            max_device_commands: session::MAX_DEVICE_COMMANDS,
        });
        if let Some(r) = rec {
            r.finish(msg, &mut out.commit, &VerifyPolicy::default(), now);
        }
        out
    }

    fn row<'a>(c: &'a CheckinCommit, path: &str) -> &'a steward_core::configuration::DeviceSetting {
        let cfg = c.configuration.as_ref().expect("reconciled");
        cfg.upserts.iter().find(|r| r.path == path).expect("row")
    }

    #[test]
    fn nothing_loaded_changes_nothing() {
        let e = enrollment();
        let cfg = ConfigurationContext::default();
        assert!(Reconciliation::prepare(&e, &cfg, OffsetDateTime::now_utc()).is_none());
        let start = message(
            1,
            vec![Sc::Alert(Alert {
                cmd_id: "1".into(),
                data: "1201".into(),
                items: vec![],
            })],
        );
        let admin = [admin_command(&e)];
        let out = checkin(&e, &start, None, &admin, &cfg);
        assert!(out.commit.configuration.is_none());
        assert_eq!(out.commit.sent, vec![admin[0].id]);
    }

    #[test]
    fn synthetic_answers_go_to_the_configuration_not_the_command_commit() {
        let e = enrollment();
        let admin = [admin_command(&e)];
        // Session start, no user signed in.
        let start = message(
            1,
            vec![
                Sc::Alert(Alert {
                    cmd_id: "1".into(),
                    data: "1201".into(),
                    items: vec![],
                }),
                Sc::Alert(Alert {
                    cmd_id: "2".into(),
                    data: "1224".into(),
                    items: vec![Item {
                        meta: Some(Meta {
                            type_: Some(syncml::TYPE_LOGIN_STATUS.into()),
                            ..Default::default()
                        }),
                        data: Some(ItemData::Text("none".into())),
                        ..Default::default()
                    }],
                }),
            ],
        );
        let out1 = checkin(&e, &start, None, &admin, &context(vec![]));
        let c1 = &out1.commit;
        // Only the admin command is a command; the camera op went out under its own id.
        assert_eq!(c1.sent, vec![admin[0].id]);
        assert!(c1.outcomes.is_empty() && c1.requeue.is_empty());
        let camera = row(c1, CAMERA);
        assert_eq!(camera.status, SettingStatus::Sent);
        let op_id =
            configuration::SettingOp::id_for(e.id, CAMERA, configuration::OpKind::Apply, &camera.setting.digest());
        let wire = syncml::write(&out1.response);
        assert!(wire.contains(&format!("<CmdID>{}</CmdID>", op_id.wire_id())), "{wire}");
        assert!(!wire.contains("HideSleep"), "user scope waits for a user: {wire}");
        let user = row(c1, USER_NODE);
        assert_eq!(
            (user.status, user.reason.as_str()),
            (SettingStatus::Pending, held::NO_USER)
        );
        assert!(user.in_flight.is_none());

        // The device answers both: the admin Get succeeded, the setting was refused with its own
        // error text.
        let answers = message(
            2,
            vec![
                st("0", "SyncHdr", 200, None),
                st(&admin[0].id.wire_id(), "Get", 200, None),
                st(&op_id.wire_id(), "Replace", 404, Some("0x86000002")),
            ],
        );
        let rows = c1.configuration.as_ref().unwrap().upserts.clone();
        let out2 = checkin(&e, &answers, Some(&c1.session), &admin, &context(rows));
        let c2 = &out2.commit;
        assert_eq!(c2.outcomes.len(), 1, "synthetic outcomes never reach commit.outcomes");
        assert_eq!(c2.outcomes[0].command_id, admin[0].id);
        assert!(
            c2.outcomes
                .iter()
                .all(|o| o.event.data["command_id"] != op_id.to_string())
        );
        assert!(!c2.sent.contains(&op_id));
        let camera = row(c2, CAMERA);
        assert_eq!(camera.status, SettingStatus::Failed);
        assert_eq!(
            (camera.status_code, camera.error.as_deref()),
            (Some(404), Some("0x86000002"))
        );
        let cfg = c2.configuration.as_ref().unwrap();
        assert_eq!(cfg.events.len(), 1);
        assert_eq!(cfg.events[0].kind, EventKind::SettingFailed);
    }

    #[test]
    fn an_op_sent_in_this_session_is_not_sent_again_and_takes_its_answer_later() {
        let e = enrollment();
        let start = message(
            1,
            vec![Sc::Alert(Alert {
                cmd_id: "1".into(),
                data: "1201".into(),
                items: vec![],
            })],
        );
        let mut cfg = context(vec![]);
        if let Some(l) = &mut cfg.loaded {
            l.candidates[0].settings.truncate(1);
        }
        let out1 = checkin(&e, &start, None, &[], &cfg);
        let rows = out1.commit.configuration.clone().unwrap().upserts;
        assert_eq!(rows[0].status, SettingStatus::Sent);
        // A message that does not answer it yet: nothing is sent twice, nothing held.
        let mut cfg2 = context(rows.clone());
        if let Some(l) = &mut cfg2.loaded {
            l.candidates[0].settings.truncate(1);
        }
        let out2 = checkin(
            &e,
            &message(2, vec![st("0", "SyncHdr", 200, None)]),
            Some(&out1.commit.session),
            &[],
            &cfg2,
        );
        assert!(!syncml::write(&out2.response).contains("AllowCamera"));
        let c2 = out2.commit.configuration.unwrap();
        assert!(c2.upserts.iter().all(|r| r.reason != held::NO_ROOM));
        assert_eq!(c2.state.unsettled, 1);
    }

    #[test]
    fn device_error_text() {
        assert_eq!(
            error_text("<msft:originalerror>0x86000002</msft:originalerror>").as_deref(),
            Some("0x86000002")
        );
        assert_eq!(error_text("  plain words ").as_deref(), Some("plain words"));
        assert_eq!(error_text("<a><b>x</b></a>"), None);
        assert_eq!(error_text(""), None);
    }
}

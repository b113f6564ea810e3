//! Pinned regressions: states that once panicked or wedged the agent.
//! Each starts the core from the (journal, record, booted) triple the
//! device had and checks the defined recovery.

use std::time::Duration;

use updraft_agent_core::*;
use updraft_types::{ReleaseId, Sha256Digest, UnixMs};

fn facts() -> Facts {
    Facts { family: "sensor".into(), hardware: "rev-a".into(), components: vec![] }
}

fn assignment() -> Assignment {
    Assignment {
        release: ReleaseId::new("fw@2.0.0"),
        url: "/a".into(),
        bundle_sha256: Sha256Digest([7; 32]),
        bundle_size: 10,
    }
}

fn header() -> Header {
    Header {
        release: ReleaseId::new("fw@2.0.0"),
        family: "sensor".into(),
        hardware: vec!["rev-a".into()],
        security_version: 1,
        requires: vec![],
        image_size: 100,
        image_sha256: Sha256Digest([9; 32]),
    }
}

fn installed() -> Installed {
    Installed { release: Some(ReleaseId::new("fw@1.0.0")), security_version: 1, slot: Slot::A }
}

fn started(journal: Journal, record: BootRecord, booted: Booted) -> (Agent, Vec<Effect>, Vec<Notice>) {
    let mut agent = Agent::new(Duration::from_secs(60));
    agent.handle(
        UnixMs(1000),
        Input::Started { journal: Some(Box::new(journal)), record, booted, facts: facts(), seed: 1 },
    );
    let effects = std::iter::from_fn(|| agent.poll_effect()).collect();
    let notices = std::iter::from_fn(|| agent.poll_notice()).collect();
    (agent, effects, notices)
}

const ON_A: Booted = Booted { slot: Slot::A, trial: false, reverted_from: None };

fn armed_journal(reboots: u32) -> Journal {
    let mut j = Journal::new(installed());
    j.phase = Phase::Armed(Trial {
        update: Update { assignment: assignment(), target: Slot::B, from: Slot::A },
        header: header(),
        reboots,
    });
    j
}

fn armed_record() -> BootRecord {
    BootRecord::fresh(Slot::A).invalidated(Slot::B).armed(Slot::B)
}

/// `reboot_command = ["true"]` with the file bootloader: the agent asked
/// for the reboot into the trial and found itself still on slot A.
/// It used to drop the trial silently (journal Idle, record still armed),
/// then panic at the next assignment ("never invalidate the primary slot").
#[test]
fn a_reboot_that_does_not_happen_is_asked_again_then_disarmed() {
    // Second start: asked again, with a warning.
    let (agent, effects, notices) = started(armed_journal(0), armed_record(), ON_A);
    assert!(matches!(agent.journal().phase, Phase::Armed(Trial { reboots: 1, .. })), "{:?}", agent.journal());
    assert!(effects.contains(&Effect::Reboot), "{effects:?}");
    assert!(
        notices.iter().any(|n| matches!(n, Notice::Warn(m) if m.contains("the reboot did not happen"))),
        "{notices:?}"
    );
    // After MAX_REBOOT_REQUESTS: the update fails with the reason, the
    // record goes back to slot A at rest, the bundle is not retried.
    let (mut agent, effects, _) = started(armed_journal(MAX_REBOOT_REQUESTS - 1), armed_record(), ON_A);
    assert_eq!(agent.journal().phase, Phase::Idle);
    let event = &agent.journal().unreported[0];
    assert_eq!(event.kind, InstallEvent::Failed);
    assert!(event.detail.contains("reboot_command"), "{}", event.detail);
    assert_eq!(agent.journal().refused[0].bundle_sha256, assignment().bundle_sha256);
    let Some(Effect::SetBootRecord(r)) = effects.iter().find(|e| matches!(e, Effect::SetBootRecord(_))).cloned() else {
        panic!("no record written: {effects:?}");
    };
    assert!(r.is_settled_on(Slot::A) && !r.trial_armed, "{r:?}");
    agent.handle(UnixMs(2000), Input::RecordWritten(r));
    assert!(agent.is_idle());
}

/// The second state of that device: an Idle journal while the record still
/// arms a trial of B and A runs. The record is settled on A.
#[test]
fn an_idle_journal_with_an_armed_record_settles_the_record() {
    let (_, effects, notices) = started(Journal::new(installed()), armed_record(), ON_A);
    let records: Vec<_> =
        effects.iter().filter_map(|e| if let Effect::SetBootRecord(r) = e { Some(*r) } else { None }).collect();
    assert_eq!(records.len(), 1, "{effects:?}");
    assert!(records[0].is_settled_on(Slot::A), "{:?}", records[0]);
    assert!(notices.iter().any(|n| matches!(n, Notice::Warn(m) if m.contains("does not match the running slot"))));
}

/// The third state: a new assignment while the record's primary is the
/// slot the update would write. It panicked; now the record is settled
/// first and the update starts from a record at rest.
#[test]
fn an_assignment_over_an_unsettled_record_does_not_panic() {
    let (mut agent, effects, _) = started(Journal::new(installed()), armed_record(), ON_A);
    // The settling write fails (the tool is missing, say): still no panic.
    assert!(effects.iter().any(|e| matches!(e, Effect::SetBootRecord(_))));
    agent.handle(UnixMs(1000), Input::RecordFailed { reason: "fw_setenv: not found".into() });
    let mut now = UnixMs(1000);
    for _ in 0..4 {
        now = agent.poll_timeout().unwrap_or(now).max(now);
        agent.handle(now, Input::Tick);
        while let Some(e) = agent.poll_effect() {
            match e {
                Effect::CheckIn { .. } => agent.handle(now, Input::CheckedIn(Some(assignment()))),
                Effect::SetBootRecord(r) => {
                    assert!(r.bootable() && r.primary == Slot::A, "{r:?}");
                    agent.handle(now, Input::RecordWritten(r));
                }
                Effect::Stream { slot, .. } => {
                    assert_eq!(slot, Slot::B);
                    return;
                }
                _ => {}
            }
        }
    }
    panic!("the update never started: {:?}", agent.journal());
}

/// A tampered copy of a release is refused by its digest; the genuine
/// bundle of the same release (another digest) is still taken.
#[test]
fn a_refused_bundle_does_not_poison_the_release() {
    let mut j = Journal::new(installed());
    j.refused.push(Refusal {
        bundle_sha256: Sha256Digest([1; 32]),
        release: ReleaseId::new("fw@2.0.0"),
        reason: "bad signature".into(),
    });
    let (mut agent, _, _) = started(j, BootRecord::fresh(Slot::A), ON_A);
    agent.handle(UnixMs(1000), Input::Tick);
    while agent.poll_effect().is_some() {}
    agent.handle(UnixMs(1000), Input::CheckedIn(Some(assignment())));
    assert!(matches!(agent.journal().phase, Phase::Downloading(_)), "{:?}", agent.journal());
}

/// A server that is rate-limiting (429) or overloaded (503) says when to
/// ask again; the agent waits that long (bounded), not its usual poll.
#[test]
fn a_retry_after_delays_the_next_check_in() {
    for (retry_after_s, earliest_s) in [(None, 0), (Some(600), 600), (Some(u32::MAX), 86_400)] {
        let (mut agent, _, _) = started(Journal::new(installed()), BootRecord::fresh(Slot::A), ON_A);
        let mut now = UnixMs(1000);
        let mut checked = false;
        for _ in 0..4 {
            now = agent.poll_timeout().unwrap_or(now).max(now);
            agent.handle(now, Input::Tick);
            while let Some(e) = agent.poll_effect() {
                if let Effect::CheckIn { .. } = e {
                    agent.handle(now, Input::CheckInFailed { retry_after_s });
                    checked = true;
                }
            }
            if checked {
                break;
            }
        }
        assert!(checked, "the agent checked in");
        let next = agent.poll_timeout().unwrap();
        assert!(next.0 >= now.0 + earliest_s * 1000, "{retry_after_s:?}: next check-in at {next:?}, now {now:?}");
        assert!(next.0 <= now.0 + (86_400 + 120) * 1000, "{retry_after_s:?}: bounded");
    }
}

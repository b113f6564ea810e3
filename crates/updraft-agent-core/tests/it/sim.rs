//! The simulated device, bootloader and server.

use std::time::Duration;

use updraft_agent_core::*;
use updraft_types::{ReleaseId, Sha256Digest, UnixMs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Good,
    Unhealthy,
    NeverBoots,
    WrongFamily,
    Downgrade,
    BadSignature,
    CancelledAfterDownload,
}

const CHUNKS: u64 = 4;
const CHUNK: u64 = 1000;

fn digest_of(release: &str) -> Sha256Digest {
    let mut d = [0u8; 32];
    for (i, b) in release.bytes().enumerate() {
        d[i % 32] ^= b;
    }
    Sha256Digest(d)
}

/// What is in a slot: the image of a release, and how much of it is written and synced.
#[derive(Clone, Debug, Default)]
struct SlotState {
    release: Option<String>,
    written: u64,
    synced: u64,
}

impl SlotState {
    fn complete(&self, release: &str) -> bool {
        self.release.as_deref() == Some(release) && self.synced >= CHUNKS * CHUNK
    }
}

/// The device, what survives power cuts, and the server's view.
#[derive(Clone, Debug)]
pub struct World {
    record: BootRecord,
    journal: Option<Journal>,
    slots: [SlotState; 2],
    /// What the server heard, in order.
    heard: Vec<Event>,
    pub boots: u32,
    pub bytes_written_to_slots: u64,
}

impl World {
    /// The release the device runs committed.
    pub fn installed(&self) -> Option<String> {
        let (_, booted) = boot(self.record);
        let slot = &self.slots[booted.slot.index()];
        assert!(self.record.good[booted.slot.index()], "the record boots a slot that is not good: {:?}", self.record);
        slot.release.clone()
    }

    pub fn nothing_unreported(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| j.unreported.is_empty())
    }

    pub fn server_heard(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.heard {
            // Resent after a power cut before the acknowledgement was persisted: once is enough.
            if out.last().map(String::as_str) != Some(e.kind.as_str()) {
                out.push(e.kind.as_str().to_owned());
            }
        }
        out
    }
}

#[derive(Clone)]
pub struct Scenario {
    fate: Fate,
    network_seed: Option<u64>,
}

enum Stop {
    Done,
    Power,
    Reboot,
}

impl Scenario {
    pub fn new(fate: Fate) -> Scenario {
        Scenario { fate, network_seed: None }
    }

    /// Downloads and check-ins fail now and then (from `seed`).
    pub fn with_network_faults(mut self, seed: u64) -> Scenario {
        self.network_seed = Some(seed);
        self
    }

    fn header(&self) -> Header {
        Header {
            release: ReleaseId::new("fw@2.0.0"),
            family: if self.fate == Fate::WrongFamily { "other".into() } else { "sensor".into() },
            hardware: vec!["rev-a".into()],
            security_version: if self.fate == Fate::Downgrade { 1 } else { 5 },
            requires: vec![("bootloader".into(), ">=1.4".into())],
            image_size: CHUNKS * CHUNK,
            image_sha256: digest_of("fw@2.0.0"),
        }
    }

    fn facts() -> Facts {
        Facts {
            family: "sensor".into(),
            hardware: "rev-a".into(),
            components: vec![("bootloader".into(), semver::Version::new(1, 4, 2))],
        }
    }

    /// Runs the scenario, cutting the power just before the effects whose
    /// numbers are in `cuts` (counting every effect and every slot write
    /// and sync across the whole run). Returns the final world and the
    /// number of effects.
    pub fn run(&self, cuts: &[u64]) -> (World, u64) {
        let mut record = BootRecord::fresh(Slot::A);
        record.good = [true, false];
        let mut world = World {
            record,
            journal: Some(Journal::new(Installed {
                release: Some(ReleaseId::new("fw@1.0.0")),
                security_version: 3,
                slot: Slot::A,
            })),
            slots: [SlotState { release: Some("fw@1.0.0".into()), written: 4000, synced: 4000 }, SlotState::default()],
            heard: vec![],
            boots: 0,
            bytes_written_to_slots: 0,
        };
        let mut count = 0u64;
        let mut now = UnixMs(1_000_000);
        let mut net = self.network_seed.map(|s| s | 1);
        let mut flaky = move || -> bool {
            match net.as_mut() {
                None => false,
                Some(x) => {
                    *x ^= *x << 13;
                    *x ^= *x >> 7;
                    *x ^= *x << 17;
                    *x % 5 == 0
                }
            }
        };
        for _power_cycle in 0..200 {
            // Boot.
            world.boots += 1;
            let (new_record, booted) = boot(world.record);
            if let Some(r) = new_record {
                world.record = r;
            }
            let running = world.slots[booted.slot.index()].release.clone().unwrap_or_default();
            let expected_image = if booted.slot == Slot::A { "fw@1.0.0" } else { "fw@2.0.0" };
            assert!(
                world.slots[booted.slot.index()].complete(expected_image),
                "booted slot {:?} holding an unverified image: {:?}",
                booted.slot,
                world.slots
            );
            if running == "fw@2.0.0" && booted.trial && self.fate == Fate::NeverBoots {
                continue; // crashes before the agent runs: the bootloader counts it
            }
            let mut agent = Agent::new(Duration::from_secs(60));
            agent.handle(
                now,
                Input::Started {
                    journal: world.journal.clone().map(Box::new),
                    record: world.record,
                    booted,
                    facts: Self::facts(),
                    seed: 7,
                },
            );
            let stop = self.drive(&mut agent, &mut world, booted, &mut now, &mut count, cuts, &mut flaky);
            match stop {
                Stop::Done => return (world, count),
                Stop::Power | Stop::Reboot => {
                    // Unsynced writes are lost.
                    for s in &mut world.slots {
                        s.written = s.synced;
                    }
                }
            }
        }
        panic!("no end after 200 power cycles: {world:?}");
    }

    #[allow(clippy::too_many_arguments)]
    fn drive(
        &self,
        agent: &mut Agent,
        world: &mut World,
        booted: Booted,
        now: &mut UnixMs,
        count: &mut u64,
        cuts: &[u64],
        flaky: &mut dyn FnMut() -> bool,
    ) -> Stop {
        let cut = |count: &mut u64| -> bool {
            *count += 1;
            cuts.contains(count)
        };
        let mut idle_ticks = 0;
        loop {
            let Some(effect) = agent.poll_effect() else {
                // Nothing to do: move time forward.
                match agent.poll_timeout() {
                    Some(t) => {
                        let unreported = !world.journal.as_ref().is_some_and(|j| j.unreported.is_empty());
                        let settled = !unreported
                            && world.journal.as_ref().is_some_and(|j| j.phase == Phase::Idle)
                            && (self.assigned(world).is_none() || idle_ticks > 40);
                        if settled {
                            return Stop::Done;
                        }
                        idle_ticks += 1;
                        if idle_ticks > 200 {
                            panic!("stuck: {:?}", world.journal);
                        }
                        *now = (*now).max(t);
                        agent.handle(*now, Input::Tick);
                        continue;
                    }
                    None => panic!("the agent waits for nothing: {:?}", world.journal),
                }
            };
            if cut(count) {
                return Stop::Power;
            }
            match effect {
                Effect::Persist(j) => world.journal = Some(*j),
                Effect::SetBootRecord(r) => {
                    assert!(r.bootable(), "{r:?}");
                    world.record = r;
                    agent.handle(*now, Input::RecordWritten(r));
                }
                Effect::CheckIn { .. } => {
                    if flaky() {
                        agent.handle(*now, Input::CheckInFailed { retry_after_s: None });
                    } else {
                        let a = self.assigned(world);
                        agent.handle(*now, Input::CheckedIn(a));
                    }
                }
                Effect::Stream { slot, resume_from, .. } => {
                    assert_ne!(slot, booted.slot, "never write to the booted slot");
                    if self.fate == Fate::BadSignature {
                        agent.handle(*now, Input::StreamFailed { retryable: false, reason: "bad signature".into() });
                        continue;
                    }
                    if flaky() {
                        agent.handle(*now, Input::StreamFailed { retryable: true, reason: "connection reset".into() });
                        continue;
                    }
                    agent.handle(*now, Input::Header(self.header()));
                    // The verdict comes after the journal records the header.
                    let accepted = loop {
                        match agent.poll_effect() {
                            Some(Effect::Persist(j)) => {
                                if cut(count) {
                                    return Stop::Power;
                                }
                                world.journal = Some(*j);
                            }
                            Some(Effect::Accept) => break true,
                            Some(Effect::Abort) => break false,
                            other => panic!("expected Accept or Abort, got {other:?}"),
                        }
                    };
                    if !accepted {
                        continue;
                    }
                    let s = &mut world.slots[slot.index()];
                    if s.release.as_deref() != Some("fw@2.0.0") || resume_from == 0 {
                        s.release = Some("fw@2.0.0".into());
                        s.written = resume_from.min(s.synced);
                        s.synced = s.written;
                    }
                    let mut at = resume_from;
                    while at < CHUNKS * CHUNK {
                        if cut(count) {
                            return Stop::Power;
                        }
                        world.slots[slot.index()].written = at + CHUNK;
                        world.bytes_written_to_slots += CHUNK;
                        at += CHUNK;
                        if cut(count) {
                            return Stop::Power;
                        }
                        world.slots[slot.index()].synced = at;
                        agent.handle(*now, Input::Progress { synced: at });
                        // Progress persists the journal: perform it now.
                        while let Some(Effect::Persist(j)) = agent.poll_effect() {
                            world.journal = Some(*j);
                        }
                    }
                    agent.handle(*now, Input::StreamDone);
                }
                Effect::Accept | Effect::Abort => {}
                Effect::ReadBack { slot, len } => {
                    let s = &world.slots[slot.index()];
                    let sha = if s.release.as_deref() == Some("fw@2.0.0") && s.synced >= len {
                        digest_of("fw@2.0.0")
                    } else {
                        digest_of("garbage")
                    };
                    agent.handle(*now, Input::ReadBack { sha256: sha });
                }
                Effect::Reboot => return Stop::Reboot,
                Effect::RunHealthChecks { .. } => {
                    let ok = self.fate != Fate::Unhealthy;
                    agent.handle(
                        *now,
                        Input::HealthDone { ok, detail: if ok { String::new() } else { "app not answering".into() } },
                    );
                }
                Effect::Report(e) => {
                    if flaky() {
                        agent.handle(*now, Input::ReportFailed);
                    } else {
                        world.heard.push(e);
                        agent.handle(*now, Input::Reported);
                    }
                }
            }
        }
    }

    /// The server's current assignment for the device.
    fn assigned(&self, world: &World) -> Option<Assignment> {
        let installed = world.journal.as_ref().and_then(|j| j.installed.release.clone());
        if installed.as_ref().map(|r| r.as_str()) == Some("fw@2.0.0") {
            return None;
        }
        let heard: Vec<&str> = world.heard.iter().map(|e| e.kind.as_str()).collect();
        if self.fate == Fate::CancelledAfterDownload && heard.contains(&"downloaded") {
            return None;
        }
        if heard.iter().any(|k| k.starts_with("reverted") || *k == "failed") {
            return None;
        }
        Some(Assignment {
            release: ReleaseId::new("fw@2.0.0"),
            url: "/api/v1/artifacts/x".into(),
            bundle_sha256: digest_of("bundle"),
            bundle_size: 5000,
        })
    }
}

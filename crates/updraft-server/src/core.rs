//! The rollout controller inside the server: one instance behind a mutex,
//! fed with the real clock, every state-changing input journaled before it
//! is acknowledged, rebuilt from the journal at start-up.

use std::collections::HashMap;

use updraft_rollout::{Controller, Output};
use updraft_store::Store;
use updraft_types::{DeviceId, ReleaseId, UnixMs};

use crate::journal::Entry;

/// The controller's clock origin (2020-01-01): per-device times are kept
/// as seconds since then.
pub const EPOCH: UnixMs = UnixMs(1_577_836_800_000);

pub struct Core {
    pub controller: Controller,
    /// The release each device last reported, to journal only changes.
    last_release: HashMap<DeviceId, Option<ReleaseId>>,
    /// Journal entries replayed or written.
    pub journaled: u64,
}

/// Whether an applied input must be journaled.
fn must_journal(entry: &Entry, outputs: &[Output], release_changed: bool) -> bool {
    if outputs.iter().any(|o| matches!(o, Output::Rejected { .. })) {
        return false;
    }
    match entry {
        // A check-in changes state when the device reports a new release or
        // is assigned something (pacing, membership status).
        Entry::CheckIn { .. } => {
            release_changed
                || outputs.iter().any(|o| {
                    matches!(o, Output::Decision { decision: updraft_rollout::Decision::Install { .. }, .. })
                        || !matches!(o, Output::Decision { .. })
                })
        }
        // A tick changes state only when something happened.
        Entry::Tick => !outputs.is_empty(),
        _ => true,
    }
}

impl Core {
    /// Rebuilds the controller from the journal.
    pub async fn load(store: &Store) -> Result<Core, updraft_store::StoreError> {
        let mut core = Core { controller: Controller::new(EPOCH), last_release: HashMap::new(), journaled: 0 };
        let entries = store.journal_since(0).await?;
        for (_, at, text) in entries {
            let entry: Entry = match serde_json::from_str(&text) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(%e, "unreadable journal entry skipped");
                    continue;
                }
            };
            if let Entry::CheckIn { device, release } = &entry {
                core.last_release.insert(device.clone(), release.clone());
            }
            if let Some(input) = entry.to_input() {
                core.controller.handle(UnixMs(at.max(0) as u64), input);
                while core.controller.poll_output().is_some() {}
            }
            core.journaled += 1;
        }
        Ok(core)
    }

    /// Applies one entry at `now_ms`, journals it if it changed anything, and
    /// returns the controller's outputs. The caller holds the lock, so the
    /// journal order is the order of application.
    pub async fn apply(
        &mut self,
        store: &Store,
        now_ms: i64,
        entry: Entry,
    ) -> Result<Vec<Output>, updraft_store::StoreError> {
        let release_changed = match &entry {
            Entry::CheckIn { device, release } => {
                self.last_release.insert(device.clone(), release.clone()).as_ref() != Some(release)
            }
            _ => false,
        };
        let Some(input) = entry.to_input() else {
            return Ok(vec![Output::Rejected { reason: "unreadable input".into() }]);
        };
        self.controller.handle(UnixMs(now_ms.max(0) as u64), input);
        let mut outputs = Vec::new();
        while let Some(o) = self.controller.poll_output() {
            outputs.push(o);
        }
        if must_journal(&entry, &outputs, release_changed) {
            let text = serde_json::to_string(&entry).expect("journal entry serialises");
            store.append_journal(&[(now_ms, text)]).await?;
            self.journaled += 1;
        }
        Ok(outputs)
    }
}

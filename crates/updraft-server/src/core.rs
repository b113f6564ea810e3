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
    writer: Option<JournalWriter>,
}

/// A journal entry waiting for its batch to commit.
pub type Pending = tokio::sync::oneshot::Receiver<Result<(), String>>;

type Job = (i64, String, tokio::sync::oneshot::Sender<Result<(), String>>);

/// Group commit: entries are queued in the order they were applied, and a
/// writer task commits whatever has queued up in one transaction. Callers
/// wait for their entry's commit before they answer, outside the lock, so a
/// slow fsync delays the answer but not the other requests.
#[derive(Clone)]
pub struct JournalWriter {
    tx: tokio::sync::mpsc::UnboundedSender<Job>,
}

/// Entries one transaction commits at most.
const MAX_BATCH: usize = 1024;

impl JournalWriter {
    pub fn spawn(store: Store) -> JournalWriter {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let rows: Vec<(i64, String)> = batch.iter().map(|(at, text, _)| (*at, text.clone())).collect();
                let result = store.append_journal(&rows).await.map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::error!(error = %e, "journal write failed");
                }
                for (_, _, done) in batch {
                    let _ = done.send(result.clone());
                }
            }
        });
        JournalWriter { tx }
    }
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
        let mut core =
            Core { controller: Controller::new(EPOCH), last_release: HashMap::new(), journaled: 0, writer: None };
        let entries = store.journal_since(0).await?;
        for (_, at, text) in entries {
            let entry: Entry = match serde_json::from_str(&text) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(%e, "unreadable journal entry skipped");
                    continue;
                }
            };
            core.note_release(&entry);
            if let Some(input) = entry.to_input() {
                core.controller.handle(UnixMs(at.max(0) as u64), input);
                while core.controller.poll_output().is_some() {}
            }
            core.journaled += 1;
        }
        Ok(core)
    }

    /// Starts journaling new entries through `writer`.
    pub fn set_writer(&mut self, writer: JournalWriter) {
        self.writer = Some(writer);
    }

    /// Remembers the release a device reported or registered with; true if
    /// it changed.
    fn note_release(&mut self, entry: &Entry) -> bool {
        match entry {
            Entry::CheckIn { device, release } | Entry::Device { id: device, release, .. } => {
                self.last_release.insert(device.clone(), release.clone()).as_ref() != Some(release)
            }
            _ => false,
        }
    }

    /// Applies one entry at `now_ms` and returns the controller's outputs
    /// and, if the entry changed anything, its place in the journal queue:
    /// the caller waits for it before acknowledging. The caller holds the
    /// lock, so the journal order is the order of application.
    pub fn apply(&mut self, now_ms: i64, entry: Entry) -> (Vec<Output>, Option<Pending>) {
        let release_changed = self.note_release(&entry);
        let Some(input) = entry.to_input() else {
            return (vec![Output::Rejected { reason: "unreadable input".into() }], None);
        };
        self.controller.handle(UnixMs(now_ms.max(0) as u64), input);
        let mut outputs = Vec::new();
        while let Some(o) = self.controller.poll_output() {
            outputs.push(o);
        }
        let mut pending = None;
        if must_journal(&entry, &outputs, release_changed) {
            let text = serde_json::to_string(&entry).expect("journal entry serialises");
            let (done, wait) = tokio::sync::oneshot::channel();
            let writer = self.writer.as_ref().expect("a journal writer is set before serving");
            if writer.tx.send((now_ms, text, done)).is_err() {
                tracing::error!("the journal writer has stopped");
            }
            self.journaled += 1;
            pending = Some(wait);
        }
        (outputs, pending)
    }
}

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
    /// The last journal entry applied (replicated mode).
    pub applied_seq: i64,
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
fn must_journal(entry: &Entry, outputs: &[Output], may_change: bool) -> bool {
    if outputs.iter().any(|o| matches!(o, Output::Rejected { .. })) {
        return false;
    }
    match entry {
        // A check-in changes state when the device reports a new release or
        // could be assigned something (pacing, membership status), or when
        // time-driven work ran on the way.
        Entry::CheckIn { .. } => may_change || outputs.iter().any(|o| !matches!(o, Output::Decision { .. })),
        // A tick changes state only when something happened.
        Entry::Tick => !outputs.is_empty(),
        _ => true,
    }
}

impl Core {
    /// Rebuilds the controller from the journal.
    pub async fn load(store: &Store) -> Result<Core, updraft_store::StoreError> {
        let mut core = Core {
            controller: Controller::new(EPOCH),
            last_release: HashMap::new(),
            journaled: 0,
            writer: None,
            applied_seq: 0,
        };
        let entries = store.journal_since(0).await?;
        core.catch_up(entries);
        Ok(core)
    }

    /// Applies journal entries after `applied_seq`, in order (at start-up,
    /// all of them; later, those other replicas wrote).
    pub fn catch_up(&mut self, entries: Vec<(i64, i64, String)>) {
        for (seq, at, text) in entries {
            if seq <= self.applied_seq {
                continue;
            }
            self.applied_seq = seq;
            let entry: Entry = match serde_json::from_str(&text) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(%e, seq, "unreadable journal entry skipped");
                    continue;
                }
            };
            self.note_release(&entry);
            if let Some(input) = entry.to_input() {
                self.controller.handle(UnixMs(at.max(0) as u64), input);
                while self.controller.poll_output().is_some() {}
            }
            self.journaled += 1;
        }
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
        let (outputs, text) = self.apply_local(now_ms, entry);
        let pending = text.map(|text| {
            let (done, wait) = tokio::sync::oneshot::channel();
            let writer = self.writer.as_ref().expect("a journal writer is set before serving");
            if writer.tx.send((now_ms, text, done)).is_err() {
                tracing::error!("the journal writer has stopped");
            }
            wait
        });
        (outputs, pending)
    }

    /// The answer to a check-in that changes nothing, computed without
    /// changing anything (see `Controller::peek_check_in`).
    pub fn peek(&self, now_ms: i64, entry: &Entry) -> Option<Vec<Output>> {
        match entry {
            Entry::CheckIn { device, release } => self
                .controller
                .peek_check_in(UnixMs(now_ms.max(0) as u64), device, release.as_ref())
                .map(|decision| vec![Output::Decision { device: device.clone(), decision }]),
            _ => None,
        }
    }

    /// Applies one entry and returns the outputs and, if it must be
    /// journaled, its text (the caller appends it).
    pub fn apply_local(&mut self, now_ms: i64, entry: Entry) -> (Vec<Output>, Option<String>) {
        let may_change = matches!(entry, Entry::CheckIn { .. }) && self.peek(now_ms, &entry).is_none();
        let release_changed = self.note_release(&entry);
        let Some(input) = entry.to_input() else {
            return (vec![Output::Rejected { reason: "unreadable input".into() }], None);
        };
        self.controller.handle(UnixMs(now_ms.max(0) as u64), input);
        let mut outputs = Vec::new();
        while let Some(o) = self.controller.poll_output() {
            outputs.push(o);
        }
        let mut text = None;
        if must_journal(&entry, &outputs, release_changed || may_change) {
            text = Some(serde_json::to_string(&entry).expect("journal entry serialises"));
            self.journaled += 1;
        }
        (outputs, text)
    }
}

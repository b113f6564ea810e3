//! The rollout controller inside the server: one instance behind a mutex,
//! fed with the real clock, every state-changing input journaled before it
//! is acknowledged, rebuilt from the journal at start-up.
//!
//! Two ways in:
//! - [`apply`]: one controller input from a device or the ticker (check-in,
//!   event, health, tick). SQLite: applied under the lock and group-committed
//!   by the [`JournalWriter`] with the audit entries its outputs call for.
//!   PostgreSQL: a [`Change`] of its own.
//! - [`Change`]: an operator's or an enrollment's change: the rows it
//!   writes, its journal entries and its audit entries in one transaction,
//!   so that a crash leaves all of it or none of it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use updraft_proto::AuditEntry;
use updraft_rollout::{Controller, Output};
use updraft_store::{Store, WriteTx};
use updraft_types::{DeviceId, ReleaseId, RolloutId, UnixMs};

use crate::error::{ApiError, ApiResult};
use crate::journal::Entry;
use crate::metrics::METRICS;
use crate::{now_ms, App};

/// The controller's clock origin (2020-01-01): per-device times are kept
/// as seconds since then.
pub const EPOCH: UnixMs = UnixMs(1_577_836_800_000);

/// What the journal has registered, for reconciliation with the database.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// Devices registered and not retired.
    pub devices: HashSet<DeviceId>,
    pub releases: HashSet<ReleaseId>,
    /// Rollouts created: their release and plan.
    pub rollouts: HashMap<RolloutId, (ReleaseId, String)>,
}

pub struct Core {
    pub controller: Controller,
    /// The release each device last reported, to journal only changes.
    last_release: HashMap<DeviceId, Option<ReleaseId>>,
    pub known: Known,
    /// Journal entries replayed or written.
    pub journaled: u64,
    writer: Option<JournalWriter>,
    /// The last journal entry applied (replicated mode).
    pub applied_seq: i64,
    /// An entry was applied whose transaction did not commit: the next user
    /// rebuilds the controller from the journal first.
    stale: bool,
}

enum Job {
    Append {
        at_ms: i64,
        text: String,
        audits: Vec<AuditEntry>,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Answered once everything queued before it has committed.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Group commit: entries are queued in the order they were applied, and a
/// writer task commits whatever has queued up in one transaction, with the
/// audit entries their outputs call for. Callers wait for their entry's
/// commit before they answer, outside the lock, so a slow fsync delays the
/// answer but not the other requests.
#[derive(Clone)]
pub struct JournalWriter {
    tx: tokio::sync::mpsc::UnboundedSender<Job>,
}

/// Entries one transaction commits at most.
const MAX_BATCH: usize = 1024;

async fn write_batch(store: &Store, batch: &[(i64, String, Vec<AuditEntry>)]) -> updraft_store::Result<()> {
    let mut tx = store.begin_write().await?;
    for (at, text, audits) in batch {
        tx.append(*at, text).await?;
        for a in audits {
            tx.audit(a).await?;
        }
    }
    crate::fault::point("journal.batch.before-commit");
    tx.commit().await
}

impl JournalWriter {
    pub fn spawn(store: Store) -> JournalWriter {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = Vec::new();
                let mut waiters = Vec::new();
                let mut barrier = None;
                let mut job = Some(first);
                while let Some(j) = job.take() {
                    match j {
                        Job::Append { at_ms, text, audits, done } => {
                            batch.push((at_ms, text, audits));
                            waiters.push(done);
                        }
                        Job::Barrier(done) => {
                            barrier = Some(done);
                            break;
                        }
                    }
                    if batch.len() < MAX_BATCH {
                        job = rx.try_recv().ok();
                    }
                }
                if !batch.is_empty() {
                    let result = write_batch(&store, &batch).await.map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "journal write failed");
                    }
                    for done in waiters {
                        let _ = done.send(result.clone());
                    }
                }
                if let Some(done) = barrier {
                    let _ = done.send(());
                }
            }
        });
        JournalWriter { tx }
    }

    /// Waits until everything queued so far has committed (or failed).
    pub async fn barrier(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Job::Barrier(done)).is_ok() {
            let _ = wait.await;
        }
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
            known: Known::default(),
            journaled: 0,
            writer: None,
            applied_seq: 0,
            stale: false,
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
            self.note(&entry);
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

    /// Remembers what a journaled entry registered.
    fn note_known(&mut self, entry: &Entry) {
        match entry {
            Entry::Device { id, .. } => {
                self.known.devices.insert(id.clone());
            }
            Entry::Retire { device } => {
                self.known.devices.remove(device);
            }
            Entry::Release { id, .. } => {
                self.known.releases.insert(id.clone());
            }
            Entry::CreateRollout { id, release, plan } => {
                self.known.rollouts.insert(id.clone(), (release.clone(), plan.clone()));
            }
            _ => {}
        }
    }

    fn note(&mut self, entry: &Entry) {
        self.note_release(entry);
        self.note_known(entry);
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
            self.note_known(&entry);
            text = Some(serde_json::to_string(&entry).expect("journal entry serialises"));
            self.journaled += 1;
        }
        (outputs, text)
    }
}

impl App {
    /// The controller, rebuilt from the journal first if an applied entry
    /// failed to commit.
    pub(crate) async fn lock_core(&self) -> tokio::sync::MutexGuard<'_, Core> {
        let mut core = self.core.lock().await;
        if core.stale {
            rebuild(&self.store, &mut core).await;
        }
        core
    }
}

/// Rebuilds the controller in place from the journal (after a failed commit).
async fn rebuild(store: &Store, core: &mut Core) {
    match Core::load(store).await {
        Ok(mut fresh) => {
            fresh.writer = core.writer.clone();
            *core = fresh;
            tracing::warn!("controller rebuilt from the journal after a failed commit");
        }
        Err(e) => {
            core.stale = true;
            tracing::error!(%e, "cannot rebuild the controller from the journal; retrying at the next request");
        }
    }
}

/// The audit entries a controller's outputs call for (rollout state
/// changes, waves, gate verdicts, quarantines), written with the entry.
fn system_audits(outputs: &[Output], at_ms: i64) -> Vec<AuditEntry> {
    let entry = |action: &str, subject: &str, detail: String| AuditEntry {
        id: 0,
        at_ms,
        actor: "system".into(),
        action: action.into(),
        subject: subject.into(),
        detail,
        remote: "0.0.0.0".into(),
    };
    let mut out = Vec::new();
    for o in outputs {
        match o {
            Output::StateChanged { rollout, state } => {
                out.push(entry("rollout.state", rollout.as_str(), serde_json::to_string(state).unwrap_or_default()))
            }
            Output::WaveStarted { rollout, wave, target_devices } => {
                out.push(entry("rollout.wave", rollout.as_str(), format!("wave {wave}, {target_devices} devices")))
            }
            Output::Gate { rollout, report, .. } => {
                out.push(entry("rollout.gate", rollout.as_str(), serde_json::to_string(report).unwrap_or_default()))
            }
            Output::Quarantined { release, rollout } => {
                out.push(entry("release.quarantine", release.as_str(), format!("by rollout {rollout}")))
            }
            Output::StratumHalted { rollout, release, scope, reason, rolled_back } => {
                let what = if *rolled_back { "rolled back" } else { "paused" };
                out.push(entry("rollout.stratum_halt", rollout.as_str(), format!("{scope} {what}: {reason}")));
                out.push(entry("release.quarantine", release.as_str(), format!("for {scope} by rollout {rollout}")));
            }
            Output::Decision { .. } | Output::Rejected { .. } => {}
        }
    }
    out
}

/// Metrics of outputs that were made durable.
fn observe_outputs(outputs: &[Output]) {
    for o in outputs {
        match o {
            Output::StateChanged { rollout, state } => {
                // One-hot: 1 for the state the rollout is in, 0 for the others.
                for name in updraft_rollout::RolloutState::NAMES {
                    METRICS
                        .rollout_state
                        .get_or_create(&crate::metrics::RolloutState {
                            rollout: rollout.to_string(),
                            state: name.into(),
                        })
                        .set(i64::from(name == state.name()));
                }
            }
            Output::Gate { report, .. } => {
                METRICS
                    .gate_results
                    .get_or_create(&crate::metrics::GateResult {
                        gate: report.gate.clone(),
                        verdict: format!("{:?}", report.test.verdict).to_lowercase(),
                    })
                    .inc();
            }
            _ => {}
        }
    }
}

/// Applies one device or ticker input and returns the controller's outputs
/// once they are durable (see the module's documentation).
pub(crate) async fn apply(app: &App, entry: Entry) -> ApiResult<Vec<Output>> {
    if app.replicated {
        // A check-in that cannot change anything is answered from this
        // replica's state, without the journal lock.
        if let Some(outputs) = app.lock_core().await.peek(now_ms(), &entry) {
            return Ok(outputs);
        }
        let mut change = Change::begin(app).await?;
        let outputs = change.apply(entry).await?;
        change.commit().await?;
        return Ok(outputs);
    }
    let now = now_ms();
    let (outputs, pending) = {
        let mut core = app.lock_core().await;
        let (outputs, text) = core.apply_local(now, entry);
        let pending = text.map(|text| {
            let (done, wait) = tokio::sync::oneshot::channel();
            let audits = system_audits(&outputs, now);
            let writer = core.writer.as_ref().expect("a journal writer is set before serving");
            if writer.tx.send(Job::Append { at_ms: now, text, audits, done }).is_err() {
                tracing::error!("the journal writer has stopped");
            }
            wait
        });
        (outputs, pending)
    };
    // Acknowledge only what is durable.
    if let Some(p) = pending {
        let result = match p.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::internal(format!("journal: {e}"))),
            Err(_) => Err(ApiError::internal("journal writer stopped")),
        };
        if let Err(e) = result {
            // Applied here, not in the journal: rebuild rather than diverge.
            app.lock_core().await.stale = true;
            return Err(e);
        }
    }
    observe_outputs(&outputs);
    Ok(outputs)
}

/// Brings this replica up to date with entries other replicas wrote.
pub async fn catch_up(app: &App) -> ApiResult<()> {
    if !app.replicated {
        return Ok(());
    }
    let mut core = app.lock_core().await;
    let newer = app.store.journal_since(core.applied_seq).await?;
    core.catch_up(newer);
    Ok(())
}

/// The periodic controller work (timeouts, soaks, gate evaluation); only
/// the leader runs it.
pub async fn tick(app: &App) {
    if let Err(e) = apply(app, Entry::Tick).await {
        tracing::error!(message = %e.message, "controller tick failed");
    }
}

/// One acknowledged change: the rows it writes (through [`Change::tx`]), the
/// controller entries it applies and the audit entries it records, in one
/// database transaction. The controller is locked from `begin` to `commit`,
/// so no other entry is applied in between (SQLite: after everything
/// queued before has committed; PostgreSQL: under the journal lock, after
/// catching up with other replicas). Dropped without `commit`, nothing is
/// written, and a controller that applied an entry is rebuilt from the
/// journal before its next use.
pub(crate) struct Change<'a> {
    /// Open until `commit`.
    tx: Option<WriteTx>,
    core: tokio::sync::MutexGuard<'a, Core>,
    audits: Vec<AuditEntry>,
    outputs: Vec<Output>,
    applied: bool,
    done: bool,
}

impl<'a> Change<'a> {
    pub async fn begin(app: &'a App) -> ApiResult<Change<'a>> {
        let (tx, core) = if app.replicated {
            let mut tx = app.store.begin_write().await?;
            let mut core = app.lock_core().await;
            let newer = tx.since(core.applied_seq).await?;
            core.catch_up(newer);
            (tx, core)
        } else {
            let core = app.lock_core().await;
            if let Some(w) = &core.writer {
                w.barrier().await;
            }
            (app.store.begin_write().await?, core)
        };
        Ok(Change { tx: Some(tx), core, audits: Vec::new(), outputs: Vec::new(), applied: false, done: false })
    }

    /// The transaction, for the change's reads and writes.
    pub fn tx(&mut self) -> &mut WriteTx {
        self.tx.as_mut().expect("a change's transaction is open until commit")
    }

    /// The controller as it stands in this change.
    pub fn controller(&self) -> &Controller {
        &self.core.controller
    }

    /// What the journal has registered.
    pub fn known(&self) -> &Known {
        &self.core.known
    }

    /// Applies a controller entry and appends it to the journal (unless the
    /// controller rejected it or it changed nothing).
    pub async fn apply(&mut self, entry: Entry) -> ApiResult<Vec<Output>> {
        let now = now_ms();
        let (outputs, text) = self.core.apply_local(now, entry);
        if let Some(text) = text {
            self.applied = true;
            let seq = self.tx().append(now, &text).await?;
            self.core.applied_seq = self.core.applied_seq.max(seq);
            self.audits.extend(system_audits(&outputs, now));
            self.outputs.extend(outputs.iter().cloned());
        }
        Ok(outputs)
    }

    /// Records an audit entry with the change.
    pub fn audit(&mut self, actor: &str, action: &str, subject: &str, detail: String, remote: SocketAddr) {
        self.audits.push(AuditEntry {
            id: 0,
            at_ms: now_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            detail,
            remote: remote.ip().to_string(),
        });
    }

    /// Commits everything; on failure the controller is rebuilt.
    pub async fn commit(mut self) -> ApiResult<()> {
        let audits = std::mem::take(&mut self.audits);
        for a in &audits {
            self.tx().audit(a).await?;
        }
        crate::fault::point("change.before-commit");
        let tx = self.tx.take().expect("a change commits once");
        // From here on, a failure is the commit's: the controller is
        // rebuilt (by `Drop`) if it applied anything.
        tx.commit().await?;
        self.done = true;
        let outputs = std::mem::take(&mut self.outputs);
        drop(self);
        crate::fault::point("change.after-commit");
        observe_outputs(&outputs);
        Ok(())
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        if self.applied && !self.done {
            self.core.stale = true;
        }
    }
}

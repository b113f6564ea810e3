//! Start-up reconciliation: the database, the controller's journal, the
//! blob store and the audit log must tell the same story. Every change is
//! one transaction (see `core::Change`), so a crash of this version leaves
//! nothing to repair but staged uploads; data folders written by older
//! versions, or damaged by hand, may hold more. `updraft serve` repairs
//! what it can before it serves (in one transaction); `updraft serve
//! --check` reports the same findings without changing anything.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Serialize;
use updraft_store::DeviceStatus;
use updraft_types::{DeviceId, ReleaseId, RolloutId, Sha256Digest};

use crate::api::{device_entry, release_entry};
use crate::core::Change;
use crate::error::ApiResult;
use crate::journal::Entry;
use crate::{now_ms, App};

/// One disagreement between the stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// A stable kebab-case code (`device-not-in-controller`, ...).
    pub code: &'static str,
    /// What it is about (a device, release or rollout id, a file).
    pub subject: String,
    /// What is wrong and what was (or would be) done, in words.
    pub detail: String,
    /// Whether it was repaired (always false for `--check`).
    pub repaired: bool,
}

/// What reconciliation found.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub devices: usize,
    pub releases: usize,
    pub rollouts: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    /// Findings that were not repaired (a check, or nothing could be done).
    pub fn unrepaired(&self) -> usize {
        self.findings.iter().filter(|f| !f.repaired).count()
    }
}

const NOWHERE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Compares the stores and, with `repair`, repairs what a crash (or an
/// older version) left: one transaction for every repair of the database
/// and the journal; staged uploads removed.
pub async fn reconcile(app: &App, repair: bool) -> ApiResult<Report> {
    let mut report = Report::default();
    let found = |code: &'static str, subject: &str, detail: String, repaired: bool| Finding {
        code,
        subject: subject.to_owned(),
        detail,
        repaired,
    };
    let mut findings = Vec::new();
    let devices = app.store.device_statuses().await?;
    let releases = app.store.releases().await?;
    let rollouts = app.store.rollouts().await?;
    report.devices = devices.len();
    report.releases = releases.len();
    report.rollouts = rollouts.len();
    let enrolled = app.store.audited_subjects(&["device.enroll", "device.import"]).await?;
    let published = app.store.audited_subjects(&["release.publish"]).await?;
    let created = app.store.audited_subjects(&["rollout.create"]).await?;

    let mut change = Change::begin(app).await?;
    let known = change.known().clone();

    // Devices: active in the database ⇔ registered in the controller.
    let active: HashSet<&str> =
        devices.iter().filter(|(_, s)| *s == DeviceStatus::Active).map(|(id, _)| id.as_str()).collect();
    for (id, status) in &devices {
        if *status == DeviceStatus::Active && !known.devices.contains(&DeviceId::new(id)) {
            let row = change.tx().device(id).await?;
            if repair {
                if let Some(row) = &row {
                    change.apply(device_entry(row)).await?;
                }
            }
            findings.push(found(
                "device-not-in-controller",
                id,
                "active in the database but unknown to the rollout controller: registered with it".into(),
                repair,
            ));
        }
        if !enrolled.contains(id) {
            if repair {
                change.audit(
                    "system",
                    "device.enroll",
                    id,
                    "recorded at start-up: the enrollment had no audit entry".into(),
                    NOWHERE,
                );
            }
            findings.push(found(
                "device-not-audited",
                id,
                "no audit entry for its enrollment: one added".into(),
                repair,
            ));
        }
    }
    let mut stray: Vec<&DeviceId> = known.devices.iter().filter(|d| !active.contains(d.as_str())).collect();
    stray.sort();
    for device in stray {
        if repair {
            change.apply(Entry::Retire { device: device.clone() }).await?;
        }
        findings.push(found(
            "device-not-active",
            device.as_str(),
            "registered with the rollout controller but not active in the database: retired".into(),
            repair,
        ));
    }

    // Releases: every row is known to the controller, its blob is present,
    // its publication audited.
    for r in &releases {
        if !known.releases.contains(&ReleaseId::new(&r.id)) {
            let manifest = app.store.release_meta(&r.id, "manifest").await?.unwrap_or_default();
            if repair {
                change.apply(release_entry(r, manifest.as_bytes())).await?;
            }
            findings.push(found(
                "release-not-in-controller",
                &r.id,
                "listed but unknown to the rollout controller: registered with it".into(),
                repair,
            ));
        }
        let present = match r.sha256.parse::<Sha256Digest>() {
            Ok(d) => app.blobs.size(&d).await?.is_some(),
            Err(_) => false,
        };
        if !present {
            findings.push(found(
                "release-blob-missing",
                &r.id,
                format!(
                    "its bundle (sha256 {}) is not in the blob store; hint: publish the same bundle again",
                    r.sha256
                ),
                false,
            ));
        }
        if !published.contains(&r.id) {
            if repair {
                change.audit(
                    "system",
                    "release.publish",
                    &r.id,
                    format!("recorded at start-up: the publication had no audit entry (sha256 {})", r.sha256),
                    NOWHERE,
                );
            }
            findings.push(found(
                "release-not-audited",
                &r.id,
                "no audit entry for its publication: one added".into(),
                repair,
            ));
        }
    }

    // Rollouts: a row for every rollout the controller runs, and the other way round.
    let rows: HashSet<&str> = rollouts.iter().map(|r| r.id.as_str()).collect();
    for r in &rollouts {
        let id = RolloutId::new(&r.id);
        if !known.rollouts.contains_key(&id) {
            let mut repaired = false;
            if repair {
                let outputs = change
                    .apply(Entry::CreateRollout {
                        id: id.clone(),
                        release: ReleaseId::new(&r.release),
                        plan: r.plan.clone(),
                    })
                    .await?;
                repaired = !outputs.iter().any(|o| matches!(o, updraft_rollout::Output::Rejected { .. }));
            }
            findings.push(found(
                "rollout-not-in-controller",
                &r.id,
                "stored but unknown to the rollout controller: created again (not started)".into(),
                repaired,
            ));
        }
        if !created.contains(&r.id) {
            if repair {
                change.audit("system", "rollout.create", &r.id, "recorded at start-up: no audit entry".into(), NOWHERE);
            }
            findings.push(found(
                "rollout-not-audited",
                &r.id,
                "no audit entry for its creation: one added".into(),
                repair,
            ));
        }
    }
    let mut orphans: Vec<(&RolloutId, &(ReleaseId, String))> =
        known.rollouts.iter().filter(|(id, _)| !rows.contains(id.as_str())).collect();
    orphans.sort_by(|a, b| a.0.cmp(b.0));
    for (id, (release, plan)) in orphans {
        if repair {
            change
                .tx()
                .insert_rollout(&updraft_store::RolloutRow {
                    id: id.to_string(),
                    release: release.to_string(),
                    plan: plan.clone(),
                    created_ms: now_ms(),
                    created_by: "system".into(),
                })
                .await?;
        }
        findings.push(found(
            "rollout-not-stored",
            id.as_str(),
            "run by the rollout controller but missing from the rollout list: its row written again".into(),
            repair,
        ));
    }
    if repair {
        change.commit().await?;
    } else {
        drop(change);
    }

    // Uploads staged by a process that died. The staging folder belongs to
    // one server process (replicas share an object store, not this folder).
    for (path, size) in app.blobs.staged(std::time::Duration::ZERO)? {
        let removed = repair && std::fs::remove_file(&path).is_ok();
        findings.push(found(
            "staged-upload",
            &path.display().to_string(),
            format!("an upload of {size} bytes that never completed: removed"),
            removed,
        ));
    }
    report.findings = findings;
    Ok(report)
}

//! The store against SQLite (always) and PostgreSQL (when
//! `UPDRAFT_TEST_DATABASE_URL` is set; required under `CI=true`).

use updraft_proto::{AuditEntry, Role};
use updraft_store::{DeviceRow, DeviceStatus, EnrollRefusal, Inserted, ReleaseRow, RolloutRow, Store};

/// Stores to test: SQLite in a temp dir, and PostgreSQL in a fresh schema.
pub async fn stores() -> Vec<(String, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&format!("sqlite://{}", dir.path().join("db.sqlite").display())).await.unwrap();
    let mut out = vec![("sqlite".to_owned(), sqlite, Some(dir))];
    if let Some(url) = postgres_url() {
        out.push(("postgres".to_owned(), fresh_postgres(&url).await, None));
    }
    out
}

pub fn postgres_url() -> Option<String> {
    match std::env::var("UPDRAFT_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "UPDRAFT_TEST_DATABASE_URL must be set in CI");
            eprintln!("skipped PostgreSQL: UPDRAFT_TEST_DATABASE_URL is not set");
            None
        }
    }
}

/// A PostgreSQL store in its own schema, so that tests do not see each other.
pub async fn fresh_postgres(url: &str) -> Store {
    use rand_core::RngCore;
    let mut b = [0u8; 6];
    rand_core::OsRng.fill_bytes(&mut b);
    let schema = format!("t_{}", hex::encode(b));
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("PostgreSQL at UPDRAFT_TEST_DATABASE_URL");
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(&pool).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    Store::open(&format!("{url}{sep}options=-csearch_path%3D{schema}")).await.unwrap()
}

fn device(id: &str) -> DeviceRow {
    DeviceRow {
        id: id.into(),
        family: "sensor".into(),
        hardware: "rev-a".into(),
        region: "eu".into(),
        tags: vec!["lab".into()],
        channel: Some("stable".into()),
        release: Some("fw@1.0.0".into()),
        last_known_good: Some("fw@1.0.0".into()),
        components: vec![("bootloader".into(), "1.4.0".into())],
        utc_offset_min: 60,
        enrolled_ms: 0,
        last_seen_ms: None,
        status: DeviceStatus::Active,
        attributes: vec![],
        inventory: vec![],
        check_ins: 0,
        protocol: "updraft".into(),
    }
}

#[tokio::test]
async fn ddi_actions_keep_their_state_and_ids() {
    for (name, s, _dir) in stores().await {
        let mut tx = s.begin_write().await.unwrap();
        let mut d = device("gw-1");
        d.protocol = updraft_store::PROTOCOL_DDI.into();
        tx.insert_devices(&[(d.clone(), "hash".into())]).await.unwrap();
        let a = tx.insert_ddi_action("gw-1", "fw@2.0.0", "r1", 10).await.unwrap();
        let b = tx.insert_ddi_action("gw-1", "fw@3.0.0", "r2", 20).await.unwrap();
        tx.commit().await.unwrap();
        assert!(b.id > a.id && b.id <= i64::from(i32::MAX), "{name}");
        assert_eq!(s.device("gw-1").await.unwrap().unwrap().protocol, "ddi", "{name}");
        let mut tx = s.begin_write().await.unwrap();
        let closed = updraft_store::DdiAction {
            state: updraft_store::DdiState::Closed,
            downloaded: true,
            updated_ms: 30,
            ..a.clone()
        };
        tx.set_ddi_action(&closed).await.unwrap();
        tx.commit().await.unwrap();
        let got = s.ddi_actions("gw-1").await.unwrap();
        assert_eq!(got.active.as_ref().map(|x| x.id), Some(b.id), "{name}");
        assert_eq!(got.installed, Some(closed.clone()), "{name}");
        assert_eq!(s.ddi_action(a.id).await.unwrap(), Some(closed), "{name}");
        assert_eq!(s.ddi_actions("nobody").await.unwrap(), updraft_store::DdiActions::default(), "{name}");
    }
}

#[tokio::test]
async fn tokens_enrollment_devices_releases_journal_audit() {
    for (name, s, _dir) in stores().await {
        // API tokens: stored hashed, found by secret, revocable.
        let (id, secret) = s.create_api_token("ci", Role::Releaser, 1).await.unwrap();
        assert!(secret.starts_with("upa_"));
        assert_eq!(s.find_api_token(&secret).await.unwrap().unwrap().role, Role::Releaser, "{name}");
        assert!(s.find_api_token("upa_wrong").await.unwrap().is_none());
        assert!(s.revoke_api_token(id).await.unwrap());
        assert!(s.find_api_token(&secret).await.unwrap().is_none());

        // Enrollment: limited uses, expiry, one device id once.
        let e = s.create_enrollment_token(2, 1_000, false, "admin", 0).await.unwrap();
        let first = s.enroll(&e, &device("d1"), 10).await.unwrap().unwrap();
        assert_eq!((first.status, first.retried), (DeviceStatus::Active, false));
        // A retry whose first answer was lost (same token, before any
        // check-in) gets a new device token and takes no further use.
        let retry = s.enroll(&e, &device("d1"), 20).await.unwrap().unwrap();
        assert!(retry.retried, "{name}");
        assert!(s.device_by_token(&first.token).await.unwrap().is_none(), "{name}: the lost token is replaced");
        let t1 = retry.token;
        let other = s.create_enrollment_token(1, 1_000, false, "admin", 0).await.unwrap();
        assert_eq!(s.enroll(&other, &device("d1"), 10).await.unwrap(), Err(EnrollRefusal::AlreadyEnrolled));
        let late_retry = 10 + updraft_store::ENROLL_RETRY_WINDOW_MS;
        assert_eq!(s.enroll(&e, &device("d1"), late_retry).await.unwrap(), Err(EnrollRefusal::AlreadyEnrolled));
        s.enroll(&e, &device("d2"), 10).await.unwrap().unwrap();
        assert_eq!(s.enroll(&e, &device("d3"), 10).await.unwrap(), Err(EnrollRefusal::BadToken), "{name}: uses");
        let late = s.create_enrollment_token(5, 100, false, "admin", 0).await.unwrap();
        assert_eq!(s.enroll(&late, &device("d4"), 100).await.unwrap(), Err(EnrollRefusal::BadToken), "{name}: expiry");
        let d1 = s.device_by_token(&t1).await.unwrap().unwrap();
        assert_eq!(d1, DeviceRow { enrolled_ms: 10, ..device("d1") });
        assert_eq!(s.devices_where(&updraft_store::DeviceQuery::default(), "", 10).await.unwrap().len(), 2);

        // Releases: immutable.
        let r = ReleaseRow {
            id: "fw@2.0.0".into(),
            name: "fw".into(),
            version: "2.0.0".into(),
            family: "sensor".into(),
            hardware: vec!["rev-a".into()],
            security_version: 3,
            sha256: "ab".repeat(32),
            size: 10,
            manifest_sha256: "cd".repeat(32),
            signers: vec!["k1".into()],
            builder_id: "b".into(),
            requires: vec![("bootloader".into(), ">=1.4".into())],
            published_ms: 5,
            published_by: "token:ci".into(),
        };
        assert_eq!(s.insert_release(&r, &[("manifest", "{}".into())]).await.unwrap(), Inserted::Created);
        assert_eq!(s.insert_release(&r, &[]).await.unwrap(), Inserted::Identical);
        let other = ReleaseRow { sha256: "ef".repeat(32), ..r.clone() };
        assert_eq!(s.insert_release(&other, &[]).await.unwrap(), Inserted::Conflict);
        assert_eq!(s.release("fw@2.0.0").await.unwrap().unwrap(), r);
        assert_eq!(s.release_meta("fw@2.0.0", "manifest").await.unwrap().as_deref(), Some("{}"));
        assert!(s.promote("beta", "fw@2.0.0", "x", 6).await.unwrap());
        assert!(!s.promote("beta", "fw@2.0.0", "x", 7).await.unwrap());
        assert_eq!(s.channels_of("fw@2.0.0").await.unwrap(), ["beta"]);

        // Rollouts and the journal.
        let ro = RolloutRow {
            id: "r1".into(),
            release: "fw@2.0.0".into(),
            plan: "p".into(),
            created_ms: 1,
            created_by: "op".into(),
        };
        assert!(s.insert_rollout(&ro).await.unwrap());
        assert!(!s.insert_rollout(&ro).await.unwrap());
        s.append_journal(&[(1, "a".into()), (2, "b".into())]).await.unwrap();
        let j = s.journal_since(0).await.unwrap();
        assert_eq!(j.iter().map(|e| e.2.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(s.journal_since(j[0].0).await.unwrap().len(), 1);

        // Audit.
        for action in ["release.publish", "rollout.create"] {
            s.audit(&AuditEntry {
                id: 0,
                at_ms: 1,
                actor: "token:ci".into(),
                action: action.into(),
                subject: "x".into(),
                detail: String::new(),
                remote: "127.0.0.1".into(),
            })
            .await
            .unwrap();
        }
        assert_eq!(s.audit_log(0, None, 10).await.unwrap().len(), 2);
        assert_eq!(s.audit_log(0, Some("rollout.create"), 10).await.unwrap().len(), 1, "{name}");
    }
}

#[tokio::test]
async fn blobs_are_content_addressed_and_written_once() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    // The local folder, and the object-store code path (file:// through object_store).
    let local = updraft_store::BlobStore::open(&dir.path().join("local")).await.unwrap();
    let url = format!("file://{}", dir.path().join("objects").display());
    let object = updraft_store::BlobStore::open_url(&url, &dir.path().join("tmp")).await.unwrap();
    for blobs in [local, object] {
        let mut w = blobs.writer().await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        let digest = w.finish().await.unwrap();
        assert_eq!(digest.to_hex(), "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        blobs.commit(w, &digest).await.unwrap();
        assert_eq!(blobs.size(&digest).await.unwrap(), Some(11), "{blobs:?}");
        let mut read = Vec::new();
        let mut s = blobs.read_range(&digest, 6, 5).await.unwrap();
        while let Some(chunk) = s.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(read, b"world", "{blobs:?}");
        // Written once: committing other bytes under the same digest changes nothing.
        let mut w = blobs.writer().await.unwrap();
        w.write(b"HELLO WORLD").await.unwrap();
        w.finish().await.unwrap();
        blobs.commit(w, &digest).await.unwrap();
        assert_eq!(blobs.size(&digest).await.unwrap(), Some(11));
        // An abandoned upload leaves nothing.
        let mut w = blobs.writer().await.unwrap();
        w.write(b"partial").await.unwrap();
        drop(w);
        let missing = updraft_types::Sha256Digest([9; 32]);
        assert_eq!(blobs.size(&missing).await.unwrap(), None);
    }
    for tmp in [dir.path().join("local/tmp"), dir.path().join("tmp")] {
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "{}", tmp.display());
    }
}

#[tokio::test]
async fn pipeline_builds_and_flaky_history() {
    for (name, s, _dir) in stores().await {
        let b = |project: &str, commit: &str, passed: bool, at_ms: i64| updraft_store::BuildRecord {
            id: 0,
            project: project.into(),
            commit: commit.into(),
            passed,
            report: format!("{{\"commit\":\"{commit}\"}}"),
            at_ms,
            actor: "token:ci".into(),
        };
        let first = s.add_build(&b("acme-fw", "c1", false, 1)).await.unwrap();
        let second = s.add_build(&b("acme-fw", "c2", true, 2)).await.unwrap();
        s.add_build(&b("other", "x", true, 3)).await.unwrap();
        assert!(second > first, "{name}");
        let acme = s.builds(Some("acme-fw"), 10).await.unwrap();
        let got: Vec<(&str, bool)> = acme.iter().map(|r| (r.commit.as_str(), r.passed)).collect();
        assert_eq!(got, [("c2", true), ("c1", false)], "{name}: newest first");
        assert_eq!(acme[0].report, "{\"commit\":\"c2\"}");
        assert_eq!(s.builds(None, 10).await.unwrap().len(), 3, "{name}");
        assert_eq!(s.builds(None, 1).await.unwrap()[0].project, "other", "{name}");

        assert_eq!(s.flaky_state("acme-fw").await.unwrap(), None, "{name}");
        s.set_flaky_state("acme-fw", "{\"tests\":{}}", 5).await.unwrap();
        s.set_flaky_state("acme-fw", "{\"tests\":{\"a\":{}}}", 6).await.unwrap();
        assert_eq!(s.flaky_state("acme-fw").await.unwrap().as_deref(), Some("{\"tests\":{\"a\":{}}}"), "{name}");
    }
}

#[tokio::test]
async fn devices_wait_for_acceptance_are_decommissioned_and_enroll_again_with_their_history() {
    for (name, s, _dir) in stores().await {
        let e = s.create_enrollment_token(3, 1_000, true, "admin", 0).await.unwrap();
        let enrolled = s.enroll(&e, &device("p1"), 10).await.unwrap().unwrap();
        assert_eq!(enrolled.status, DeviceStatus::Pending, "{name}");
        let t1 = enrolled.token;
        // Accepted, tagged, attributed.
        let mut d = s.device("p1").await.unwrap().unwrap();
        d.status = DeviceStatus::Active;
        d.tags.push("canary".into());
        d.attributes = vec![("site".into(), "berlin".into())];
        assert!(s.set_device_admin(&d, 20, ("accepted", "by admin")).await.unwrap());
        let got = s.device_by_token(&t1).await.unwrap().unwrap();
        assert_eq!(
            (got.status, got.tags.len(), got.attributes.clone()),
            (DeviceStatus::Active, 2, d.attributes.clone())
        );
        // What it reported, and a failure with its log.
        d.inventory = vec![("agentVersion".into(), "0.1.0".into())];
        d.last_seen_ms = Some(30);
        d.check_ins = 3;
        s.update_device(&d).await.unwrap();
        s.add_history("p1", 40, "failed", Some("fw@2.0.0"), &"x".repeat(100_000)).await.unwrap();
        // Reports of many devices in one statement (more than one chunk).
        let e2 = s.create_enrollment_token(1000, 1_000, false, "admin", 0).await.unwrap();
        let mut many = Vec::new();
        for i in 0..(updraft_store::REPORT_ROWS_PER_STATEMENT + 3) {
            let id = format!("bulk-{i:04}");
            s.enroll(&e2, &device(&id), 10).await.unwrap().unwrap();
            let mut r = s.device(&id).await.unwrap().unwrap();
            r.inventory = vec![("slot".into(), "B".into())];
            r.last_seen_ms = Some(77);
            r.check_ins = i as i64;
            r.release = if i % 2 == 0 { None } else { Some("fw@3.0.0".into()) };
            many.push(r);
        }
        s.record_reports(&many, &[]).await.unwrap();
        for r in [&many[0], &many[401], &many[402]] {
            assert_eq!(&s.device(&r.id).await.unwrap().unwrap(), r, "{name}");
        }
        // Decommissioned: the token no longer works; the history stays.
        d.status = DeviceStatus::Decommissioned;
        assert!(s.set_device_admin(&d, 50, ("decommissioned", "by admin")).await.unwrap());
        assert!(s.device_by_token(&t1).await.unwrap().is_none(), "{name}: the token is revoked");
        // It may enroll again (pending again with this token), keeping its history.
        let t2 = s.enroll(&e, &device("p1"), 60).await.unwrap().unwrap().token;
        assert!(s.device_by_token(&t2).await.unwrap().is_some());
        let h = s.history("p1", 10).await.unwrap();
        let kinds: Vec<&str> = h.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["enrolled", "decommissioned", "failed", "accepted", "enrolled"], "{name}");
        assert_eq!(h[2].detail.len(), updraft_store::MAX_HISTORY_DETAIL_BYTES, "{name}: the log tail is bounded");
        // The history is bounded per device.
        for i in 0..updraft_store::MAX_HISTORY_PER_DEVICE + 5 {
            s.add_history("p1", 100 + i, "check_in", None, "").await.unwrap();
        }
        assert_eq!(
            s.history("p1", 10_000).await.unwrap().len() as i64,
            updraft_store::MAX_HISTORY_PER_DEVICE,
            "{name}"
        );
    }
}

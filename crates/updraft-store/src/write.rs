//! Writes: every change goes through one transaction ([`WriteTx`]), so
//! that a change's rows, its controller journal entries and its audit
//! entries commit together or not at all. On SQLite the transaction holds
//! the one writer connection (writes never contend, so "database is
//! locked" cannot happen between Updraft's own writers); on PostgreSQL it
//! holds the journal's advisory lock, so that replicas append one at a time.

use sqlx::Row;
use updraft_proto::{AuditEntry, Role};

use crate::*;

/// How long after an enrollment a retry with the same enrollment token
/// (whose answer was lost) gets a new device token instead of a refusal.
pub const ENROLL_RETRY_WINDOW_MS: i64 = 15 * 60 * 1000;

/// What an enrollment gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    /// The device token (shown once).
    pub token: String,
    pub status: DeviceStatus,
    /// A retry of an enrollment that had committed: the device existed and
    /// has a new token; nothing else changed.
    pub retried: bool,
}

/// A write transaction (see the module's documentation). Dropping it
/// without [`WriteTx::commit`] rolls everything back.
pub struct WriteTx {
    pub(crate) tx: sqlx::Transaction<'static, sqlx::Any>,
}

impl WriteTx {
    /// Journal entries after `seq`, in order.
    pub async fn since(&mut self, seq: i64) -> Result<Vec<(i64, i64, String)>> {
        let rows = sqlx::query("SELECT seq, at_ms, entry FROM journal WHERE seq > $1 ORDER BY seq")
            .bind(seq)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("seq")?, r.try_get("at_ms")?, r.try_get("entry")?))).collect()
    }

    /// Appends a journal entry; returns its sequence number.
    pub async fn append(&mut self, at_ms: i64, entry: &str) -> Result<i64> {
        let row = sqlx::query("INSERT INTO journal (at_ms, entry) VALUES ($1, $2) RETURNING seq")
            .bind(at_ms)
            .bind(entry)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get("seq")?)
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// A device row, read inside the transaction.
    pub async fn device(&mut self, id: &str) -> Result<Option<DeviceRow>> {
        let row = sqlx::query(&format!("SELECT {} FROM devices WHERE id = $1", Store::DEVICE_COLUMNS))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(Store::device_row).transpose()
    }

    /// A release row, read inside the transaction.
    pub async fn release(&mut self, id: &str) -> Result<Option<ReleaseRow>> {
        let row = sqlx::query(&format!("SELECT {} FROM releases WHERE id = $1", Store::RELEASE_COLUMNS))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(Store::release_row).transpose()
    }

    /// Creates a token; returns its id and the secret (shown once).
    pub async fn create_api_token(&mut self, name: &str, role: Role, now_ms: i64) -> Result<(i64, String)> {
        let secret = new_secret("upa_");
        let row =
            sqlx::query("INSERT INTO api_tokens (name, role, hash, created_ms) VALUES ($1, $2, $3, $4) RETURNING id")
                .bind(name)
                .bind(role.as_str())
                .bind(hash_secret(&secret))
                .bind(now_ms)
                .fetch_one(&mut *self.tx)
                .await?;
        Ok((row.try_get("id")?, secret))
    }

    /// Revokes every live token with this name; returns how many.
    pub async fn revoke_api_tokens_named(&mut self, name: &str) -> Result<u64> {
        let r = sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE name = $1 AND revoked = 0")
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        Ok(r.rows_affected())
    }

    /// Whether token `id` is the one live admin token (revoking it would
    /// leave no way in but `updraft serve admin-token --reset`).
    pub async fn is_last_admin_token(&mut self, id: i64) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS admins, COALESCE(SUM(CASE WHEN id = $1 THEN 1 ELSE 0 END), 0) AS this \
             FROM api_tokens WHERE role = 'admin' AND revoked = 0",
        )
        .bind(id)
        .fetch_one(&mut *self.tx)
        .await?;
        let admins: i64 = row.try_get("admins")?;
        let this: i64 = row.try_get("this")?;
        Ok(admins == 1 && this == 1)
    }

    /// Revokes a token; false if there is none with that id.
    pub async fn revoke_api_token(&mut self, id: i64) -> Result<bool> {
        let r = sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE id = $1").bind(id).execute(&mut *self.tx).await?;
        Ok(r.rows_affected() == 1)
    }

    /// Creates an enrollment token; returns the secret.
    pub async fn create_enrollment_token(
        &mut self,
        uses: u32,
        expires_ms: i64,
        require_accept: bool,
        by: &str,
        now_ms: i64,
    ) -> Result<String> {
        let secret = new_secret("upe_");
        sqlx::query("INSERT INTO enrollment_tokens (hash, uses_left, expires_ms, created_by, created_ms, require_accept) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(hash_secret(&secret))
            .bind(i64::from(uses))
            .bind(expires_ms)
            .bind(by)
            .bind(now_ms)
            .bind(i64::from(require_accept))
            .execute(&mut *self.tx)
            .await?;
        Ok(secret)
    }

    /// Enrolls a device: takes one use of the enrollment token and inserts
    /// the device (pending if the token requires acceptance). A
    /// decommissioned id enrolls again (its history is kept). A retry of an
    /// enrollment whose answer was lost (the same enrollment token, within
    /// [`ENROLL_RETRY_WINDOW_MS`], before the device ever checked in) gets a
    /// new device token for the same device and takes no further use.
    /// Returns the enrollment, or why not.
    pub async fn enroll(
        &mut self,
        enrollment_secret: &str,
        device: &DeviceRow,
        now_ms: i64,
    ) -> Result<Result<Enrolled, EnrollRefusal>> {
        let token_hash = hash_secret(enrollment_secret);
        let token = sqlx::query("SELECT require_accept, uses_left, expires_ms FROM enrollment_tokens WHERE hash = $1")
            .bind(&token_hash)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(token) = token else {
            return Ok(Err(EnrollRefusal::BadToken));
        };
        let usable = token.try_get::<i64, _>("uses_left")? > 0 && token.try_get::<i64, _>("expires_ms")? > now_ms;
        let status =
            if token.try_get::<i64, _>("require_accept")? != 0 { DeviceStatus::Pending } else { DeviceStatus::Active };
        let existing = sqlx::query(
            "SELECT status, enrolled_with, enrolled_ms, last_seen_ms, check_ins, family, hardware FROM devices WHERE id = $1",
        )
        .bind(&device.id)
        .fetch_optional(&mut *self.tx)
        .await?;
        let secret = new_secret("upd_");
        let again = match existing {
            None => false,
            Some(row) if row.try_get::<String, _>("status")? == DeviceStatus::Decommissioned.as_str() => true,
            Some(row) => {
                let retry = row.try_get::<Option<String>, _>("enrolled_with")?.as_deref() == Some(token_hash.as_str())
                    && now_ms - row.try_get::<i64, _>("enrolled_ms")? < ENROLL_RETRY_WINDOW_MS
                    && row.try_get::<Option<i64>, _>("last_seen_ms")?.is_none()
                    && row.try_get::<i64, _>("check_ins")? == 0
                    && row.try_get::<String, _>("family")? == device.family
                    && row.try_get::<String, _>("hardware")? == device.hardware;
                if !retry {
                    return Ok(Err(EnrollRefusal::AlreadyEnrolled));
                }
                let status = DeviceStatus::parse(&row.try_get::<String, _>("status")?).unwrap_or(status);
                sqlx::query("UPDATE devices SET token_hash = $2 WHERE id = $1")
                    .bind(&device.id)
                    .bind(hash_secret(&secret))
                    .execute(&mut *self.tx)
                    .await?;
                Store::history_in(
                    &mut self.tx,
                    &device.id,
                    now_ms,
                    "enrolled",
                    None,
                    "enrollment retried: new device token",
                )
                .await?;
                return Ok(Ok(Enrolled { token: secret, status, retried: true }));
            }
        };
        if !usable {
            return Ok(Err(EnrollRefusal::BadToken));
        }
        sqlx::query("UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE hash = $1")
            .bind(&token_hash)
            .execute(&mut *self.tx)
            .await?;
        let sql = if again {
            "UPDATE devices SET token_hash = $2, family = $3, hardware = $4, region = $5, tags = $6, channel = $7, release = $8, \
             last_known_good = $9, components = $10, utc_offset_min = $11, enrolled_ms = $12, status = $13, last_seen_ms = NULL, \
             check_ins = 0, enrolled_with = $14 WHERE id = $1"
        } else {
            "INSERT INTO devices (id, token_hash, family, hardware, region, tags, channel, release, last_known_good, components, utc_offset_min, enrolled_ms, status, enrolled_with) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        };
        sqlx::query(sql)
            .bind(&device.id)
            .bind(hash_secret(&secret))
            .bind(&device.family)
            .bind(&device.hardware)
            .bind(&device.region)
            .bind(json(&device.tags))
            .bind(device.channel.clone())
            .bind(device.release.clone())
            .bind(device.last_known_good.clone())
            .bind(pairs(&device.components))
            .bind(i64::from(device.utc_offset_min))
            .bind(now_ms)
            .bind(status.as_str())
            .bind(&token_hash)
            .execute(&mut *self.tx)
            .await?;
        let detail = format!(
            "{}{} {}/{}",
            if again { "enrolled again" } else { "enrolled" },
            if status == DeviceStatus::Pending { ", waiting for acceptance" } else { "" },
            device.family,
            device.hardware
        );
        Store::history_in(&mut self.tx, &device.id, now_ms, "enrolled", device.release.as_deref(), &detail).await?;
        Ok(Ok(Enrolled { token: secret, status, retried: false }))
    }

    /// Inserts devices with their token hashes in one transaction (bulk
    /// import; enrollment is the normal way in). Existing ids are refused.
    pub async fn insert_devices(&mut self, devices: &[(DeviceRow, String)]) -> Result<()> {
        for (d, token_hash) in devices {
            sqlx::query(
                "INSERT INTO devices (id, token_hash, family, hardware, region, tags, channel, release, last_known_good, components, utc_offset_min, enrolled_ms, attributes, protocol) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(&d.id)
            .bind(token_hash)
            .bind(&d.family)
            .bind(&d.hardware)
            .bind(&d.region)
            .bind(json(&d.tags))
            .bind(d.channel.clone())
            .bind(d.release.clone())
            .bind(d.last_known_good.clone())
            .bind(pairs(&d.components))
            .bind(i64::from(d.utc_offset_min))
            .bind(d.enrolled_ms)
            .bind(pairs(&d.attributes))
            .bind(&d.protocol)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Sets what operators manage: status, tags and attributes. Taking a
    /// device out of service revokes its token.
    pub async fn set_device_admin(&mut self, d: &DeviceRow, now_ms: i64, history: (&str, &str)) -> Result<bool> {
        let query = sqlx::query(if d.status == DeviceStatus::Decommissioned {
            // A value no token hashes to (hashes are hex): the token is revoked.
            "UPDATE devices SET status = $2, tags = $3, attributes = $4, token_hash = 'revoked:' || id WHERE id = $1"
        } else {
            "UPDATE devices SET status = $2, tags = $3, attributes = $4 WHERE id = $1"
        });
        let done = query
            .bind(&d.id)
            .bind(d.status.as_str())
            .bind(json(&d.tags))
            .bind(pairs(&d.attributes))
            .execute(&mut *self.tx)
            .await?;
        if done.rows_affected() == 1 {
            Store::history_in(&mut self.tx, &d.id, now_ms, history.0, None, history.1).await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Inserts a release and its metadata, unless one with this id exists.
    /// Releases never change: identical bytes are a no-op, other bytes a conflict.
    pub async fn insert_release(&mut self, r: &ReleaseRow, meta: &[(&str, String)]) -> Result<Inserted> {
        let existing =
            sqlx::query("SELECT sha256 FROM releases WHERE id = $1").bind(&r.id).fetch_optional(&mut *self.tx).await?;
        if let Some(row) = existing {
            let sha: String = row.try_get("sha256")?;
            return Ok(if sha == r.sha256 { Inserted::Identical } else { Inserted::Conflict });
        }
        sqlx::query(&format!(
            "INSERT INTO releases ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            Store::RELEASE_COLUMNS
        ))
        .bind(&r.id)
        .bind(&r.name)
        .bind(&r.version)
        .bind(&r.family)
        .bind(json(&r.hardware))
        .bind(r.security_version)
        .bind(&r.sha256)
        .bind(r.size)
        .bind(&r.manifest_sha256)
        .bind(json(&r.signers))
        .bind(&r.builder_id)
        .bind(pairs(&r.requires))
        .bind(r.published_ms)
        .bind(&r.published_by)
        .execute(&mut *self.tx)
        .await?;
        for (kind, body) in meta {
            sqlx::query("INSERT INTO release_meta (release, kind, body) VALUES ($1, $2, $3)")
                .bind(&r.id)
                .bind(*kind)
                .bind(body)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(Inserted::Created)
    }

    /// Puts a release into a channel; false if it was already there.
    pub async fn promote(&mut self, channel: &str, release: &str, by: &str, now_ms: i64) -> Result<bool> {
        let exists = sqlx::query("SELECT release FROM channels WHERE channel = $1 AND release = $2")
            .bind(channel)
            .bind(release)
            .fetch_optional(&mut *self.tx)
            .await?;
        if exists.is_some() {
            return Ok(false);
        }
        sqlx::query("INSERT INTO channels (channel, release, promoted_ms, promoted_by) VALUES ($1, $2, $3, $4)")
            .bind(channel)
            .bind(release)
            .bind(now_ms)
            .bind(by)
            .execute(&mut *self.tx)
            .await?;
        Ok(true)
    }

    /// Inserts a rollout; false if the id is taken.
    pub async fn insert_rollout(&mut self, r: &RolloutRow) -> Result<bool> {
        let exists =
            sqlx::query("SELECT id FROM rollouts WHERE id = $1").bind(&r.id).fetch_optional(&mut *self.tx).await?;
        if exists.is_some() {
            return Ok(false);
        }
        sqlx::query("INSERT INTO rollouts (id, release, plan, created_ms, created_by) VALUES ($1, $2, $3, $4, $5)")
            .bind(&r.id)
            .bind(&r.release)
            .bind(&r.plan)
            .bind(r.created_ms)
            .bind(&r.created_by)
            .execute(&mut *self.tx)
            .await?;
        Ok(true)
    }

    /// Appends entries to the controller journal.
    pub async fn append_journal(&mut self, entries: &[(i64, String)]) -> Result<()> {
        for (at, entry) in entries {
            self.append(*at, entry).await?;
        }
        Ok(())
    }

    /// Stores a new trust root version; false if that version is stored.
    pub async fn add_trust_root(&mut self, version: i64, body: &str, by: &str, now_ms: i64) -> Result<bool> {
        let exists = sqlx::query("SELECT version FROM trust_roots WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *self.tx)
            .await?;
        if exists.is_some() {
            return Ok(false);
        }
        sqlx::query("INSERT INTO trust_roots (version, body, added_ms, added_by) VALUES ($1, $2, $3, $4)")
            .bind(version)
            .bind(body)
            .bind(now_ms)
            .bind(by)
            .execute(&mut *self.tx)
            .await?;
        Ok(true)
    }

    /// Records a pipeline run's report (build health); returns its id.
    pub async fn add_build(&mut self, b: &BuildRecord) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO pipeline_builds (project, git_commit, passed, report, at_ms, actor) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&b.project)
        .bind(&b.commit)
        .bind(i64::from(b.passed))
        .bind(&b.report)
        .bind(b.at_ms)
        .bind(&b.actor)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Appends to the audit log (append-only: nothing updates or deletes it).
    pub async fn audit(&mut self, e: &AuditEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at_ms, actor, action, subject, detail, remote) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.at_ms)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.subject)
        .bind(&e.detail)
        .bind(&e.remote)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl WriteTx {
    /// A new open DDI action; refused past signed 32 bits of ids.
    pub async fn insert_ddi_action(
        &mut self,
        device: &str,
        release: &str,
        rollout: &str,
        now_ms: i64,
    ) -> Result<DdiAction> {
        let row = sqlx::query(
            "INSERT INTO ddi_actions (device, release, rollout, state, downloaded, created_ms, updated_ms) \
             VALUES ($1, $2, $3, 'open', 0, $4, $4) RETURNING id",
        )
        .bind(device)
        .bind(release)
        .bind(rollout)
        .bind(now_ms)
        .fetch_one(&mut *self.tx)
        .await?;
        let id = row.try_get::<i64, _>("id").or_else(|_| row.try_get::<i32, _>("id").map(i64::from))?;
        if id > i64::from(i32::MAX) {
            return Err(StoreError::Corrupt(format!("DDI action id {id} is past signed 32 bits")));
        }
        Ok(DdiAction {
            id,
            device: device.to_owned(),
            release: release.to_owned(),
            rollout: rollout.to_owned(),
            state: DdiState::Open,
            downloaded: false,
            created_ms: now_ms,
            updated_ms: now_ms,
        })
    }

    /// Records an action's state and whether its download began.
    pub async fn set_ddi_action(&mut self, a: &DdiAction) -> Result<()> {
        sqlx::query("UPDATE ddi_actions SET state = $2, downloaded = $3, updated_ms = $4 WHERE id = $1")
            .bind(a.id)
            .bind(a.state.as_str())
            .bind(i64::from(a.downloaded))
            .bind(a.updated_ms)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// What a DDI client tells about itself: its protocol, hardware,
    /// region and attributes (`configData`).
    pub async fn set_device_profile(&mut self, d: &DeviceRow) -> Result<bool> {
        let done =
            sqlx::query("UPDATE devices SET protocol = $2, hardware = $3, region = $4, attributes = $5 WHERE id = $1")
                .bind(&d.id)
                .bind(&d.protocol)
                .bind(&d.hardware)
                .bind(&d.region)
                .bind(pairs(&d.attributes))
                .execute(&mut *self.tx)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}

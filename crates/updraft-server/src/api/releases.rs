//! Releases: publishing bundles, their files, channels and promotion.

use super::*;

fn conflicting_release(id: &str) -> ApiError {
    ApiError::conflict(format!(
        "release {id} already exists with other bytes; releases never change; hint: publish a new version"
    ))
}

/// The controller entry of a release: its row and the manifest it was
/// published with (component images provide their component at the
/// release's version).
pub(crate) fn release_entry(row: &ReleaseRow, manifest: &[u8]) -> Entry {
    let provides = updraft_bundle::Manifest::from_json(manifest)
        .map(|m| {
            m.images
                .iter()
                .filter_map(|i| match &i.target {
                    updraft_bundle::Target::Component(c) => Some((c.clone(), m.version.to_string())),
                    updraft_bundle::Target::Slot => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Entry::Release {
        id: ReleaseId::new(&row.id),
        family: row.family.clone(),
        hardware: row.hardware.clone(),
        requires: row.requires.clone(),
        provides,
    }
}

pub(crate) async fn release_view(app: &App, r: ReleaseRow) -> ApiResult<Release> {
    let channels = app.store.channels_of(&r.id).await?;
    Ok(Release {
        id: ReleaseId::new(&r.id),
        name: r.name,
        version: r.version,
        family: r.family,
        hardware: r.hardware,
        security_version: r.security_version as u64,
        sha256: r.sha256.parse().map_err(ApiError::internal)?,
        size: r.size as u64,
        manifest_sha256: r.manifest_sha256.parse().map_err(ApiError::internal)?,
        signers: r.signers,
        builder_id: r.builder_id,
        channels,
        published_ms: r.published_ms,
        published_by: r.published_by,
    })
}

pub(super) async fn publish(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: Body,
) -> ApiResult<Response> {
    let Some(trust) = app.trust().await?.map(|t| t.trusted) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-trust-root",
            "the server has no trust root, so it cannot verify bundles; hint: start it with --trust root.json",
        ));
    };
    // Stream the body to a temporary blob; nothing is kept unless it verifies.
    let mut writer = app.blobs.writer().await?;
    let mut stream = body.into_data_stream();
    loop {
        let next = tokio::time::timeout(BODY_READ_TIMEOUT, stream.next()).await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!("the upload stalled: nothing arrived for {} s", BODY_READ_TIMEOUT.as_secs()),
            )
        })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        writer.write(&chunk).await?;
    }
    let digest = writer.finish().await?;
    let size = writer.size();
    let temp = writer.temp_path().to_path_buf();
    let staging = app.blobs.staging_dir().to_path_buf();
    let verified = tokio::task::spawn_blocking(move || {
        // One pass: verification, and the DDI client's image (if any) copied out with its hashes.
        let (v, ddi) = crate::ddi::verify_and_stage(&temp, &trust, &staging)?;
        let files = updraft_bundle::metadata_files(&temp)?;
        Ok::<_, updraft_bundle::Error>((v, files, ddi))
    })
    .await
    .map_err(ApiError::internal)?;
    let (v, files, ddi) = match verified {
        Ok(x) => x,
        Err(updraft_bundle::Error::Rejected(r)) => {
            return Err(ApiError::unprocessable("bundle-rejected", format!("the bundle was refused: {r}")))
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let m = &v.header.manifest;
    let id = format!("{}@{}", m.name, m.version);
    let row = ReleaseRow {
        id: id.clone(),
        name: m.name.clone(),
        version: m.version.to_string(),
        family: m.family.clone(),
        hardware: m.hardware.clone(),
        security_version: m.security_version.0 as i64,
        sha256: digest.to_hex(),
        size: size as i64,
        manifest_sha256: v.header.manifest_sha256.to_hex(),
        signers: v.header.signers.iter().map(|k| k.to_hex()).collect(),
        builder_id: v.header.provenance.builder_id.clone(),
        requires: m.requires.iter().map(|r| (r.component.clone(), r.version.to_string())).collect(),
        published_ms: now_ms(),
        published_by: actor.label(),
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut meta = vec![
        ("manifest", text(&files.manifest)),
        ("signatures", text(&files.manifest_dsse)),
        ("provenance", text(&files.provenance_dsse)),
    ];
    if let Some(s) = &files.sbom {
        meta.push(("sbom", text(s)));
    }
    if let Some((_, art)) = &ddi {
        meta.push((crate::ddi::ARTIFACT_META, serde_json::to_string(art).map_err(ApiError::internal)?));
    }
    // Another release under this name and version: refused before its bytes are kept.
    if let Some(existing) = app.store.release(&id).await? {
        if existing.sha256 != row.sha256 {
            return Err(conflicting_release(&id));
        }
    }
    fault::point("publish.after-upload");
    // The blob is durable before the release row can be seen: a crash in
    // between leaves a blob that nothing lists, never a release without
    // its file. Publishing the same bytes again restores a missing blob.
    app.blobs.commit(writer, &digest).await?;
    if let Some((staged, art)) = ddi {
        let sha: Sha256Digest = art.sha256.parse().map_err(ApiError::internal)?;
        app.blobs.commit_file(staged, &sha).await?;
    }
    fault::point("publish.after-blob");
    let mut change = Change::begin(&app).await?;
    match change.tx().insert_release(&row, &meta).await? {
        Inserted::Conflict => return Err(conflicting_release(&id)),
        Inserted::Identical => {
            drop(change);
            let existing = app.store.release(&id).await?.ok_or_else(|| ApiError::internal("release vanished"))?;
            return Ok((StatusCode::OK, Json(release_view(&app, existing).await?)).into_response());
        }
        Inserted::Created => {}
    }
    change.apply(release_entry(&row, &files.manifest)).await?;
    change.audit(&actor.label(), "release.publish", &id, format!("sha256 {digest}, {size} bytes"), remote);
    change.commit().await?;
    Ok((StatusCode::CREATED, Json(release_view(&app, row).await?)).into_response())
}

pub(super) async fn list_releases(State(app): State<Arc<App>>) -> ApiResult<Json<Vec<Release>>> {
    let mut out = Vec::new();
    for r in app.store.releases().await? {
        out.push(release_view(&app, r).await?);
    }
    Ok(Json(out))
}

pub(super) async fn show_release(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Json<Release>> {
    check_id("release", &id)?;
    let r = app.store.release(&id).await?.ok_or_else(|| ApiError::not_found(format!("no release {id}")))?;
    Ok(Json(release_view(&app, r).await?))
}

pub(super) async fn release_file(
    State(app): State<Arc<App>>,
    Path((id, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    check_id("release", &id)?;
    if !matches!(file.as_str(), "manifest" | "signatures" | "provenance" | "sbom") {
        return Err(ApiError::not_found(format!("no file {file:?}; hint: manifest, signatures, provenance or sbom")));
    }
    let body = app
        .store
        .release_meta(&id, &file)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("release {id} has no {file}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub(super) async fn show_channel(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    check_id("channel", &channel)?;
    Ok(Json(app.store.channel(&channel).await?))
}

pub(super) async fn promote(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(channel): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let req: PromoteRequest = parse(&body)?;
    let added = run_promote(&app, &actor, remote, &channel, req.release.as_str()).await?;
    Ok(if added { StatusCode::CREATED } else { StatusCode::OK })
}

/// Promotes a release into a channel and audits it (the API and the
/// dashboard both come here); false if it was there already.
pub(crate) async fn run_promote(
    app: &Arc<App>,
    actor: &Actor,
    remote: SocketAddr,
    channel: &str,
    release: &str,
) -> ApiResult<bool> {
    check_id("channel", channel)?;
    check_id("release", release)?;
    if app.store.release(release).await?.is_none() {
        return Err(ApiError::not_found(format!("no release {release}")));
    }
    let mut change = Change::begin(app).await?;
    let added = change.tx().promote(channel, release, &actor.label(), now_ms()).await?;
    if added {
        change.audit(&actor.label(), "channel.promote", channel, release.to_owned(), remote);
        change.commit().await?;
    }
    Ok(added)
}

//! The content-addressed, write-once blob store. Blobs live at
//! `sha256/<hex>` in a local folder, or in any object store the
//! `object_store` crate reaches (S3 and S3-compatible services such as
//! MinIO or Ceph, or a `file://` folder through the same code path).
//! Uploads are first written to a local temporary file, hashed on the way
//! and fsynced, so that the server can verify them before they are kept;
//! committing moves (or uploads) the file to its digest, once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use updraft_types::Sha256Digest;

use crate::{Result, StoreError};

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

fn object(context: &str, e: object_store::Error) -> StoreError {
    StoreError::Io { context: context.to_owned(), source: std::io::Error::other(e) }
}

#[derive(Clone)]
enum Backend {
    Local { root: PathBuf },
    Object { store: Arc<dyn ObjectStore>, prefix: object_store::path::Path },
}

/// Where blobs are kept.
#[derive(Clone)]
pub struct BlobStore {
    tmp: PathBuf,
    backend: Backend,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Local { root } => write!(f, "BlobStore(local {})", root.display()),
            Backend::Object { prefix, .. } => write!(f, "BlobStore(object store, prefix {prefix})"),
        }
    }
}

/// Bytes read from a blob.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Read buffer and upload part size.
const CHUNK: usize = 8 * 1024 * 1024;

impl BlobStore {
    /// Blobs under a local folder.
    pub async fn open(root: &Path) -> Result<BlobStore> {
        for dir in [root.join("sha256"), root.join("tmp")] {
            tokio::fs::create_dir_all(&dir).await.map_err(io(format!("cannot create {}", dir.display())))?;
        }
        Ok(BlobStore { tmp: root.join("tmp"), backend: Backend::Local { root: root.to_path_buf() } })
    }

    /// Blobs in an object store: `s3://BUCKET/PREFIX` (credentials, region and
    /// endpoint from the standard `AWS_*` variables, e.g. `AWS_ENDPOINT` and
    /// `AWS_ALLOW_HTTP=true` for MinIO) or `file:///PATH`. Uploads are staged
    /// in `tmp`.
    pub async fn open_url(url: &str, tmp: &Path) -> Result<BlobStore> {
        let bad = |m: String| StoreError::BadBlobUrl(format!("{url}: {m}"));
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match parsed.scheme() {
            "s3" => {
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(s3), parsed.path().trim_start_matches('/').to_owned())
            }
            "file" => {
                let path = parsed.to_file_path().map_err(|()| bad("not a local path".into()))?;
                tokio::fs::create_dir_all(&path).await.map_err(io(format!("cannot create {}", path.display())))?;
                let fs =
                    object_store::local::LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(e.to_string()))?;
                (Arc::new(fs), String::new())
            }
            other => {
                return Err(bad(format!("unsupported scheme {other:?}; hint: s3://BUCKET/PREFIX or file:///PATH")))
            }
        };
        tokio::fs::create_dir_all(tmp).await.map_err(io(format!("cannot create {}", tmp.display())))?;
        Ok(BlobStore { tmp: tmp.to_path_buf(), backend: Backend::Object { store, prefix: prefix.as_str().into() } })
    }

    fn object_path(prefix: &object_store::path::Path, digest: &Sha256Digest) -> object_store::path::Path {
        prefix.child("sha256").child(digest.to_hex())
    }

    /// A writer for a new blob (a local temporary file).
    pub async fn writer(&self) -> Result<BlobWriter> {
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&self.tmp)
            .map_err(io("cannot create a temporary blob"))?;
        let (file, path) = tmp.into_parts();
        Ok(BlobWriter { file: tokio::fs::File::from_std(file), path, sha: Sha256::new(), size: 0 })
    }

    /// Keeps a finished blob under its digest (a no-op if it exists: blobs
    /// are written once).
    pub async fn commit(&self, writer: BlobWriter, digest: &Sha256Digest) -> Result<()> {
        self.commit_file(writer.path, digest).await
    }

    /// Where blobs are staged before [`BlobStore::commit_file`] (a local folder).
    pub fn staging_dir(&self) -> &Path {
        &self.tmp
    }

    /// Keeps a synced file staged in [`BlobStore::staging_dir`] as the blob
    /// `digest` (whose bytes the caller hashed while writing it).
    pub async fn commit_file(&self, staged: tempfile::TempPath, digest: &Sha256Digest) -> Result<()> {
        match &self.backend {
            Backend::Local { root } => {
                let dest = root.join("sha256").join(digest.to_hex());
                if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
                    return Ok(());
                }
                let dest2 = dest.clone();
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    staged.persist(&dest2).map_err(|e| e.error)?;
                    if let Some(dir) = dest2.parent() {
                        std::fs::File::open(dir)?.sync_all()?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| StoreError::Io { context: "blob commit task".into(), source: std::io::Error::other(e) })?
                .map_err(io(format!("cannot move a blob to {}", dest.display())))
            }
            Backend::Object { store, prefix } => {
                let path = Self::object_path(prefix, digest);
                if store.head(&path).await.is_ok() {
                    return Ok(());
                }
                let upload = store.put_multipart(&path).await.map_err(|e| object("cannot start an upload", e))?;
                let mut multipart = WriteMultipart::new_with_chunk_size(upload, CHUNK);
                let mut file = tokio::fs::File::open(&staged).await.map_err(io("cannot reopen a blob"))?;
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = file.read(&mut buf).await.map_err(io("cannot read a blob"))?;
                    if n == 0 {
                        break;
                    }
                    multipart.wait_for_capacity(4).await.map_err(|e| object("upload", e))?;
                    multipart.write(&buf[..n]);
                }
                multipart.finish().await.map_err(|e| object("cannot finish an upload", e))?;
                Ok(())
            }
        }
    }

    /// Uploads staged in the temporary folder (left by a crash: a running
    /// server removes its own when an upload ends), with their sizes, if
    /// older than `min_age` (an upload of another process may be running).
    pub fn staged(&self, min_age: std::time::Duration) -> Result<Vec<(PathBuf, u64)>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.tmp).map_err(io(format!("cannot list {}", self.tmp.display())))?;
        for e in entries {
            let e = e.map_err(io(format!("cannot list {}", self.tmp.display())))?;
            if !e.file_name().to_string_lossy().starts_with("upload-") {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
            if age >= min_age {
                out.push((e.path(), meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// A blob's size, if it exists.
    pub async fn size(&self, digest: &Sha256Digest) -> Result<Option<u64>> {
        match &self.backend {
            Backend::Local { root } => match tokio::fs::metadata(root.join("sha256").join(digest.to_hex())).await {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io("cannot stat a blob")(e)),
            },
            Backend::Object { store, prefix } => match store.head(&Self::object_path(prefix, digest)).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(object("cannot stat a blob", e)),
            },
        }
    }

    /// `len` bytes of a blob from `start`, streamed, without reading what
    /// comes before.
    pub async fn read_range(&self, digest: &Sha256Digest, start: u64, len: u64) -> Result<ByteStream> {
        match &self.backend {
            Backend::Local { root } => {
                let mut file = tokio::fs::File::open(root.join("sha256").join(digest.to_hex()))
                    .await
                    .map_err(io("cannot open a blob"))?;
                if start > 0 {
                    file.seek(std::io::SeekFrom::Start(start)).await.map_err(io("cannot seek in a blob"))?;
                }
                Ok(tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024).boxed())
            }
            Backend::Object { store, prefix } => {
                let options =
                    GetOptions { range: Some(GetRange::Bounded(start..start + len)), ..GetOptions::default() };
                let result = store
                    .get_opts(&Self::object_path(prefix, digest), options)
                    .await
                    .map_err(|e| object("cannot read a blob", e))?;
                Ok(result.into_stream().map(|r| r.map_err(std::io::Error::other)).boxed())
            }
        }
    }
}

/// A blob being written. Dropping it without committing removes it.
pub struct BlobWriter {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    sha: Sha256,
    size: u64,
}

impl BlobWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.sha.update(chunk);
        self.size += chunk.len() as u64;
        self.file.write_all(chunk).await.map_err(io("cannot write a blob"))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The temporary file, to read back (verify) before committing.
    pub fn temp_path(&self) -> &Path {
        &self.path
    }

    /// Flushes the bytes to disk and returns the digest.
    pub async fn finish(&mut self) -> Result<Sha256Digest> {
        self.file.flush().await.map_err(io("cannot flush a blob"))?;
        self.file.sync_all().await.map_err(io("cannot sync a blob"))?;
        Ok(Sha256Digest(self.sha.clone().finalize().into()))
    }
}

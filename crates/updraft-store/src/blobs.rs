//! The content-addressed, write-once blob store: `sha256/<hex>` under a
//! folder. A blob is written to a temporary file, hashed on the way, fsynced
//! and renamed to its digest; an existing blob is never rewritten.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use updraft_types::Sha256Digest;

use crate::{Result, StoreError};

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// Blobs under a folder.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub async fn open(root: &Path) -> Result<BlobStore> {
        for dir in [root.join("sha256"), root.join("tmp")] {
            tokio::fs::create_dir_all(&dir).await.map_err(io(format!("cannot create {}", dir.display())))?;
        }
        Ok(BlobStore { root: root.to_path_buf() })
    }

    /// Where blob `digest` lives.
    pub fn path(&self, digest: &Sha256Digest) -> PathBuf {
        self.root.join("sha256").join(digest.to_hex())
    }

    /// A writer for a new blob.
    pub async fn writer(&self) -> Result<BlobWriter> {
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(self.root.join("tmp"))
            .map_err(io("cannot create a temporary blob"))?;
        let (file, path) = tmp.into_parts();
        Ok(BlobWriter {
            file: tokio::fs::File::from_std(file),
            path,
            sha: Sha256::new(),
            size: 0,
            root: self.root.clone(),
        })
    }
}

/// A blob being written. Dropping it without `commit` removes it.
pub struct BlobWriter {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    sha: Sha256,
    size: u64,
    root: PathBuf,
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

    /// Flushes the bytes and returns the digest, without moving the blob in.
    pub async fn finish(&mut self) -> Result<Sha256Digest> {
        self.file.flush().await.map_err(io("cannot flush a blob"))?;
        self.file.sync_all().await.map_err(io("cannot sync a blob"))?;
        Ok(Sha256Digest(self.sha.clone().finalize().into()))
    }

    /// Moves the blob to its content address (a no-op if it exists).
    pub async fn commit(self, digest: &Sha256Digest) -> Result<PathBuf> {
        let dest = self.root.join("sha256").join(digest.to_hex());
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            return Ok(dest);
        }
        let path = self.path;
        let dest2 = dest.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            path.persist(&dest2).map_err(|e| e.error)?;
            if let Some(dir) = dest2.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Io { context: "blob commit task".into(), source: std::io::Error::other(e) })?
        .map_err(io(format!("cannot move a blob to {}", dest.display())))?;
        Ok(dest)
    }
}

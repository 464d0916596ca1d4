//! A local directory as an append-only object store: write to a hidden temporary file, then
//! hard-link it into place so an existing object is never replaced.

use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use super::{
    BoxFuture, ErrorClass, ObjectMetadata, ObjectStore, PartReceipt, PutOutcome, StoreError,
    UploadId,
};

/// Objects as files under `root`; keys are relative paths.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    overwrite_protection: bool,
}

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf, overwrite_protection: bool) -> Self {
        Self {
            root,
            overwrite_protection,
        }
    }

    fn path_of(&self, key: &str, op: &'static str) -> Result<PathBuf, StoreError> {
        let rel = Path::new(key);
        let safe = !key.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(self.error(
                op,
                key,
                ErrorClass::Permanent,
                "key escapes the destination directory".into(),
            ));
        }
        Ok(self.root.join(rel))
    }

    fn error(&self, op: &'static str, key: &str, class: ErrorClass, message: String) -> StoreError {
        StoreError {
            class,
            op,
            target: self.root.join(key).display().to_string(),
            code: None,
            message,
            status: None,
            bucket_region: None,
        }
    }

    fn put_blocking(&self, key: &str, body: &[u8]) -> Result<PutOutcome, StoreError> {
        self.place(key, "PUT", |f| f.write_all(body))
    }

    /// Where the parts of upload `id` wait: a hidden directory under the root.
    fn upload_dir(&self, id: &UploadId) -> PathBuf {
        self.root.join(UPLOADS).join(&id.0)
    }

    /// Writes `key` with what `fill` writes into a temporary file, then links it into place
    /// (never replacing an object when overwrite protection is on).
    fn place(
        &self,
        key: &str,
        op: &'static str,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<PutOutcome, StoreError> {
        let path = self.path_of(key, op)?;
        let io = |e: std::io::Error| {
            let class = match e.kind() {
                // A name the file system cannot hold never will (a component over 255 bytes).
                ErrorKind::PermissionDenied
                | ErrorKind::ReadOnlyFilesystem
                | ErrorKind::InvalidFilename => ErrorClass::Permanent,
                _ => ErrorClass::Transient,
            };
            self.error(op, key, class, e.to_string())
        };
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(io)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let tmp = dir.join(format!(
            ".{name}.{}.{:016x}.tmp",
            std::process::id(),
            fastrand::u64(..)
        ));
        let result = (|| {
            let mut f = std::fs::File::create_new(&tmp)?;
            fill(&mut f)?;
            f.sync_all()?;
            if self.overwrite_protection {
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => Ok(PutOutcome::Created),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
                    Err(e) => Err(e),
                }
            } else {
                std::fs::rename(&tmp, &path).map(|()| PutOutcome::Created)
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        let outcome = result.map_err(io)?;
        // The link is durable only once its directory entry is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(outcome)
    }
}

/// The hidden directory multipart uploads gather their parts in.
const UPLOADS: &str = ".pail-uploads";

impl ObjectStore for LocalStore {
    fn create_upload<'a>(
        &'a self,
        key: &'a str,
        _metadata: &'a ObjectMetadata,
    ) -> BoxFuture<'a, Result<UploadId, StoreError>> {
        Box::pin(async move {
            self.path_of(key, "CreateMultipartUpload")?;
            let id = UploadId(format!(
                "{:016x}{:016x}",
                fastrand::u64(..),
                fastrand::u64(..)
            ));
            tokio::fs::create_dir_all(self.upload_dir(&id))
                .await
                .map_err(|e| {
                    self.error(
                        "CreateMultipartUpload",
                        key,
                        ErrorClass::Transient,
                        e.to_string(),
                    )
                })?;
            Ok(id)
        })
    }

    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload: &'a UploadId,
        number: i32,
        body: Bytes,
    ) -> BoxFuture<'a, Result<PartReceipt, StoreError>> {
        Box::pin(async move {
            let path = self.upload_dir(upload).join(format!("{number:05}"));
            tokio::fs::write(&path, &body)
                .await
                .map_err(|e| self.error("UploadPart", key, ErrorClass::Transient, e.to_string()))?;
            Ok(PartReceipt {
                number,
                etag: None,
                checksum_crc32: None,
            })
        })
    }

    fn complete_if_absent<'a>(
        &'a self,
        key: &'a str,
        upload: &'a UploadId,
        parts: &'a [PartReceipt],
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        let this = self.clone();
        let key_owned = key.to_string();
        let dir = self.upload_dir(upload);
        let numbers: Vec<i32> = parts.iter().map(|p| p.number).collect();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let outcome = this.place(&key_owned, "CompleteMultipartUpload", |f| {
                    for n in &numbers {
                        let mut part = std::fs::File::open(dir.join(format!("{n:05}")))?;
                        std::io::copy(&mut part, f)?;
                    }
                    Ok(())
                });
                if outcome.is_ok() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                outcome
            })
            .await
            .map_err(|e| {
                self.error(
                    "CompleteMultipartUpload",
                    key,
                    ErrorClass::Transient,
                    e.to_string(),
                )
            })?
        })
    }

    fn abort_upload<'a>(&'a self, _key: &'a str, upload: &'a UploadId) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = tokio::fs::remove_dir_all(self.upload_dir(upload)).await;
        })
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        body: Bytes,
        _metadata: &'a ObjectMetadata,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        let this = self.clone();
        let key_owned = key.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.put_blocking(&key_owned, &body))
                .await
                .map_err(|e| self.error("PUT", key, ErrorClass::Transient, e.to_string()))?
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let path = self.path_of(key, "DELETE")?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(self.error("DELETE", key, ErrorClass::Permanent, e.to_string()));
                }
            }
            // Like an object store, leave no empty directories behind (up to the root; a
            // directory that is not empty, or is in use, stays).
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == self.root || !d.starts_with(&self.root) {
                    break;
                }
                if tokio::fs::remove_dir(d).await.is_err() {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

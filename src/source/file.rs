//! NDJSON from a file or standard input: topic `file`, partition 0, line number as offset.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::Record;
use crate::config::FILE_TOPIC;

/// Why the file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", .path.as_deref().map_or("<stdin>".to_string(), |p| p.display().to_string()))]
pub struct FileSourceError {
    pub path: Option<PathBuf>,
    pub source: std::io::Error,
}

/// Reads records line by line; a line longer than the record limit is still one record (its
/// payload cut at the limit, so it fails decoding as too large rather than exhausting memory).
pub struct FileSource {
    path: Option<PathBuf>,
    reader: Box<dyn AsyncBufRead + Unpin + Send>,
    topic: Arc<str>,
    line: i64,
    max_bytes: usize,
    /// The line being read: kept across calls, so that a `next` dropped half way (the run
    /// loop races it against everything else) loses none of what it consumed.
    partial: Partial,
}

/// A line read in part.
#[derive(Default)]
struct Partial {
    bytes: Vec<u8>,
    oversized: bool,
    any: bool,
}

impl FileSource {
    /// Opens `path`, or standard input for `None`.
    pub async fn open(path: Option<&Path>, max_bytes: usize) -> Result<Self, FileSourceError> {
        let reader: Box<dyn AsyncBufRead + Unpin + Send> = match path {
            Some(p) => Box::new(BufReader::with_capacity(
                1 << 20,
                tokio::fs::File::open(p)
                    .await
                    .map_err(|source| FileSourceError {
                        path: Some(p.to_path_buf()),
                        source,
                    })?,
            )),
            None => Box::new(BufReader::new(tokio::io::stdin())),
        };
        Ok(Self {
            path: path.map(Path::to_path_buf),
            reader,
            topic: Arc::from(FILE_TOPIC),
            line: 0,
            max_bytes,
            partial: Partial::default(),
        })
    }

    /// The next non-blank line as a record; `None` at end of input. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Record>, FileSourceError> {
        loop {
            let Some((mut bytes, oversized)) = self.read_line().await? else {
                return Ok(None);
            };
            self.line += 1;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            if !oversized && bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if oversized {
                // Keep one byte over the limit so decoding reports the record as too large.
                bytes.truncate(self.max_bytes + 1);
            }
            return Ok(Some(Record {
                topic: self.topic.clone(),
                partition: 0,
                offset: self.line,
                timestamp_ms: None,
                key: None,
                payload: Some(bytes.into()),
            }));
        }
    }

    /// Reads one line, keeping at most `max_bytes + 1` bytes of it.
    async fn read_line(&mut self) -> Result<Option<(Vec<u8>, bool)>, FileSourceError> {
        loop {
            let buf = self
                .reader
                .fill_buf()
                .await
                .map_err(|source| FileSourceError {
                    path: self.path.clone(),
                    source,
                })?;
            let partial = &mut self.partial;
            if buf.is_empty() {
                let Partial {
                    bytes,
                    oversized,
                    any,
                } = std::mem::take(partial);
                return Ok(any.then_some((bytes, oversized)));
            }
            partial.any = true;
            let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            let room = (self.max_bytes + 1).saturating_sub(partial.bytes.len());
            if chunk.len() > room {
                partial.oversized = true;
            }
            partial
                .bytes
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = chunk.len();
            self.reader.consume(used);
            if done {
                let line = std::mem::take(partial);
                return Ok(Some((line.bytes, line.oversized)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn numbers_lines_skips_blanks_and_bounds_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.ndjson");
        let long = "x".repeat(100);
        std::fs::write(&path, format!("{{\"a\":1}}\r\n\n  \n{long}\n{{\"b\":2}}")).unwrap();
        let mut src = FileSource::open(Some(&path), 10).await.unwrap();
        let r1 = src.next().await.unwrap().unwrap();
        assert_eq!(
            (r1.offset, r1.payload.unwrap()),
            (1, b"{\"a\":1}"[..].into())
        );
        let r4 = src.next().await.unwrap().unwrap();
        assert_eq!((r4.offset, r4.payload.unwrap().len()), (4, 11));
        let r5 = src.next().await.unwrap().unwrap();
        assert_eq!(
            (r5.offset, r5.payload.unwrap()),
            (5, b"{\"b\":2}"[..].into())
        );
        assert!(src.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_read_dropped_half_way_through_a_line_loses_none_of_it() {
        // A pipe (stdin) delivers a line in two writes; the run loop drops `next` in between
        // (a tick, a finished upload).
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut src = FileSource {
            path: None,
            reader: Box::new(BufReader::new(rx)),
            topic: Arc::from(FILE_TOPIC),
            line: 0,
            max_bytes: 1 << 20,
            partial: Partial::default(),
        };
        tx.write_all(b"{\"first\":\"half").await.unwrap();
        // A zero timeout polls `next` once (it reads the half line) and drops it.
        let dropped = tokio::time::timeout(Duration::ZERO, src.next()).await;
        assert!(dropped.is_err(), "no whole line yet");
        tx.write_all(b" and the rest\"}\n").await.unwrap();
        drop(tx);
        let record = src.next().await.unwrap().unwrap();
        assert_eq!(
            (record.offset, record.payload.unwrap()),
            (1, b"{\"first\":\"half and the rest\"}"[..].into())
        );
        assert!(src.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn missing_file_is_named() {
        let err = FileSource::open(Some(Path::new("/no/such/file.ndjson")), 10)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("/no/such/file.ndjson"));
    }
}

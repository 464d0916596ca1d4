//! The delivery intent recorded in Kafka commit metadata, and the recovery plan read back
//! from it.
//!
//! Before any object of a sealed segment is uploaded, pail commits the partition's first
//! undelivered offset with metadata listing the end offset of every sealed-but-undelivered
//! segment: `pail1:e1,e2,…`. A new owner replays from that offset and seals exactly at those
//! ends, so it rebuilds the very same objects under the very same keys.

use std::collections::VecDeque;

/// The metadata prefix of this encoding version.
pub const VERSION_PREFIX: &str = "pail1:";
/// Kafka's default `offset.metadata.max.bytes`; an intent must fit in it.
pub const MAX_METADATA_BYTES: usize = 4096;

/// Commit metadata that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntentError {
    #[error(
        "commit metadata {0:?} was written by an unknown version of pail (expected \"pail1:\"); upgrade pail or reset the group's offsets"
    )]
    UnknownVersion(String),
    #[error("commit metadata {0:?} is not a pail intent: {1}")]
    Malformed(String, &'static str),
    #[error("intent of {0} bytes exceeds the {MAX_METADATA_BYTES}-byte commit metadata limit")]
    TooLong(usize),
}

/// Encodes the ends of the sealed-but-undelivered segments, oldest first.
pub fn encode(ends: &[i64]) -> Result<String, IntentError> {
    if ends.is_empty() {
        return Ok(String::new());
    }
    let body: Vec<String> = ends.iter().map(i64::to_string).collect();
    let text = format!("{VERSION_PREFIX}{}", body.join(","));
    if text.len() > MAX_METADATA_BYTES {
        return Err(IntentError::TooLong(text.len()));
    }
    Ok(text)
}

/// Decodes commit metadata; empty metadata means nothing was in flight.
pub fn decode(metadata: &str) -> Result<Vec<i64>, IntentError> {
    if metadata.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = metadata.strip_prefix(VERSION_PREFIX) else {
        return Err(if metadata.starts_with("pail") {
            IntentError::UnknownVersion(metadata.to_string())
        } else {
            IntentError::Malformed(metadata.to_string(), "missing the pail1: prefix")
        });
    };
    let mut ends = Vec::new();
    for part in body.split(',') {
        let end: i64 = part.parse().map_err(|_| {
            IntentError::Malformed(metadata.to_string(), "an end offset is not a number")
        })?;
        if end < 0 || ends.last().is_some_and(|prev| end <= *prev) {
            return Err(IntentError::Malformed(
                metadata.to_string(),
                "end offsets must be non-negative and increasing",
            ));
        }
        ends.push(end);
    }
    Ok(ends)
}

/// How a newly assigned partition resumes: where segments start and where they must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// The start offset of the next segment, if a commit says so; otherwise the first record
    /// consumed starts it.
    pub next_start: Option<i64>,
    /// Segment ends to reproduce exactly, oldest first, before the normal policy resumes.
    pub forced_ends: VecDeque<i64>,
}

impl RecoveryPlan {
    /// Builds the plan from the committed offset and its metadata.
    pub fn new(committed: Option<i64>, metadata: &str) -> Result<Self, IntentError> {
        let ends = decode(metadata)?;
        if let (Some(c), Some(first)) = (committed, ends.first())
            && *first < c
        {
            return Err(IntentError::Malformed(
                metadata.to_string(),
                "an end offset lies before the committed offset",
            ));
        }
        if committed.is_none() && !ends.is_empty() {
            return Err(IntentError::Malformed(
                metadata.to_string(),
                "intent without a committed offset",
            ));
        }
        Ok(Self {
            next_start: committed,
            forced_ends: ends.into(),
        })
    }

    /// True while a recorded segment is still being replayed.
    pub fn replaying(&self) -> bool {
        !self.forced_ends.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_stays_compact() {
        assert_eq!(encode(&[]).unwrap(), "");
        assert_eq!(decode("").unwrap(), Vec::<i64>::new());
        let ends = [99, 250, 1_000_000_000_000];
        let text = encode(&ends).unwrap();
        assert_eq!(text, "pail1:99,250,1000000000000");
        assert_eq!(decode(&text).unwrap(), ends);
        // 64 in-flight segments with 19-digit offsets still fit the default limit.
        let many: Vec<i64> = (0..64).map(|i| i64::MAX - 64 + i).collect();
        assert!(encode(&many).unwrap().len() < MAX_METADATA_BYTES);
        let too_many: Vec<i64> = (0..400).map(|i| i64::MAX - 400 + i).collect();
        assert!(matches!(encode(&too_many), Err(IntentError::TooLong(_))));
    }

    #[test]
    fn rejects_unknown_versions_and_garbage_clearly() {
        let err = decode("pail2:5,6").unwrap_err();
        assert!(matches!(err, IntentError::UnknownVersion(_)));
        assert!(err.to_string().contains("unknown version"));
        assert!(matches!(
            decode("connect-offsets"),
            Err(IntentError::Malformed(..))
        ));
        assert!(matches!(
            decode("pail1:5,x"),
            Err(IntentError::Malformed(..))
        ));
        assert!(matches!(
            decode("pail1:9,5"),
            Err(IntentError::Malformed(..))
        ));
        assert!(matches!(decode("pail1:"), Err(IntentError::Malformed(..))));
    }

    #[test]
    fn recovery_plans_from_commits() {
        let fresh = RecoveryPlan::new(None, "").unwrap();
        assert_eq!(fresh.next_start, None);
        assert!(!fresh.replaying());

        let plain = RecoveryPlan::new(Some(500), "").unwrap();
        assert_eq!(plain.next_start, Some(500));
        assert!(!plain.replaying());

        let crashed = RecoveryPlan::new(Some(500), "pail1:799,1200").unwrap();
        assert_eq!(crashed.next_start, Some(500));
        assert_eq!(crashed.forced_ends, [799, 1200]);

        // An empty segment (its only records were compacted away) still has an end.
        let single = RecoveryPlan::new(Some(500), "pail1:500").unwrap();
        assert_eq!(single.forced_ends, [500]);

        assert!(RecoveryPlan::new(Some(500), "pail1:499").is_err());
        assert!(RecoveryPlan::new(None, "pail1:10").is_err());
    }
}

//! The typed delivery intent and its text form in Kafka commit metadata.
//!
//! Every commit pail makes carries `pail2:{lineage}` and, while segments are sealed but not yet
//! durable, their end offsets: `pail2:{lineage}:{e1},{e2},…`. The lineage names the life of the
//! partition's offsets the objects belong to (see [`Lineage`]); the ends tell a new owner where
//! to cut when it replays, so that it rebuilds the very same objects under the very same keys.

use std::fmt;

use super::Offset;

/// The metadata prefix of this encoding version.
pub const VERSION_PREFIX: &str = "pail2:";
/// Kafka's default `offset.metadata.max.bytes`; an intent must fit in it.
pub const MAX_METADATA_BYTES: usize = 4096;

/// One life of a partition's offsets.
///
/// Offsets start again when a topic is deleted and recreated, when the pipeline moves to
/// another cluster, or when the group's offsets are reset: the same offsets then name other
/// events. Object names carry the lineage, so a name already taken (a 412 on a create-only
/// PUT) can only mean that this very segment was delivered. A lineage is chosen when a
/// partition has no pail commit, and kept in every commit after that. It is 48 bits: the Unix
/// time in seconds it was chosen (so names sort by life) and 16 random bits (so two lives
/// started in the same second differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lineage(u64);

impl Lineage {
    const BITS: u32 = 48;

    /// The lineage of a life begun at `unix_seconds`, told apart by `random`.
    pub fn new(unix_seconds: u64, random: u16) -> Self {
        let seconds = unix_seconds & ((1 << (Self::BITS - 16)) - 1);
        Self((seconds << 16) | u64::from(random))
    }

    /// Parses the 12 hex digits of [`Lineage`]'s `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 12 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Self)
    }
}

impl fmt::Display for Lineage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

/// What a commit records: the lineage, and the ends of the sealed-but-undelivered segments,
/// oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub lineage: Lineage,
    pub ends: Vec<Offset>,
}

/// Commit metadata that cannot be used to resume.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntentError {
    #[error(
        "commit metadata {0:?} was written by an earlier pail whose object names carry no lineage; \
         finish delivering with that version, or reset the group's offsets deliberately"
    )]
    Legacy(String),
    #[error(
        "commit metadata {0:?} was written by an unknown version of pail (expected \"pail2:\"); upgrade pail or reset the group's offsets"
    )]
    UnknownVersion(String),
    #[error("commit metadata {0:?} is not a pail intent: {1}")]
    Malformed(String, &'static str),
    #[error("an intent of {0} bytes exceeds the {MAX_METADATA_BYTES}-byte commit metadata limit")]
    TooLong(usize),
}

impl Intent {
    /// The metadata text; fails when it would not fit Kafka's limit.
    pub fn encode(&self) -> Result<String, IntentError> {
        let mut text = format!("{VERSION_PREFIX}{}", self.lineage);
        for (i, end) in self.ends.iter().enumerate() {
            text.push(if i == 0 { ':' } else { ',' });
            text.push_str(&end.to_string());
        }
        if text.len() > MAX_METADATA_BYTES {
            return Err(IntentError::TooLong(text.len()));
        }
        Ok(text)
    }

    /// Reads commit metadata: `None` when it is not pail's (empty, as offset tools and other
    /// consumers leave it), the intent when it is.
    pub fn decode(metadata: &str) -> Result<Option<Self>, IntentError> {
        if metadata.is_empty() {
            return Ok(None);
        }
        let Some(body) = metadata.strip_prefix(VERSION_PREFIX) else {
            return Err(if metadata.starts_with("pail1:") {
                IntentError::Legacy(metadata.to_string())
            } else if metadata.starts_with("pail") {
                IntentError::UnknownVersion(metadata.to_string())
            } else {
                IntentError::Malformed(metadata.to_string(), "missing the pail2: prefix")
            });
        };
        let malformed = |why| IntentError::Malformed(metadata.to_string(), why);
        let (lineage, ends_text) = match body.split_once(':') {
            Some((l, e)) => (l, Some(e)),
            None => (body, None),
        };
        let lineage =
            Lineage::parse(lineage).ok_or(malformed("the lineage is not 12 hex digits"))?;
        let mut ends: Vec<Offset> = Vec::new();
        for part in ends_text.into_iter().flat_map(|e| e.split(',')) {
            let end: Offset = part
                .parse()
                .map_err(|_| malformed("an end offset is not a number"))?;
            if end < 0 || ends.last().is_some_and(|prev| end <= *prev) {
                return Err(malformed("end offsets must be non-negative and increasing"));
            }
            ends.push(end);
        }
        Ok(Some(Self { lineage, ends }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lineage() -> Lineage {
        Lineage::new(1_764_000_000, 0xbeef)
    }

    #[test]
    fn round_trips_and_stays_compact() {
        let bare = Intent {
            lineage: lineage(),
            ends: vec![],
        };
        let text = bare.encode().unwrap();
        assert_eq!(text, format!("pail2:{}", lineage()));
        assert_eq!(Intent::decode(&text).unwrap(), Some(bare));

        let intent = Intent {
            lineage: lineage(),
            ends: vec![99, 250, 1_000_000_000_000],
        };
        let text = intent.encode().unwrap();
        assert_eq!(text, format!("pail2:{}:99,250,1000000000000", lineage()));
        assert_eq!(Intent::decode(&text).unwrap(), Some(intent));

        let too_many = Intent {
            lineage: lineage(),
            ends: (0..400).map(|i| i64::MAX - 400 + i).collect(),
        };
        assert!(matches!(too_many.encode(), Err(IntentError::TooLong(_))));
    }

    #[test]
    fn lineage_prints_as_twelve_hex_digits_and_parses_back() {
        let l = lineage();
        assert_eq!(l.to_string().len(), 12);
        assert_eq!(Lineage::parse(&l.to_string()), Some(l));
        assert!(
            Lineage::new(0, 1) < Lineage::new(1, 0),
            "lives sort by time"
        );
        assert_eq!(Lineage::parse("xyz"), None);
        assert_eq!(Lineage::parse("0000000000000"), None);
    }

    #[test]
    fn metadata_that_is_not_ours_is_no_intent_and_garbage_is_an_error() {
        assert_eq!(Intent::decode("").unwrap(), None);
        assert!(matches!(
            Intent::decode("pail1:5,6"),
            Err(IntentError::Legacy(_))
        ));
        assert!(matches!(
            Intent::decode("pail3:5,6"),
            Err(IntentError::UnknownVersion(_))
        ));
        assert!(matches!(
            Intent::decode("connect-offsets"),
            Err(IntentError::Malformed(..))
        ));
        let l = lineage();
        for bad in [
            format!("pail2:{l}:5,x"),
            format!("pail2:{l}:9,5"),
            format!("pail2:{l}:"),
            "pail2:123:5".to_string(),
        ] {
            assert!(
                matches!(Intent::decode(&bad), Err(IntentError::Malformed(..))),
                "{bad}"
            );
        }
    }
}

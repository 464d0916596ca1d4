//! Which partitions this consumer owns right now, and since which assignment: updated inside
//! the rebalance callbacks themselves, so a commit queued for a partition that has since been
//! revoked is never sent — even when the run loop has not seen the revoke yet and the group
//! has already moved to a new generation that would accept the commit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::kafka::TopicPartition;

/// Ownership tokens per partition: a fresh token at every assignment, none once revoked.
#[derive(Debug)]
pub struct Ownership {
    tokens: Mutex<HashMap<TopicPartition, u64>>,
    next: AtomicU64,
}

impl Default for Ownership {
    fn default() -> Self {
        Self {
            tokens: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

impl Ownership {
    /// Records an assignment; returns each partition with its new token.
    pub fn assign(&self, partitions: Vec<TopicPartition>) -> Vec<(TopicPartition, u64)> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        partitions
            .into_iter()
            .map(|tp| {
                let token = self.next.fetch_add(1, Ordering::Relaxed);
                tokens.insert(tp.clone(), token);
                (tp, token)
            })
            .collect()
    }

    /// Records a revocation: the partitions' tokens stop being current.
    pub fn revoke(&self, partitions: &[TopicPartition]) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        for tp in partitions {
            tokens.remove(tp);
        }
    }

    /// Runs `f` with a check of current ownership, holding the lock throughout: no revoke can
    /// come between a check and what `f` does with its answer. `f` must not block.
    pub fn while_current<R>(
        &self,
        f: impl FnOnce(&dyn Fn(&TopicPartition, u64) -> bool) -> R,
    ) -> R {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        f(&|tp, token| tokens.get(tp) == Some(&token))
    }

    /// Whether `token` is still the current ownership of `tp`.
    pub fn is_current(&self, tp: &TopicPartition, token: u64) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(tp) == Some(&token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_or_reassigned_partition_makes_old_tokens_stale() {
        let o = Ownership::default();
        let tp = ("t".to_string(), 0);
        let first = o.assign(vec![tp.clone()])[0].1;
        assert!(o.is_current(&tp, first));
        o.revoke(std::slice::from_ref(&tp));
        assert!(!o.is_current(&tp, first));
        // Given back to this consumer: a new token; the old one stays stale.
        let second = o.assign(vec![tp.clone()])[0].1;
        assert_ne!(first, second);
        assert!(!o.is_current(&tp, first));
        assert!(o.is_current(&tp, second));
        assert!(!o.is_current(&("t".to_string(), 1), second));
    }
}

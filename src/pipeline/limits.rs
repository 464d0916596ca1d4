//! What the pipeline holds against its limits (the segments' share of the memory budget, the
//! segments in flight, the cap of undelivered segments per partition), and so what the source
//! should pause.

use std::sync::atomic::Ordering;

use super::{Pause, Pipeline};
use crate::delivery::{PartitionKey, StreamMemory};
use crate::telemetry::METRICS;

impl Pipeline {
    /// Bytes held in memory for the budget: open segments, sealed ones waiting for their
    /// intent, and those being uploaded to destinations that accept uploads. A destination
    /// that refuses has its partitions paused instead (see [`Pipeline::pause`]), so what it
    /// holds stopped growing when it began failing, and the others go on.
    pub fn over_limits(&self) -> bool {
        let (mut segments, mut bytes) = (0, self.held_bytes());
        for (i, d) in self.router.destinations.iter().enumerate() {
            if !d.target.health.failing() {
                let load = self.delivery.load(i);
                segments += load.segments;
                bytes += load.bytes + d.target.streamed.load(Ordering::Relaxed);
            }
        }
        segments >= self.limits.max_in_flight_segments || bytes >= self.limits.max_buffer_bytes
    }

    /// True when all consumption should wait for uploads to catch up.
    pub fn backpressured(&self) -> bool {
        self.over_limits() || self.protocol.partitions().any(|k| self.protocol.at_cap(k))
    }

    /// What the source should pause now: everything when over the limits (but partitions
    /// replaying a recorded segment); otherwise the
    /// partitions of destinations that refuse uploads, those at the cap of undelivered
    /// segments and those the protocol stopped.
    pub fn pause(&self) -> Pause {
        if self.over_limits() {
            // A replay must reach its recorded end before its segment can be sealed and its
            // memory freed: pausing it too would stall everything.
            let replaying: Vec<&PartitionKey> = self
                .protocol
                .partitions()
                .filter(|k| self.protocol.replaying(k))
                .collect();
            if replaying.is_empty() {
                return Pause::All;
            }
            let others = self
                .protocol
                .partitions()
                .filter(|k| !replaying.contains(k))
                .cloned()
                .collect();
            return Pause::Partitions(others);
        }
        let failing = |topic: &str| {
            self.router
                .destination(topic)
                .is_some_and(|i| self.router.destinations[i].target.health.failing())
        };
        let paused = self
            .protocol
            .partitions()
            .filter(|key| {
                self.protocol.at_cap(key) || self.protocol.is_stopped(key) || failing(&key.0)
            })
            .cloned()
            .collect();
        Pause::Partitions(paused)
    }

    /// Publishes the gauges a scrape reads.
    pub fn publish_gauges(&self) {
        METRICS
            .partitions_assigned
            .set(self.protocol.owned() as i64);
        METRICS
            .segments_in_flight
            .set(self.delivery.in_flight() as i64);
        METRICS.buffered_bytes.set(self.held_bytes() as i64);
    }

    /// Memory held by segments not yet handed to delivery: open ones, and sealed ones (waiting
    /// for their intent, or acknowledged and about to be handed over).
    pub fn held_bytes(&self) -> usize {
        // The sealed map, not the protocol's stages: a segment whose intent was acknowledged
        // is no longer awaiting it, yet is held here until the next `due` hands it over.
        self.open_bytes + self.sealed_bytes
    }

    /// Segments being encoded or uploaded.
    pub fn in_flight(&self) -> usize {
        self.delivery.in_flight()
    }

    /// Sealed segments not yet durable, across partitions.
    pub fn undelivered(&self) -> usize {
        self.protocol.undelivered()
    }

    /// Nothing left to upload or commit for what was sealed.
    pub fn settled(&self) -> bool {
        self.protocol.settled() && self.delivery.in_flight() == 0
    }

    /// What streaming writers hold, and the signal they give memory back by (a part
    /// uploaded, rows encoded), which may let held-back consumption go on.
    pub fn stream_memory(&self) -> StreamMemory {
        self.delivery.stream_memory().clone()
    }
}

//! The use cases: each runs one transaction over `store`, applying `domain` rules, writing
//! outbox events and idempotency keys with the change. Handlers in `api` parse a request,
//! call one function here and convert the result.

pub mod export;
pub mod metrics;
pub mod responses;
pub mod reviews;
pub mod surveys;
pub mod tickets;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::Clock;
use crate::segments::SegmentDirectory;
use crate::store::PgStore;

/// What every use case needs: the store, the clock and, when configured, segmentation.
#[derive(Debug, Clone)]
pub struct Context {
    /// Storage.
    pub store: PgStore,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Segment membership; `None` when segmentation is not configured (segment-targeted
    /// surveys then cannot invite, and responses record no segments).
    pub segments: Option<Arc<dyn SegmentDirectory>>,
}

impl Context {
    /// Now, by the injected clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// Who acts: the calling service and, optionally, the agent it acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Calling service (from the token).
    pub service: String,
    /// Agent id, may be empty.
    pub actor_id: String,
}

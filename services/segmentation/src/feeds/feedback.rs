//! The feedback feed: the latest NPS and CSAT answers (only when newer than those held) and
//! open tickets. Tickets are kept one row each (open in OPEN and IN_PROGRESS), so
//! `open_ticket_count` is a count, not a running sum, and a repeated event changes nothing.

use std::sync::Arc;

use custops_common::clock::Clock;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::feedback::v1 as pb;

use prost::{Message, Name};
use sqlx::PgConnection;

use super::{FactsFeed, Pending, payload, position};
use crate::store::facts::{self, Feed, SurveyAnswer};
use crate::wire::from_timestamp;
use crate::workflow::membership::Changed;

/// Applies feedback events to the facts projection.
#[derive(Debug, Clone)]
pub struct FeedbackFeed {
    clock: Arc<dyn Clock>,
}

impl FeedbackFeed {
    /// A handler timing its effects with `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }
}

facts_feed_handler!(FeedbackFeed);

#[tonic::async_trait]
impl FactsFeed for FeedbackFeed {
    const FEED: &'static str = "feedback";
    const LOST_ON_RESYNC: &'static str = "latest NPS and CSAT answers, and tickets opened or closed in the pruned range (open ticket counts may be wrong until the ticket changes again)";

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &Event,
        pending: &mut Pending,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let kind = event.event_type.as_str();
        let customer = if kind == pb::ResponseSubmitted::full_name() {
            let r = pb::ResponseSubmitted::decode(payload(event)?)?;
            let scores = r.scores.unwrap_or_default();
            let time = from_timestamp(r.submit_time.as_ref())
                .or_else(|| from_timestamp(event.occur_time.as_ref()))
                .unwrap_or(now);
            if !facts::ensure_row(&mut *tx, &r.customer_id, now).await? {
                return Ok(());
            }
            let answer = SurveyAnswer {
                nps: scores.nps_score,
                csat: scores.csat_score,
                time,
            };
            facts::apply_answer(&mut *tx, &r.customer_id, &answer).await?;
            r.customer_id
        } else if kind == pb::TicketOpened::full_name() {
            let t = pb::TicketOpened::decode(payload(event)?)?;
            if !ticket(tx, &t.ticket_id, &t.customer_id, true, true, now).await? {
                return Ok(());
            }
            t.customer_id
        } else if kind == pb::TicketStatusChanged::full_name() {
            let t = pb::TicketStatusChanged::decode(payload(event)?)?;
            let open = matches!(
                t.to_status(),
                pb::TicketStatus::Open | pb::TicketStatus::InProgress
            );
            if !ticket(tx, &t.ticket_id, &t.customer_id, open, false, now).await? {
                return Ok(());
            }
            t.customer_id
        } else if kind == pb::TicketResolved::full_name() {
            let t = pb::TicketResolved::decode(payload(event)?)?;
            if !ticket(tx, &t.ticket_id, &t.customer_id, false, false, now).await? {
                return Ok(());
            }
            t.customer_id
        } else {
            return Ok(());
        };
        pending.touch(
            &customer,
            position(Feed::Feedback, event),
            event,
            now,
            Changed::FEEDBACK,
        );
        Ok(())
    }
}

/// Records a ticket's state; false (nothing recorded) when its customer has no facts row to
/// hold it: unknown id, or a tombstone (an erased customer's tickets are not kept, even when
/// their events arrive after the erasure).
async fn ticket(
    tx: &mut PgConnection,
    ticket_id: &str,
    customer_id: &str,
    open: bool,
    opened_only: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<bool> {
    // An erased customer's tickets arrive without a customer id: nothing to count.
    if customer_id.is_empty() || ticket_id.is_empty() {
        return Ok(false);
    }
    if !facts::ensure_row(&mut *tx, customer_id, now).await? {
        return Ok(false);
    }
    facts::apply_ticket(tx, ticket_id, customer_id, open, opened_only).await?;
    Ok(true)
}

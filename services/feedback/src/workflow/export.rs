//! The data-subject export (ExportCustomerData): everything feedback holds under one customer
//! id, read in one consistent snapshot, so a response and its follow-up ticket, or a ticket and
//! its history, never come from two different moments.

use chrono::{DateTime, Utc};

use super::Context;
use crate::domain::response::{Invitation, SurveyResponse};
use crate::domain::review::Review;
use crate::domain::ticket::{HistoryEntry, Ticket};
use crate::error::Error;
use crate::store::{responses, reviews, tickets};

/// What feedback holds about one customer, each list oldest first. Rows a merge moved to the
/// customer are theirs; rows of an erased customer carry no id any more, so they are absent.
#[derive(Debug, Clone)]
pub struct CustomerData {
    /// The customer exported.
    pub customer_id: String,
    /// Survey invitations.
    pub invitations: Vec<Invitation>,
    /// Survey responses with their answers.
    pub responses: Vec<SurveyResponse>,
    /// Tickets, complaints and follow-ups.
    pub tickets: Vec<Ticket>,
    /// The history entries of those tickets.
    pub ticket_history: Vec<HistoryEntry>,
    /// Reviews.
    pub reviews: Vec<Review>,
    /// When it was read.
    pub export_time: DateTime<Utc>,
}

/// Reads the export of `customer_id` (canonical form) in one REPEATABLE READ, read-only
/// transaction. A customer feedback never saw gets empty lists.
pub async fn customer_data(ctx: &Context, customer_id: &str) -> Result<CustomerData, Error> {
    let mut tx = custops_common::db::begin_snapshot(&ctx.store.pool).await?;
    let data = CustomerData {
        customer_id: customer_id.to_owned(),
        invitations: responses::invitations_of(&mut tx, customer_id).await?,
        responses: responses::responses_of(&mut tx, customer_id).await?,
        tickets: tickets::of_customer(&mut tx, customer_id).await?,
        ticket_history: tickets::history_of_customer(&mut tx, customer_id).await?,
        reviews: reviews::of_customer(&mut tx, customer_id).await?,
        export_time: ctx.now(),
    };
    tx.commit().await?;
    Ok(data)
}

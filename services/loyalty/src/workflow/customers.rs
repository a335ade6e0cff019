//! What profiles' changes of a customer do to loyalty, applied in the profiles feed
//! consumer's transaction (merges and unmerges are in `merges`):
//!
//! - the birth month (`CustomerCreated`, `CustomerUpdated`, `CustomerUnmerged`) is kept for
//!   the birthday bonus;
//! - erasure (`CustomerErased`, right to be forgotten): each member of the erased customer
//!   (and of customers merged into it) is closed — its points forfeited — and unlinked from
//!   the customer; the ledger stays, without personal data. Erased customers cannot enrol
//!   again.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::status::{self, Change};
use crate::domain::event::Event;
use crate::domain::member::MemberRef;
use crate::events;
use crate::store::{StoreResult, birthdays, erasure};

/// Records (or, with `None`, forgets) the customer's birth month.
pub async fn birth_month(
    conn: &mut PgConnection,
    customer_id: Uuid,
    month: Option<u32>,
) -> StoreResult<()> {
    birthdays::set(conn, customer_id, month).await
}

/// CustomerErased: erases `customer_ids` in the consumer's transaction and appends the events.
pub async fn customer_erased(
    conn: &mut PgConnection,
    customer_ids: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let produced = erase(conn, customer_ids, now).await?;
    events::append(conn, &produced).await?;
    Ok(())
}

/// Erases `customer_ids` in the caller's transaction; returns the events to publish. Applying
/// it twice changes nothing more.
async fn erase(
    conn: &mut PgConnection,
    customer_ids: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<Vec<Event>> {
    let mut events = Vec::new();
    for id in customer_ids {
        erasure::record(conn, *id, now).await?;
    }
    birthdays::forget(conn, customer_ids).await?;
    let members = erasure::memberships(conn, customer_ids).await?;
    for (member_id, status_code) in members {
        // A merged-away member holds nothing any more; closing it would close its survivor.
        if status_code != 4 {
            let changed = status::change(
                conn,
                &MemberRef::Id(member_id),
                Change::Close,
                "Customer data erased",
                "",
                now,
            )
            .await?;
            events.extend(changed.events.into_iter().map(|event| match event {
                Event::MemberStatusChanged {
                    mut member,
                    previous,
                    forfeit,
                } => {
                    member.customer_id = Uuid::nil();
                    member.anonymized = true;
                    Event::MemberStatusChanged {
                        member,
                        previous,
                        forfeit,
                    }
                }
                other => other,
            }));
        }
        erasure::anonymise(conn, member_id).await?;
    }
    Ok(events)
}

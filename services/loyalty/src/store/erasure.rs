//! Erasure from the profiles feed (right to be forgotten): each member of the erased customer
//! (and of customers merged into it) is closed — its points forfeited — and unlinked from the
//! customer; the ledger stays, without personal data. Erased customers cannot enrol again.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreResult;
use super::status::{self, Change};
use crate::domain::event::Event;
use crate::domain::member::MemberRef;

/// Erases `customer_ids` in the caller's transaction; returns the events to publish. Applying
/// it twice changes nothing more.
pub async fn erase(
    conn: &mut PgConnection,
    customer_ids: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<Vec<Event>> {
    let mut events = Vec::new();
    for id in customer_ids {
        sqlx::query(
            "INSERT INTO erased_customers (customer_id, erase_time) VALUES ($1, $2) \
             ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DELETE FROM customer_birthdays WHERE customer_id = ANY($1)")
        .bind(customer_ids)
        .execute(&mut *conn)
        .await?;
    let members: Vec<(Uuid, i16)> = sqlx::query_as(
        "SELECT member_id, status FROM members WHERE customer_id = ANY($1) ORDER BY member_id",
    )
    .bind(customer_ids)
    .fetch_all(&mut *conn)
    .await?;
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
        sqlx::query(
            "UPDATE members SET customer_id = NULL, anonymized = true WHERE member_id = $1",
        )
        .bind(member_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(events)
}

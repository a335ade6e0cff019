//! What feedback holds under a customer id, as the profiles feed changes it: merges move a
//! customer's rows to the survivor and record each row moved under the merge id
//! (`merge_moves`), unmerges move exactly those back, erasures anonymise.
//!
//! Every function runs in the caller's transaction (the feed consumer's, which also advances
//! its cursor) and is idempotent on its own: a merge or unmerge id seen before changes nothing,
//! an erasure of an erased customer finds nothing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Error;

/// The four kinds of rows that carry a customer id: table, id column, `item_kind`.
const ITEMS: [(&str, &str, &str); 4] = [
    ("invitations", "invitation_id", "invitation"),
    ("responses", "response_id", "response"),
    ("tickets", "ticket_id", "ticket"),
    ("reviews", "review_id", "review"),
];

/// A profiles CustomerMerged or CustomerUnmerged, as feedback needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// Profiles merge id.
    pub merge_id: String,
    /// The customer merged away (restored by the unmerge).
    pub source: String,
    /// The survivor.
    pub target: String,
}

/// Only an invitation the target does not already have for the same survey and touchpoint
/// moves (one invitation per customer); `$2` is the customer it would move to.
const INVITATION_FITS: &str = "NOT EXISTS (SELECT 1 FROM invitations j \
    WHERE j.survey_id = x.survey_id AND j.customer_id = $2 \
      AND j.touchpoint_kind = x.touchpoint_kind AND j.touchpoint_id = x.touchpoint_id)";

/// Moves everything of `merge.source` to `merge.target` and records each row moved under the
/// merge id. Returns false when the merge id was applied before.
pub async fn merge(
    conn: &mut PgConnection,
    merge: &Merge,
    at: DateTime<Utc>,
) -> Result<bool, Error> {
    let first = sqlx::query(
        "INSERT INTO customer_merges (merge_id, source_customer_id, target_customer_id, \
           apply_time) VALUES ($1, $2, $3, $4) ON CONFLICT (merge_id) DO NOTHING",
    )
    .bind(&merge.merge_id)
    .bind(&merge.source)
    .bind(&merge.target)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if first == 0 {
        return Ok(false);
    }
    for (table, id, kind) in ITEMS {
        let fits = if kind == "invitation" {
            INVITATION_FITS
        } else {
            "true"
        };
        let sql = format!(
            "WITH moved AS ( \
               UPDATE {table} x SET customer_id = $2 WHERE customer_id = $1 AND {fits} \
               RETURNING x.{id}) \
             INSERT INTO merge_moves (merge_id, item_kind, item_id) \
             SELECT $3, '{kind}', {id} FROM moved"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&merge.source)
            .bind(&merge.target)
            .bind(&merge.merge_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(true)
}

/// Undoes `merge`: every row its merge id moved that is still on the target goes back to the
/// source, and so do rows merges before `customer_merges` existed moved from the source to the
/// target (`legacy_merge_moves`: once the two are apart, what was created for the source is
/// the source's). Rows added to the target after the merge stay. Returns false when this
/// unmerge was applied before; an unmerge of a merge feedback never applied moves only legacy
/// rows, if any.
pub async fn unmerge(
    conn: &mut PgConnection,
    merge: &Merge,
    at: DateTime<Utc>,
) -> Result<bool, Error> {
    let first = sqlx::query(
        "INSERT INTO customer_unmerges (merge_id, apply_time) VALUES ($1, $2) \
         ON CONFLICT (merge_id) DO NOTHING",
    )
    .bind(&merge.merge_id)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if first == 0 {
        return Ok(false);
    }
    // The recorded merge names the pair; the event's names serve for merges never recorded.
    let recorded: Option<(String, String)> = sqlx::query_as(
        "SELECT source_customer_id, target_customer_id FROM customer_merges WHERE merge_id = $1",
    )
    .bind(&merge.merge_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (source, target) = recorded.unwrap_or_else(|| (merge.source.clone(), merge.target.clone()));
    if source.is_empty() || target.is_empty() || source == target {
        return Ok(true);
    }
    for (table, id, kind) in ITEMS {
        let fits = if kind == "invitation" {
            INVITATION_FITS
        } else {
            "true"
        };
        let tagged = format!(
            "UPDATE {table} x SET customer_id = $2 FROM merge_moves m \
             WHERE m.merge_id = $3 AND m.item_kind = '{kind}' AND m.item_id = x.{id} \
               AND x.customer_id = $1 AND {fits}"
        );
        sqlx::query(sqlx::AssertSqlSafe(tagged))
            .bind(&target)
            .bind(&source)
            .bind(&merge.merge_id)
            .execute(&mut *conn)
            .await?;
        let legacy = format!(
            "WITH back AS ( \
               UPDATE {table} x SET customer_id = $2 FROM legacy_merge_moves l \
               WHERE l.item_kind = '{kind}' AND l.item_id = x.{id} \
                 AND l.source_customer_id = $2 AND x.customer_id = $1 AND {fits} \
               RETURNING x.{id}) \
             DELETE FROM legacy_merge_moves \
             WHERE item_kind = '{kind}' AND item_id IN (SELECT {id} FROM back)"
        );
        sqlx::query(sqlx::AssertSqlSafe(legacy))
            .bind(&target)
            .bind(&source)
            .execute(&mut *conn)
            .await?;
    }
    Ok(true)
}

/// Removes `customer_id` and every free text (answers, ticket subjects, descriptions, notes,
/// resolution notes, review titles and texts) from the customer's rows, keeping scores and
/// ratings, and forgets the merges naming the customer. Besides the rows under the id, it
/// anonymises rows created for the customer that a merge moved away and that did not come
/// back (moved before merges were recorded, or kept by the target when an unmerge could not
/// move them): with the customer on its own again, they are still its data.
pub async fn erase(
    conn: &mut PgConnection,
    customer_id: &str,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    if customer_id.is_empty() {
        return Ok(());
    }
    // Per kind ($2): the ids of the customer's rows that sit elsewhere.
    const MOVED_AWAY: &str = "SELECT item_id FROM legacy_merge_moves \
          WHERE source_customer_id = $1 AND item_kind = $2 \
        UNION SELECT m.item_id FROM merge_moves m \
          JOIN customer_merges c USING (merge_id) JOIN customer_unmerges u USING (merge_id) \
          WHERE c.source_customer_id = $1 AND m.item_kind = $2";
    let theirs = |id: &str| format!("(customer_id = $1 OR {id} IN ({MOVED_AWAY}))");
    // (kind, statement, whether it stamps the erase time as $3)
    let statements = [
        (
            "ticket",
            format!(
                "UPDATE ticket_history SET note = '' WHERE ticket_id IN \
                   (SELECT ticket_id FROM tickets WHERE {})",
                theirs("ticket_id")
            ),
            false,
        ),
        (
            "ticket",
            format!(
                "UPDATE tickets SET customer_id = '', subject = '', description = '', \
                   resolution_note = '', erase_time = $3 WHERE {}",
                theirs("ticket_id")
            ),
            true,
        ),
        // Free-text answers keep their question, lose their text.
        (
            "response",
            format!(
                "UPDATE responses SET customer_id = '', erase_time = $3, answers = COALESCE(( \
                   SELECT jsonb_agg(CASE WHEN a->'value' ? 'text' \
                                         THEN jsonb_set(a, '{{value,text}}', '\"\"') ELSE a END) \
                   FROM jsonb_array_elements(answers) a), '[]'::jsonb) \
                 WHERE {}",
                theirs("response_id")
            ),
            true,
        ),
        (
            "review",
            format!(
                "UPDATE reviews SET customer_id = '', title = '', body = '', erase_time = $3 \
                 WHERE {}",
                theirs("review_id")
            ),
            true,
        ),
        (
            "invitation",
            format!(
                "UPDATE invitations SET customer_id = '' WHERE {}",
                theirs("invitation_id")
            ),
            false,
        ),
    ];
    for (kind, sql, stamps) in statements {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(customer_id)
            .bind(kind);
        if stamps {
            query = query.bind(at);
        }
        query.execute(&mut *conn).await?;
    }
    // Nothing may link the erased id to another customer any more.
    for sql in [
        "DELETE FROM legacy_merge_moves WHERE source_customer_id = $1",
        "DELETE FROM customer_merges WHERE source_customer_id = $1 OR target_customer_id = $1",
    ] {
        sqlx::query(sql)
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

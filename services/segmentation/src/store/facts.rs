//! The facts projection in Postgres: reading one customer's facts for the in-process evaluator
//! and GetCustomerFacts, and the writes the feed consumers make (traits snapshots, consents,
//! activities, refunds, loyalty memberships, survey answers, tickets, merges, deletions,
//! erasures).
//!
//! A customer has a `customer_facts` row exactly while it exists for segmentation: deleted,
//! merged-away and erased customers have a tombstone instead (`customer_tombstones`), so no
//! rule, full recompute or feed event brings them back. Every write is idempotent: snapshots are
//! applied only when newer than the position stored, activities, refunds and tickets are keyed
//! by their upstream ids, merges by merge id; a purchase's refunded amount is recomputed from
//! its refunds, never incremented (`refresh_refunded_orders`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::domain::facts::{
    Activity, ActivityKind, AttributeValue, Consents, EvalContext, Facts, FeedbackFacts,
    LifecycleFacts, LoyaltyMembership, Money, PredictionFacts,
};

/// `domain::facts::Activity::counts_as_purchase` over a `customer_activities` row aliased `a`:
/// a purchase not refunded in full. Every query reading purchases uses it (rule SQL, RFM,
/// lifecycle, predictions); never NULL.
pub const COUNTS_AS_PURCHASE: &str = "(a.kind = 'purchase' \
     AND COALESCE(a.refunded_minor = 0 OR a.refunded_minor < a.amount_minor, false))";

/// `domain::facts::Activity::net_amount` of a `customer_activities` row aliased `a`: refunds
/// take back at most what was paid; NULL without an amount.
pub const NET_AMOUNT: &str =
    "(a.amount_minor - LEAST(a.refunded_minor, GREATEST(a.amount_minor, 0)))";

/// The `p_*` columns of a facts row left-joined to `customer_predictions`.
fn prediction_from_row(
    row: &sqlx::postgres::PgRow,
) -> Result<Option<PredictionFacts>, sqlx::Error> {
    let Some(probability_alive) = row.try_get::<Option<f64>, _>("p_probability_alive")? else {
        return Ok(None);
    };
    Ok(Some(PredictionFacts {
        probability_alive,
        expected_purchases_90d: row.try_get("p_expected_purchases_90d")?,
        expected_value_minor: row.try_get("p_expected_value_minor")?,
        clv_minor: row.try_get("p_clv_minor")?,
        churn_risk: row.try_get("p_churn_risk")?,
    }))
}

/// The facts of `customer_id`, or `None` when segmentation does not know the customer.
pub async fn load_facts(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Option<Facts>, sqlx::Error> {
    let mut many = load_facts_many(conn, &[customer_id.to_owned()]).await?;
    Ok(many.remove(customer_id))
}

/// The facts of each of `customer_ids` segmentation knows, in five statements whatever their
/// number (a feed batch settles its customers together).
pub async fn load_facts_many(
    conn: &mut PgConnection,
    customer_ids: &[String],
) -> Result<HashMap<String, Facts>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT f.*, f.attributes::text AS attributes_text, \
           p.probability_alive AS p_probability_alive, \
           p.expected_purchases_90d AS p_expected_purchases_90d, \
           p.expected_value_minor AS p_expected_value_minor, p.clv_minor AS p_clv_minor, \
           p.churn_risk AS p_churn_risk \
         FROM customer_facts f LEFT JOIN customer_predictions p USING (customer_id) \
         WHERE f.customer_id = ANY($1)",
    )
    .bind(customer_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut loaded = HashMap::with_capacity(rows.len());
    for row in rows {
        let facts = Facts {
            customer_id: row.try_get("customer_id")?,
            customer_create_time: row.try_get("customer_create_time")?,
            country: row.try_get("country")?,
            region: row.try_get("region")?,
            city: row.try_get("city")?,
            birth_date: row.try_get("birth_date")?,
            gender: row.try_get("gender")?,
            income_band: row.try_get("income_band")?,
            occupation: row.try_get("occupation")?,
            education: row.try_get("education")?,
            interests: row.try_get("interests")?,
            lifestyle_tags: row.try_get("lifestyle_tags")?,
            tags: row.try_get("tags")?,
            attributes: decode_attributes(row.try_get::<&str, _>("attributes_text")?),
            consents: Consents {
                sms: row.try_get("consent_sms")?,
                email: row.try_get("consent_email")?,
                app_push: row.try_get("consent_app_push")?,
                wechat: row.try_get("consent_wechat")?,
            },
            activities: Vec::new(),
            loyalty: Vec::new(),
            feedback: FeedbackFacts {
                last_nps_score: row.try_get("last_nps_score")?,
                last_nps_time: row.try_get("last_nps_time")?,
                last_csat_score: row.try_get("last_csat_score")?,
                last_csat_time: row.try_get("last_csat_time")?,
                open_ticket_count: row.try_get("open_ticket_count")?,
            },
            rfm: crate::store::rfm::stored_from_row(&row)?,
            lifecycle: LifecycleFacts {
                stage: row.try_get("lifecycle_stage")?,
                stage_start_time: row.try_get("lifecycle_stage_start_time")?,
                previous_stage: row.try_get("lifecycle_previous_stage")?,
                churn_risk: row.try_get("churn_risk")?,
                churn_risk_score: row.try_get("churn_risk_score")?,
            },
            prediction: prediction_from_row(&row)?,
            segments: Default::default(),
            events: Vec::new(),
            computed: BTreeMap::new(),
        };
        loaded.insert(facts.customer_id.clone(), facts);
    }
    let rows = sqlx::query(
        "SELECT customer_id, activity_id, kind, occur_time, amount_minor, currency, categories, \
           channel, refunded_minor \
         FROM customer_activities WHERE customer_id = ANY($1) \
         ORDER BY customer_id, occur_time, activity_id",
    )
    .bind(customer_ids)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let Some(facts) = loaded.get_mut(row.try_get::<&str, _>("customer_id")?) else {
            continue;
        };
        let amount: Option<i64> = row.try_get("amount_minor")?;
        let currency: Option<String> = row.try_get("currency")?;
        facts.activities.push(Activity {
            activity_id: row.try_get("activity_id")?,
            kind: ActivityKind::from_column(row.try_get::<&str, _>("kind")?),
            occur_time: row.try_get("occur_time")?,
            amount: amount.map(|amount_minor| Money {
                amount_minor,
                currency: currency.unwrap_or_default(),
            }),
            categories: row.try_get("categories")?,
            channel: row.try_get("channel")?,
            refunded_minor: row.try_get("refunded_minor")?,
        });
    }
    let rows = sqlx::query(
        "SELECT customer_id, loyalty_program_id, tier, points, qualifying_points, enroll_time \
         FROM loyalty_memberships WHERE customer_id = ANY($1) \
         ORDER BY customer_id, loyalty_program_id",
    )
    .bind(customer_ids)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let Some(facts) = loaded.get_mut(row.try_get::<&str, _>("customer_id")?) else {
            continue;
        };
        facts.loyalty.push(LoyaltyMembership {
            loyalty_program_id: row.try_get("loyalty_program_id")?,
            tier: row.try_get("tier")?,
            points: row.try_get("points")?,
            qualifying_points: row.try_get("qualifying_points")?,
            enroll_time: row.try_get("enroll_time")?,
        });
    }
    let rows =
        sqlx::query("SELECT customer_id, segment_id FROM memberships WHERE customer_id = ANY($1)")
            .bind(customer_ids)
            .fetch_all(&mut *conn)
            .await?;
    for row in rows {
        if let Some(facts) = loaded.get_mut(row.try_get::<&str, _>("customer_id")?) {
            facts.segments.insert(row.try_get::<Uuid, _>("segment_id")?);
        }
    }
    crate::store::computed::load_into(conn, &mut loaded).await?;
    Ok(loaded)
}

/// Custom attributes from their JSON column (see the schema); unknown shapes are skipped.
fn decode_attributes(text: &str) -> BTreeMap<String, AttributeValue> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text) else {
        return BTreeMap::new();
    };
    map.into_iter()
        .filter_map(|(name, value)| {
            let (kind, v) = value.as_object()?.iter().next()?;
            let value = match kind.as_str() {
                "string" => AttributeValue::String(v.as_str()?.to_owned()),
                "integer" => AttributeValue::Integer(v.as_i64()?),
                "double" => AttributeValue::Double(v.as_f64()?),
                "bool" => AttributeValue::Bool(v.as_bool()?),
                "timestamp" => AttributeValue::Timestamp(
                    DateTime::parse_from_rfc3339(v.as_str()?)
                        .ok()?
                        .with_timezone(&Utc),
                ),
                "date" => AttributeValue::Date(v.as_str()?.parse::<NaiveDate>().ok()?),
                _ => return None,
            };
            Some((name, value))
        })
        .collect()
}

/// Custom attributes as their JSON column holds them.
pub fn encode_attributes(attributes: &BTreeMap<String, AttributeValue>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = attributes
        .iter()
        .map(|(name, value)| {
            let (kind, v) = match value {
                AttributeValue::String(s) => ("string", serde_json::json!(s)),
                AttributeValue::Integer(i) => ("integer", serde_json::json!(i)),
                AttributeValue::Double(d) => ("double", serde_json::json!(d)),
                AttributeValue::Bool(b) => ("bool", serde_json::json!(b)),
                AttributeValue::Timestamp(t) => ("timestamp", serde_json::json!(t.to_rfc3339())),
                AttributeValue::Date(d) => ("date", serde_json::json!(d.to_string())),
            };
            (name.clone(), serde_json::json!({ kind: v }))
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The evaluation context at `now`: `today` is the date of `now` in the configured zone
/// (configs row "evaluation", `time_zone`, default UTC).
pub async fn eval_context(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<EvalContext, sqlx::Error> {
    let today = sqlx::query_scalar::<_, NaiveDate>(
        "SELECT ($1 AT TIME ZONE COALESCE((SELECT value->>'time_zone' FROM configs \
         WHERE name = 'evaluation'), 'UTC'))::date",
    )
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(EvalContext { now, today })
}

/// Which feed an event came from, for the position columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Profiles,
    Loyalty,
    Feedback,
}

impl Feed {
    fn column(self) -> &'static str {
        match self {
            Self::Profiles => "profiles",
            Self::Loyalty => "loyalty",
            Self::Feedback => "feedback",
        }
    }
}

/// A feed event's position: its sequence and when it happened upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub feed: Feed,
    pub sequence: i64,
    pub occur_time: Option<DateTime<Utc>>,
}

/// Whether `customer_id` has a facts row.
pub async fn exists(conn: &mut PgConnection, customer_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM customer_facts WHERE customer_id = $1)")
        .bind(customer_id)
        .fetch_one(conn)
        .await
}

/// How many customers have a facts row: every customer segmentation knows.
pub async fn customer_count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM customer_facts")
        .fetch_one(conn)
        .await
}

/// About how many customers have a facts row: exact below 100,000 rows, above that the
/// planner's estimate (`pg_class.reltuples`, refreshed by every (auto)analyze, i.e. after
/// about a tenth of the table changed), which reads no rows. For checks on a timer, where an
/// exact count of a million rows would cost most of a second each time.
pub async fn customer_count_estimate(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CASE WHEN c.reltuples >= 100000 THEN c.reltuples::bigint \
                     ELSE (SELECT count(*) FROM customer_facts) END \
         FROM pg_class c WHERE c.oid = 'customer_facts'::regclass",
    )
    .fetch_one(conn)
    .await
}

/// Those of `customer_ids` that have a facts row, sorted.
pub async fn existing(
    conn: &mut PgConnection,
    customer_ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT customer_id FROM customer_facts WHERE customer_id = ANY($1) ORDER BY customer_id",
    )
    .bind(customer_ids)
    .fetch_all(conn)
    .await
}

/// Holds, until the transaction ends, the lock that makes the feed consumers apply their
/// batches one at a time. A batch touches many customers' rows in feed order; two feeds'
/// batches touching the same customers in different orders would otherwise deadlock.
pub async fn lock_feeds(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('custops.segmentation.feeds', 0))")
        .execute(conn)
        .await?;
    Ok(())
}

/// Holds, until the transaction ends, the lock that serialises every write creating a
/// customer's facts row with every write tombstoning it (erasure, deletion, merge, and their
/// undoing). The feeds are applied by separate consumers: without it, a feedback event's
/// insert racing an erasure would wait on the deleted row, then insert it again behind the
/// tombstone its snapshot did not see. Lock several customers with [`lock_customers`].
pub async fn lock_customer(conn: &mut PgConnection, customer_id: &str) -> Result<(), sqlx::Error> {
    lock_customers(conn, &[customer_id]).await
}

/// [`lock_customer`] for several customers in one statement, taken in the order given: pass
/// them sorted, so that two transactions locking shared customers cannot deadlock.
pub async fn lock_customers(
    conn: &mut PgConnection,
    customer_ids: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('custops.segmentation.customer.' || c, 0)) \
         FROM unnest($1::text[]) WITH ORDINALITY AS u(c, n) ORDER BY n",
    )
    .bind(customer_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes sure a facts row exists for a customer an event names, unless it has a tombstone
/// (deleted, merged away, erased). Returns whether the row exists afterwards.
pub async fn ensure_row(
    conn: &mut PgConnection,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    if customer_id.is_empty() {
        return Ok(false);
    }
    // Taken before the insert, whose snapshot then sees any tombstone committed meanwhile.
    lock_customer(&mut *conn, customer_id).await?;
    sqlx::query(
        "INSERT INTO customer_facts (customer_id, lifecycle_stage_start_time, update_time) \
         SELECT $1, $2, $2 WHERE NOT EXISTS \
           (SELECT 1 FROM customer_tombstones WHERE customer_id = $1) \
         ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(customer_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    exists(conn, customer_id).await
}

/// Records `position` on the customer's row (never moving it back) and touches update_time.
pub async fn record_position(
    conn: &mut PgConnection,
    customer_id: &str,
    position: Position,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let feed = position.feed.column();
    let sql = format!(
        "UPDATE customer_facts SET {feed}_sequence = $2, {feed}_occur_time = $3, \
           update_time = $4 \
         WHERE customer_id = $1 AND {feed}_sequence < $2"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(customer_id)
        .bind(position.sequence)
        .bind(position.occur_time)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// [`record_position`] for several customers at once, one statement per feed.
pub async fn record_positions(
    conn: &mut PgConnection,
    positions: &[(String, Position)],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    for feed in [Feed::Profiles, Feed::Loyalty, Feed::Feedback] {
        let of_feed: Vec<&(String, Position)> =
            positions.iter().filter(|(_, p)| p.feed == feed).collect();
        if of_feed.is_empty() {
            continue;
        }
        let ids: Vec<&str> = of_feed.iter().map(|(id, _)| id.as_str()).collect();
        let sequences: Vec<i64> = of_feed.iter().map(|(_, p)| p.sequence).collect();
        let times: Vec<Option<DateTime<Utc>>> = of_feed.iter().map(|(_, p)| p.occur_time).collect();
        let column = feed.column();
        let sql = format!(
            "UPDATE customer_facts f SET {column}_sequence = u.sequence, \
               {column}_occur_time = u.occur_time, update_time = $4 \
             FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) \
               AS u (customer_id, sequence, occur_time) \
             WHERE f.customer_id = u.customer_id AND f.{column}_sequence < u.sequence"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .bind(&sequences)
            .bind(&times)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The profiles traits segmentation keeps (a full snapshot).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traits {
    pub customer_id: String,
    pub create_time: Option<DateTime<Utc>>,
    pub country: String,
    pub region: String,
    pub city: String,
    pub birth_date: Option<NaiveDate>,
    pub gender: String,
    pub income_band: String,
    pub occupation: String,
    pub education: String,
    pub interests: Vec<String>,
    pub lifestyle_tags: Vec<String>,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, AttributeValue>,
    pub consents: Consents,
}

/// Replaces the customer's traits with `traits` unless a later profiles event was already
/// applied; creates the row unless the customer has a tombstone. Returns whether it applied.
pub async fn apply_traits(
    conn: &mut PgConnection,
    traits: &Traits,
    sequence: i64,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    if !ensure_row(&mut *conn, &traits.customer_id, now).await? {
        return Ok(false);
    }
    let done = sqlx::query(
        "UPDATE customer_facts SET customer_create_time = $2, country = $3, region = $4, \
           city = $5, birth_date = $6, gender = $7, income_band = $8, occupation = $9, \
           education = $10, interests = $11, lifestyle_tags = $12, tags = $13, \
           attributes = $14::jsonb, consent_sms = $15, consent_email = $16, \
           consent_app_push = $17, consent_wechat = $18, update_time = $19 \
         WHERE customer_id = $1 AND profiles_sequence < $20",
    )
    .bind(&traits.customer_id)
    .bind(traits.create_time)
    .bind(&traits.country)
    .bind(&traits.region)
    .bind(&traits.city)
    .bind(traits.birth_date)
    .bind(&traits.gender)
    .bind(&traits.income_band)
    .bind(&traits.occupation)
    .bind(&traits.education)
    .bind(&traits.interests)
    .bind(&traits.lifestyle_tags)
    .bind(&traits.tags)
    .bind(encode_attributes(&traits.attributes))
    .bind(traits.consents.sms)
    .bind(traits.consents.email)
    .bind(traits.consents.app_push)
    .bind(traits.consents.wechat)
    .bind(now)
    .bind(sequence)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets one consent column ("sms", "email", "app_push", "wechat").
pub async fn set_consent(
    conn: &mut PgConnection,
    customer_id: &str,
    channel: &str,
    granted: bool,
) -> Result<(), sqlx::Error> {
    let column = match channel {
        "sms" => "consent_sms",
        "email" => "consent_email",
        "app_push" => "consent_app_push",
        "wechat" => "consent_wechat",
        _ => return Ok(()),
    };
    let sql = format!("UPDATE customer_facts SET {column} = $2 WHERE customer_id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(customer_id)
        .bind(granted)
        .execute(conn)
        .await?;
    Ok(())
}

/// One purchase or interaction of `customer_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewActivity {
    pub customer_id: String,
    pub activity: Activity,
    /// Purchases: the order id refunds name (`Purchase.order_id`); empty otherwise.
    pub order_id: String,
}

/// A refund of `customer_id` from the profiles feed: money returned for order `order_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRefund {
    pub activity_id: String,
    pub customer_id: String,
    pub order_id: String,
    pub occur_time: DateTime<Utc>,
    pub amount: Money,
}

/// Stores a run of activities and refunds, in feed order, in a few statements whatever its
/// length: each customer's lock (in sorted order), then its facts row unless tombstoned (as
/// [`ensure_row`] makes it), then every activity, every refund, and the refunded amounts of
/// the orders they touch ([`refresh_refunded_orders`]); a redelivered one (same activity id,
/// in an earlier batch or earlier in this run) changes nothing. `now` is when the customers'
/// new facts rows start.
pub async fn insert_activities(
    conn: &mut PgConnection,
    activities: &[NewActivity],
    refunds: &[NewRefund],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if activities.is_empty() && refunds.is_empty() {
        return Ok(());
    }
    let customers: Vec<&str> = activities
        .iter()
        .map(|new| new.customer_id.as_str())
        .chain(refunds.iter().map(|r| r.customer_id.as_str()))
        .filter(|id| !id.is_empty())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // Taken before the insert, whose snapshot then sees any tombstone committed meanwhile.
    lock_customers(&mut *conn, &customers).await?;
    sqlx::query(
        "INSERT INTO customer_facts (customer_id, lifecycle_stage_start_time, update_time) \
         SELECT c, $2, $2 FROM unnest($1::text[]) AS c WHERE NOT EXISTS \
           (SELECT 1 FROM customer_tombstones t WHERE t.customer_id = c) \
         ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(&customers)
    .bind(now)
    .execute(&mut *conn)
    .await?;

    // Columns as arrays; each activity's categories are the slice [first, last] of one flat
    // array (an empty slice when it has none), as Postgres has no array of arrays of varying
    // lengths.
    let mut columns = ActivityColumns::default();
    for new in activities {
        columns.push(new);
    }
    sqlx::query(
        "INSERT INTO customer_activities \
           (activity_id, customer_id, kind, occur_time, amount_minor, currency, categories, \
            channel, order_id) \
         SELECT a.activity_id, a.customer_id, a.kind, a.occur_time, a.amount_minor, a.currency, \
                COALESCE(($7::text[])[a.first:a.last], '{}'), a.channel, NULLIF(a.order_id, '') \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[], \
                     $6::text[], $8::int4[], $9::int4[], $10::text[], $11::text[]) WITH ORDINALITY \
           AS a(activity_id, customer_id, kind, occur_time, amount_minor, currency, first, last, \
                channel, order_id, n) \
         ORDER BY a.n \
         ON CONFLICT (activity_id) DO NOTHING",
    )
    .bind(columns.activity_ids)
    .bind(columns.customer_ids)
    .bind(columns.kinds)
    .bind(columns.occur_times)
    .bind(columns.amounts)
    .bind(columns.currencies)
    .bind(columns.categories)
    .bind(columns.first_category)
    .bind(columns.last_category)
    .bind(columns.channels)
    .bind(columns.order_ids)
    .execute(&mut *conn)
    .await?;
    if !refunds.is_empty() {
        sqlx::query(
            "INSERT INTO customer_refunds \
               (activity_id, customer_id, order_id, occur_time, amount_minor, currency) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], \
                                  $5::int8[], $6::text[]) \
             ON CONFLICT (activity_id) DO NOTHING",
        )
        .bind(
            refunds
                .iter()
                .map(|r| r.activity_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            refunds
                .iter()
                .map(|r| r.customer_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            refunds
                .iter()
                .map(|r| r.order_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(refunds.iter().map(|r| r.occur_time).collect::<Vec<_>>())
        .bind(
            refunds
                .iter()
                .map(|r| r.amount.amount_minor)
                .collect::<Vec<_>>(),
        )
        .bind(
            refunds
                .iter()
                .map(|r| r.amount.currency.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    // The orders this run named: a refund's, and a purchase's (a refund may have come first).
    let (order_customers, orders): (Vec<&str>, Vec<&str>) = activities
        .iter()
        .filter(|new| !new.order_id.is_empty())
        .map(|new| (new.customer_id.as_str(), new.order_id.as_str()))
        .chain(
            refunds
                .iter()
                .map(|r| (r.customer_id.as_str(), r.order_id.as_str())),
        )
        .unzip();
    if !orders.is_empty() {
        refresh_refunded_orders(conn, &order_customers, &orders).await?;
    }
    Ok(())
}

/// Sets `refunded_minor` on the purchases of the given (customer, order) pairs that have
/// refunds: the sum of the refunds of the same customer, order and currency, all on the
/// earliest such purchase (occur time, then activity id), 0 on any other. Pairs without a
/// refund are skipped at the cost of one index probe, so a run of purchases pays little.
pub async fn refresh_refunded_orders(
    conn: &mut PgConnection,
    customer_ids: &[&str],
    order_ids: &[&str],
) -> Result<(), sqlx::Error> {
    let keys = "SELECT DISTINCT k.customer_id, k.order_id \
                FROM unnest($1::text[], $2::text[]) AS k (customer_id, order_id) \
                WHERE EXISTS (SELECT 1 FROM customer_refunds r \
                  WHERE r.customer_id = k.customer_id AND r.order_id = k.order_id)";
    sqlx::query(AssertSqlSafe(refresh_refunded_sql(keys)))
        .bind(customer_ids)
        .bind(order_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// [`refresh_refunded_orders`] for every order of `customer_ids` that has a refund or a
/// purchase carrying one: after a merge or unmerge moved refunds and purchases between them.
pub async fn refresh_refunded_customers(
    conn: &mut PgConnection,
    customer_ids: &[&str],
) -> Result<(), sqlx::Error> {
    let keys = "SELECT customer_id, order_id FROM customer_refunds \
                WHERE customer_id = ANY($1::text[]) \
                UNION \
                SELECT customer_id, order_id FROM customer_activities \
                WHERE customer_id = ANY($1::text[]) AND refunded_minor <> 0";
    sqlx::query(AssertSqlSafe(refresh_refunded_sql(keys)))
        .bind(customer_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// The statement of both refreshes over the (customer_id, order_id) pairs `keys` selects.
/// A refund in another currency than every purchase of its order applies to none; the
/// total saturates at int64 (it would take thousands of maximal refunds to get there).
fn refresh_refunded_sql(keys: &str) -> String {
    format!(
        "WITH k AS ({keys}), \
         p AS ( \
           SELECT a.activity_id, \
             CASE WHEN row_number() OVER (PARTITION BY a.customer_id, a.order_id, a.currency \
                                          ORDER BY a.occur_time, a.activity_id) = 1 \
               THEN (SELECT LEAST(COALESCE(sum(r.amount_minor), 0), 9223372036854775807) \
                     FROM customer_refunds r WHERE r.customer_id = a.customer_id \
                       AND r.order_id = a.order_id AND r.currency = a.currency)::bigint \
               ELSE 0 END AS refunded \
           FROM k JOIN customer_activities a \
             ON a.customer_id = k.customer_id AND a.order_id = k.order_id \
           WHERE a.kind = 'purchase' AND a.order_id IS NOT NULL) \
         UPDATE customer_activities t SET refunded_minor = p.refunded \
         FROM p WHERE t.activity_id = p.activity_id AND t.refunded_minor <> p.refunded"
    )
}

/// [`insert_activities`]' rows as one array per column.
#[derive(Default)]
struct ActivityColumns<'a> {
    activity_ids: Vec<&'a str>,
    customer_ids: Vec<&'a str>,
    kinds: Vec<&'a str>,
    occur_times: Vec<DateTime<Utc>>,
    amounts: Vec<Option<i64>>,
    currencies: Vec<Option<&'a str>>,
    /// Every activity's categories, one after the other.
    categories: Vec<&'a str>,
    /// Where each activity's categories start and end in `categories` (from 1, inclusive).
    first_category: Vec<i32>,
    last_category: Vec<i32>,
    channels: Vec<&'a str>,
    order_ids: Vec<&'a str>,
}

impl<'a> ActivityColumns<'a> {
    fn push(&mut self, new: &'a NewActivity) {
        let a = &new.activity;
        self.activity_ids.push(&a.activity_id);
        self.customer_ids.push(&new.customer_id);
        self.kinds.push(a.kind.as_str());
        self.occur_times.push(a.occur_time);
        self.amounts.push(a.amount.as_ref().map(|m| m.amount_minor));
        self.currencies
            .push(a.amount.as_ref().map(|m| m.currency.as_str()));
        let first = self.categories.len() + 1;
        self.categories
            .extend(a.categories.iter().map(String::as_str));
        // Postgres arrays hold at most 2^27 elements: far below i32::MAX.
        self.first_category
            .push(i32::try_from(first).unwrap_or(i32::MAX));
        self.last_category
            .push(i32::try_from(self.categories.len()).unwrap_or(i32::MAX));
        self.channels.push(&a.channel);
        self.order_ids.push(&new.order_id);
    }
}

/// Records a custom attribute definition; `value_type` is a catalog type slug.
pub async fn insert_attribute_definition(
    conn: &mut PgConnection,
    name: &str,
    value_type: &str,
    description: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO attribute_definitions (name, value_type, description) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(value_type)
    .bind(description)
    .execute(conn)
    .await?;
    Ok(())
}

/// A loyalty member snapshot from the loyalty feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub loyalty_program_id: String,
    pub customer_id: String,
    /// False when merged away, closed or anonymised: the row is removed.
    pub active: bool,
    pub tier: String,
    pub points: i64,
    pub qualifying_points: i64,
    pub enroll_time: Option<DateTime<Utc>>,
}

/// Applies a member snapshot of feed `sequence` unless a later one was applied. Returns the
/// customers whose loyalty facts changed (the member's customer, and its previous customer
/// when it changed).
pub async fn apply_member(
    conn: &mut PgConnection,
    member: &MemberSnapshot,
    sequence: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let held: Option<(String, i64)> = sqlx::query_as(
        "SELECT customer_id, feed_sequence FROM loyalty_memberships WHERE member_id = $1",
    )
    .bind(&member.member_id)
    .fetch_optional(&mut *conn)
    .await?;
    if held.as_ref().is_some_and(|(_, s)| *s >= sequence) {
        return Ok(Vec::new());
    }
    let mut touched: Vec<String> = held.iter().map(|(c, _)| c.clone()).collect();
    if !member.tier.is_empty() {
        record_tiers(
            &mut *conn,
            &member.loyalty_program_id,
            std::slice::from_ref(&member.tier),
        )
        .await?;
    }
    if !member.active || member.customer_id.is_empty() {
        sqlx::query("DELETE FROM loyalty_memberships WHERE member_id = $1")
            .bind(&member.member_id)
            .execute(&mut *conn)
            .await?;
        return Ok(touched);
    }
    // Keep the merge bookkeeping while the row stays with the same customer.
    let updated = sqlx::query(
        "UPDATE loyalty_memberships SET \
           merged_from = CASE WHEN customer_id = $2 THEN merged_from END, \
           merge_id = CASE WHEN customer_id = $2 THEN merge_id END, \
           customer_id = $2, loyalty_program_id = $3, tier = $4, points = $5, \
           qualifying_points = $6, enroll_time = $7, feed_sequence = $8 \
         WHERE member_id = $1",
    )
    .bind(&member.member_id)
    .bind(&member.customer_id)
    .bind(&member.loyalty_program_id)
    .bind(&member.tier)
    .bind(member.points)
    .bind(member.qualifying_points)
    .bind(member.enroll_time)
    .bind(sequence)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        sqlx::query(
            "INSERT INTO loyalty_memberships (customer_id, loyalty_program_id, member_id, tier, \
               points, qualifying_points, enroll_time, feed_sequence) \
             VALUES ($2, $3, $1, $4, $5, $6, $7, $8) \
             ON CONFLICT (customer_id, loyalty_program_id) DO UPDATE SET \
               member_id = EXCLUDED.member_id, tier = EXCLUDED.tier, points = EXCLUDED.points, \
               qualifying_points = EXCLUDED.qualifying_points, \
               enroll_time = EXCLUDED.enroll_time, feed_sequence = EXCLUDED.feed_sequence",
        )
        .bind(&member.member_id)
        .bind(&member.customer_id)
        .bind(&member.loyalty_program_id)
        .bind(&member.tier)
        .bind(member.points)
        .bind(member.qualifying_points)
        .bind(member.enroll_time)
        .bind(sequence)
        .execute(&mut *conn)
        .await?;
    }
    if !touched.contains(&member.customer_id) {
        touched.push(member.customer_id.clone());
    }
    Ok(touched)
}

/// Remembers tier codes of a program (the catalog offers them for "loyalty.tier").
pub async fn record_tiers(
    conn: &mut PgConnection,
    program_id: &str,
    tiers: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO loyalty_tiers (loyalty_program_id, tier) \
         SELECT $1, t FROM unnest($2::text[]) t WHERE t <> '' \
         ON CONFLICT DO NOTHING",
    )
    .bind(program_id)
    .bind(tiers)
    .execute(conn)
    .await?;
    Ok(())
}

/// A survey answer: NPS and/or CSAT at `time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurveyAnswer {
    pub nps: Option<i32>,
    pub csat: Option<i32>,
    pub time: DateTime<Utc>,
}

/// Keeps the answer's scores when newer than those held.
pub async fn apply_answer(
    conn: &mut PgConnection,
    customer_id: &str,
    answer: &SurveyAnswer,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE customer_facts SET \
           last_nps_score = CASE WHEN $2::int IS NOT NULL \
             AND (last_nps_time IS NULL OR last_nps_time < $4) THEN $2 ELSE last_nps_score END, \
           last_nps_time = CASE WHEN $2::int IS NOT NULL \
             AND (last_nps_time IS NULL OR last_nps_time < $4) THEN $4 ELSE last_nps_time END, \
           last_csat_score = CASE WHEN $3::int IS NOT NULL \
             AND (last_csat_time IS NULL OR last_csat_time < $4) THEN $3 ELSE last_csat_score END, \
           last_csat_time = CASE WHEN $3::int IS NOT NULL \
             AND (last_csat_time IS NULL OR last_csat_time < $4) THEN $4 ELSE last_csat_time END \
         WHERE customer_id = $1",
    )
    .bind(customer_id)
    .bind(answer.nps)
    .bind(answer.csat)
    .bind(answer.time)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records whether a ticket is open (`opened_only`: keep an existing row as it is) and
/// recounts the customer's open tickets.
pub async fn apply_ticket(
    conn: &mut PgConnection,
    ticket_id: &str,
    customer_id: &str,
    open: bool,
    opened_only: bool,
) -> Result<(), sqlx::Error> {
    let sql = if opened_only {
        "INSERT INTO customer_tickets (ticket_id, customer_id, open) VALUES ($1, $2, $3) \
         ON CONFLICT (ticket_id) DO NOTHING"
    } else {
        "INSERT INTO customer_tickets (ticket_id, customer_id, open) VALUES ($1, $2, $3) \
         ON CONFLICT (ticket_id) DO UPDATE SET open = EXCLUDED.open"
    };
    sqlx::query(sql)
        .bind(ticket_id)
        .bind(customer_id)
        .bind(open)
        .execute(&mut *conn)
        .await?;
    let owner: String =
        sqlx::query_scalar("SELECT customer_id FROM customer_tickets WHERE ticket_id = $1")
            .bind(ticket_id)
            .fetch_one(&mut *conn)
            .await?;
    recount_tickets(conn, &owner).await
}

/// Sets open_ticket_count from the open tickets held.
pub async fn recount_tickets(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE customer_facts SET open_ticket_count = (SELECT count(*) FROM customer_tickets \
           WHERE customer_id = $1 AND open) WHERE customer_id = $1",
    )
    .bind(customer_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Soft deletion: the facts row moves into a tombstone (kept for CustomerUndeleted).
pub async fn delete_customer(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<(), sqlx::Error> {
    lock_customer(&mut *conn, customer_id).await?;
    sqlx::query(
        "INSERT INTO customer_tombstones (customer_id, reason, facts) \
         SELECT $1, 'deleted', (SELECT to_jsonb(f) FROM customer_facts f WHERE customer_id = $1) \
         ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(customer_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM customer_facts WHERE customer_id = $1")
        .bind(customer_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Brings a customer back from a "deleted" or "merged" tombstone with the facts it held
/// (a bare row when none were kept). Returns whether a tombstone was lifted.
pub async fn restore_customer(
    conn: &mut PgConnection,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    lock_customer(&mut *conn, customer_id).await?;
    let tomb: Option<(String, Option<String>)> = sqlx::query_as(
        "DELETE FROM customer_tombstones WHERE customer_id = $1 AND reason <> 'erased' \
         RETURNING reason, facts::text",
    )
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((_, facts)) = tomb else {
        return Ok(false);
    };
    if let Some(facts) = facts {
        restore_row(&mut *conn, &facts).await?;
    }
    ensure_row(conn, customer_id, now).await?;
    Ok(true)
}

async fn restore_row(conn: &mut PgConnection, facts: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO customer_facts SELECT * FROM jsonb_populate_record(NULL::customer_facts, \
           $1::jsonb) ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(facts)
    .execute(conn)
    .await?;
    Ok(())
}

/// A profiles merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub merge_id: String,
    pub source: String,
    pub target: String,
}

/// Moves the source's activities, refunds, custom events, loyalty rows and tickets to the target
/// remembering the merge, gives the target the newer survey answers, and replaces the source's
/// row with a "merged" tombstone. Returns false when the merge was already applied.
pub async fn merge(conn: &mut PgConnection, merge: &Merge) -> Result<bool, sqlx::Error> {
    let Merge {
        merge_id,
        source,
        target,
    } = merge;
    lock_customers(&mut *conn, &[source.min(target), source.max(target)]).await?;
    let recorded = sqlx::query(
        "INSERT INTO customer_merges (merge_id, source_id, target_id, source_facts, \
           target_feedback) \
         SELECT $1, $2, $3, (SELECT to_jsonb(s) FROM customer_facts s WHERE customer_id = $2), \
           COALESCE((SELECT jsonb_build_object('last_nps_score', t.last_nps_score, \
             'last_nps_time', t.last_nps_time, 'last_csat_score', t.last_csat_score, \
             'last_csat_time', t.last_csat_time) \
             FROM customer_facts t WHERE customer_id = $3), '{}') \
         ON CONFLICT (merge_id) DO NOTHING",
    )
    .bind(merge_id)
    .bind(source)
    .bind(target)
    .execute(&mut *conn)
    .await?;
    if recorded.rows_affected() == 0 {
        return Ok(false);
    }
    for table in ["customer_activities", "customer_refunds"] {
        let sql = format!(
            "UPDATE {table} SET customer_id = $3, merged_from = $2, merge_id = $1 \
             WHERE customer_id = $2"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(merge_id)
            .bind(source)
            .bind(target)
            .execute(&mut *conn)
            .await?;
    }
    super::custom_events::merge(&mut *conn, merge_id, source, target).await?;
    // The source's refunds now meet the target's purchases of the same orders, and the
    // other way round.
    refresh_refunded_customers(&mut *conn, &[target.as_str()]).await?;
    // A program the target is already a member of keeps the source's row under the source
    // id (never evaluated while the merge stands); the loyalty feed reports the merged member.
    sqlx::query(
        "UPDATE loyalty_memberships s SET customer_id = $3, merged_from = $2, merge_id = $1 \
         WHERE s.customer_id = $2 AND NOT EXISTS (SELECT 1 FROM loyalty_memberships t \
           WHERE t.customer_id = $3 AND t.loyalty_program_id = s.loyalty_program_id)",
    )
    .bind(merge_id)
    .bind(source)
    .bind(target)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE customer_tickets SET customer_id = $3, merged_from = $2, merge_id = $1 \
         WHERE customer_id = $2",
    )
    .bind(merge_id)
    .bind(source)
    .bind(target)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE customer_facts t SET \
           last_nps_score = CASE WHEN s.last_nps_time > t.last_nps_time \
             OR (t.last_nps_time IS NULL AND s.last_nps_time IS NOT NULL) \
             THEN s.last_nps_score ELSE t.last_nps_score END, \
           last_nps_time = GREATEST(s.last_nps_time, t.last_nps_time), \
           last_csat_score = CASE WHEN s.last_csat_time > t.last_csat_time \
             OR (t.last_csat_time IS NULL AND s.last_csat_time IS NOT NULL) \
             THEN s.last_csat_score ELSE t.last_csat_score END, \
           last_csat_time = GREATEST(s.last_csat_time, t.last_csat_time) \
         FROM customer_facts s WHERE s.customer_id = $1 AND t.customer_id = $2",
    )
    .bind(source)
    .bind(target)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO customer_tombstones (customer_id, reason) VALUES ($1, 'merged') \
         ON CONFLICT (customer_id) DO UPDATE SET reason = 'merged', facts = NULL",
    )
    .bind(source)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM customer_facts WHERE customer_id = $1")
        .bind(source)
        .execute(&mut *conn)
        .await?;
    recount_tickets(conn, target).await?;
    Ok(true)
}

/// Undoes merge `merge_id`: restores the source's row as it was, moves back exactly what the
/// merge moved, and gives the target back its own survey answers where the merge replaced
/// them. Returns the merge, or `None` when unknown or already undone.
pub async fn unmerge(
    conn: &mut PgConnection,
    merge_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Merge>, sqlx::Error> {
    let row: Option<(String, String, Option<String>, String)> = sqlx::query_as(
        "UPDATE customer_merges SET unmerged = true WHERE merge_id = $1 AND NOT unmerged \
         RETURNING source_id, target_id, source_facts::text, target_feedback::text",
    )
    .bind(merge_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((source, target, source_facts, target_feedback)) = row else {
        return Ok(None);
    };
    lock_customers(
        &mut *conn,
        &[source.as_str().min(&target), source.as_str().max(&target)],
    )
    .await?;
    sqlx::query("DELETE FROM customer_tombstones WHERE customer_id = $1 AND reason = 'merged'")
        .bind(&source)
        .execute(&mut *conn)
        .await?;
    if let Some(facts) = &source_facts {
        restore_row(&mut *conn, facts).await?;
    }
    ensure_row(&mut *conn, &source, now).await?;
    for table in [
        "customer_activities",
        "customer_events",
        "customer_refunds",
        "loyalty_memberships",
        "customer_tickets",
    ] {
        let sql = format!(
            "UPDATE {table} SET customer_id = merged_from, merged_from = NULL, merge_id = NULL \
             WHERE merge_id = $1"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merge_id)
            .execute(&mut *conn)
            .await?;
    }
    // Each side's refunds apply to its own purchases again.
    refresh_refunded_customers(&mut *conn, &[source.as_str(), target.as_str()]).await?;
    // Answers the merge took from the source go back to what the target had.
    sqlx::query(
        "UPDATE customer_facts t SET \
           last_nps_score = CASE WHEN t.last_nps_time IS NOT DISTINCT FROM s.last_nps_time \
             AND s.last_nps_time IS NOT NULL THEN (b->>'last_nps_score')::int \
             ELSE t.last_nps_score END, \
           last_nps_time = CASE WHEN t.last_nps_time IS NOT DISTINCT FROM s.last_nps_time \
             AND s.last_nps_time IS NOT NULL THEN (b->>'last_nps_time')::timestamptz \
             ELSE t.last_nps_time END, \
           last_csat_score = CASE WHEN t.last_csat_time IS NOT DISTINCT FROM s.last_csat_time \
             AND s.last_csat_time IS NOT NULL THEN (b->>'last_csat_score')::int \
             ELSE t.last_csat_score END, \
           last_csat_time = CASE WHEN t.last_csat_time IS NOT DISTINCT FROM s.last_csat_time \
             AND s.last_csat_time IS NOT NULL THEN (b->>'last_csat_time')::timestamptz \
             ELSE t.last_csat_time END \
         FROM customer_facts s, (SELECT $3::jsonb AS b) before \
         WHERE s.customer_id = $1 AND t.customer_id = $2",
    )
    .bind(&source)
    .bind(&target)
    .bind(&target_feedback)
    .execute(&mut *conn)
    .await?;
    recount_tickets(&mut *conn, &source).await?;
    recount_tickets(conn, &target).await?;
    Ok(Some(Merge {
        merge_id: merge_id.to_owned(),
        source,
        target,
    }))
}

/// Erasure: removes every fact held under `customer_id` (row, activities, refunds, custom
/// events, loyalty rows, tickets, merge snapshots, predictions, computed trait values) and leaves an "erased" tombstone with nothing
/// in it.
pub async fn erase(conn: &mut PgConnection, customer_id: &str) -> Result<(), sqlx::Error> {
    lock_customer(&mut *conn, customer_id).await?;
    for sql in [
        "DELETE FROM customer_facts WHERE customer_id = $1",
        "DELETE FROM customer_activities WHERE customer_id = $1 OR merged_from = $1",
        "DELETE FROM customer_events WHERE customer_id = $1 OR merged_from = $1",
        "DELETE FROM customer_refunds WHERE customer_id = $1 OR merged_from = $1",
        "DELETE FROM loyalty_memberships WHERE customer_id = $1 OR merged_from = $1",
        "DELETE FROM customer_tickets WHERE customer_id = $1 OR merged_from = $1",
        "DELETE FROM customer_merges WHERE source_id = $1 OR target_id = $1",
        // Derived from the facts: nothing of them may outlive the erasure.
        "DELETE FROM customer_predictions WHERE customer_id = $1",
        "DELETE FROM customer_computed_traits WHERE customer_id = $1",
    ] {
        sqlx::query(sql)
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "INSERT INTO customer_tombstones (customer_id, reason) VALUES ($1, 'erased') \
         ON CONFLICT (customer_id) DO UPDATE SET reason = 'erased', facts = NULL",
    )
    .bind(customer_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The source positions and update time of a customer's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positions {
    /// `(feed, sequence, occur time)` for profiles, loyalty, feedback.
    pub feeds: Vec<(Feed, i64, Option<DateTime<Utc>>)>,
    pub update_time: DateTime<Utc>,
}

/// The feed positions of `customer_id`.
pub async fn positions(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Option<Positions>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT profiles_sequence, profiles_occur_time, loyalty_sequence, loyalty_occur_time, \
           feedback_sequence, feedback_occur_time, update_time \
         FROM customer_facts WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(Positions {
            feeds: vec![
                (
                    Feed::Profiles,
                    row.try_get("profiles_sequence")?,
                    row.try_get("profiles_occur_time")?,
                ),
                (
                    Feed::Loyalty,
                    row.try_get("loyalty_sequence")?,
                    row.try_get("loyalty_occur_time")?,
                ),
                (
                    Feed::Feedback,
                    row.try_get("feedback_sequence")?,
                    row.try_get("feedback_occur_time")?,
                ),
            ],
            update_time: row.try_get("update_time")?,
        })
    })
    .transpose()
}

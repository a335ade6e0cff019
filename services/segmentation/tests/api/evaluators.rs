//! The two rule evaluators agree: the in-process one (`domain::eval::evaluate`) and the SQL one
//! (`store::compile`, both its shapes, run by `matching_customers` against real Postgres).
//!
//! The property test generates random valid rules over the whole catalog (every operator,
//! windows, filters, NOT, nested groups, segment references, event aggregates and sequences
//! over custom events, computed traits with and without a stored value) and random customers (custom events at one instant ordered by id, unset
//! fields, activities at exactly N days before T and one microsecond either side, several
//! currencies, loyalty memberships, segment memberships), writes the customers in a
//! transaction that is rolled back, and checks both evaluators pick the same members. The
//! unit tests below pin the tricky semantics to hand-computed answers, through both.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use anyhow::Context;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use custops_contracts::custops::common::v1 as common_pb;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::domain::catalog::{
    AttributeDefinition, AttributeType, Catalog, EventTypeDef, FieldDef, FilterDimension,
    INTERACTION_KINDS, Operator, PropertyType, ValueType, operators_for,
};
use custops_segmentation::domain::computed::{ComputedValue, TraitField};
use custops_segmentation::domain::eval::evaluate;
use custops_segmentation::domain::facts::{
    Activity, ActivityKind, AttributeValue, Consents, CustomEvent, EvalContext, Facts,
    FeedbackFacts, LifecycleFacts, LoyaltyMembership, Money, PredictionFacts, PropertyValue,
    RfmFacts,
};
use custops_segmentation::domain::rule::Aggregate;
use custops_segmentation::store::compile::{compile, compile_grouped, matching_customers};
use custops_segmentation::wire::rules::{operator_to_proto, parse_rule};
use custops_testkit::TestDatabase;
use pb::condition::Kind;
use pb::value::Kind as V;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

mod events;
mod sequences;

// ---------------------------------------------------------------------------------------------
// Shared fixtures.

/// Segments rules may reference (rows exist so memberships can point at them).
fn segment_ids() -> [Uuid; 3] {
    [
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002),
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003),
    ]
}

/// The catalog of the tests: built-in fields, one attribute of each type, two tiers.
fn catalog() -> Catalog {
    let attr = |name: &str, value_type| AttributeDefinition {
        name: name.to_owned(),
        value_type,
        display_name: String::new(),
        description: String::new(),
    };
    Catalog::builtin()
        .with_attributes([
            attr("nickname", AttributeType::String),
            attr("vip_level", AttributeType::Integer),
            attr("score", AttributeType::Double),
            attr("member", AttributeType::Bool),
            attr("last_login", AttributeType::Timestamp),
            attr("anniversary", AttributeType::Date),
        ])
        .with_loyalty_tiers(["silver".to_owned(), "gold".to_owned()])
        .with_event_types(event_types())
        .with_computed_traits(computed_traits())
}

/// The computed traits of the tests, one per kind of stored value (and both of the aggregates
/// that read 0 without a value).
fn computed_traits() -> Vec<TraitField> {
    [
        ("coupons", Aggregate::Count),
        ("coupon_total", Aggregate::Sum),
        ("smallest_coupon", Aggregate::Min),
        ("last_coupon", Aggregate::LastTime),
        ("favourite_campaign", Aggregate::MostFrequent),
    ]
    .into_iter()
    .map(|(name, aggregate)| TraitField {
        name: name.to_owned(),
        description: String::new(),
        version: 1,
        aggregate,
    })
    .collect()
}

/// The custom event types of the tests: one with a property of every type, one with a string.
fn event_types() -> Vec<EventTypeDef> {
    let def = |name: &str, properties: &[(&str, PropertyType)]| EventTypeDef {
        name: name.to_owned(),
        properties: properties
            .iter()
            .map(|(p, t)| ((*p).to_owned(), *t))
            .collect(),
    };
    vec![
        def(
            "order_placed",
            &[
                ("amount", PropertyType::Number),
                ("sku", PropertyType::String),
                ("gift", PropertyType::Bool),
                ("shipped_at", PropertyType::Time),
                ("total", PropertyType::Money),
            ],
        ),
        def("app_opened", &[("screen", PropertyType::String)]),
    ]
}

/// A property value as the profiles feed stores it (`feeds/profiles/custom_events.rs`).
fn property_json(value: &PropertyValue) -> serde_json::Value {
    match value {
        PropertyValue::String(v) => serde_json::json!({ "string": v }),
        PropertyValue::Number(v) => serde_json::json!({ "number": v }),
        PropertyValue::Bool(v) => serde_json::json!({ "bool": v }),
        PropertyValue::Time(v) => serde_json::json!({ "time": v.to_rfc3339() }),
        PropertyValue::Money(m) => serde_json::json!({
            "money": { "amount_minor": m.amount_minor, "currency": m.currency }
        }),
    }
}

async fn database() -> anyhow::Result<(TestDatabase, PgPool)> {
    let db = TestDatabase::create().await?;
    let options = PgConnectOptions::from_str(db.url())?.options([("search_path", "segmentation")]);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .context("Failed to connect to the test database")?;
    custops_common::db::migrate(&pool, "segmentation", &custops_segmentation::MIGRATIONS).await?;
    for id in segment_ids() {
        sqlx::query(
            "INSERT INTO segments (segment_id, display_name, kind, create_time, update_time, etag) \
             VALUES ($1, 'fixture', 'static', now(), now(), 'e')",
        )
        .bind(id)
        .execute(&pool)
        .await?;
    }
    for t in computed_traits() {
        sqlx::query(
            "INSERT INTO computed_traits (name, version, definition, aggregate, time_dependent, \
               create_time, update_time, etag) \
             VALUES ($1, 1, '', $2, false, now(), now(), 'e')",
        )
        .bind(&t.name)
        .bind(t.aggregate.slug())
        .execute(&pool)
        .await?;
    }
    Ok((db, pool))
}

/// Writes `customers` (facts, activities, loyalty, memberships) on `conn`.
async fn insert(conn: &mut PgConnection, customers: &[Facts]) -> anyhow::Result<()> {
    for f in customers {
        let attributes: serde_json::Map<String, serde_json::Value> = f
            .attributes
            .iter()
            .map(|(name, value)| {
                let typed = match value {
                    AttributeValue::String(v) => serde_json::json!({ "string": v }),
                    AttributeValue::Integer(v) => serde_json::json!({ "integer": v }),
                    AttributeValue::Double(v) => serde_json::json!({ "double": v }),
                    AttributeValue::Bool(v) => serde_json::json!({ "bool": v }),
                    AttributeValue::Timestamp(v) => {
                        serde_json::json!({ "timestamp": v.to_rfc3339() })
                    }
                    AttributeValue::Date(v) => serde_json::json!({ "date": v.to_string() }),
                };
                (name.clone(), typed)
            })
            .collect();
        sqlx::query(
            "INSERT INTO customer_facts (customer_id, customer_create_time, country, region, city, \
             birth_date, gender, income_band, occupation, education, interests, lifestyle_tags, \
             tags, attributes, consent_sms, consent_email, consent_app_push, consent_wechat, \
             last_nps_score, last_nps_time, last_csat_score, last_csat_time, open_ticket_count, \
             rfm_recency_days, rfm_frequency, rfm_monetary_minor, rfm_recency_score, \
             rfm_frequency_score, rfm_monetary_score, rfm_group, lifecycle_stage, \
             lifecycle_stage_start_time, lifecycle_previous_stage, churn_risk, churn_risk_score) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, \
             $35)",
        )
        .bind(&f.customer_id)
        .bind(f.customer_create_time)
        .bind(&f.country)
        .bind(&f.region)
        .bind(&f.city)
        .bind(f.birth_date)
        .bind(&f.gender)
        .bind(&f.income_band)
        .bind(&f.occupation)
        .bind(&f.education)
        .bind(&f.interests)
        .bind(&f.lifestyle_tags)
        .bind(&f.tags)
        .bind(serde_json::Value::Object(attributes))
        .bind(f.consents.sms)
        .bind(f.consents.email)
        .bind(f.consents.app_push)
        .bind(f.consents.wechat)
        .bind(f.feedback.last_nps_score)
        .bind(f.feedback.last_nps_time)
        .bind(f.feedback.last_csat_score)
        .bind(f.feedback.last_csat_time)
        .bind(f.feedback.open_ticket_count)
        .bind(f.rfm.recency_days)
        .bind(f.rfm.frequency)
        .bind(f.rfm.monetary_minor)
        .bind(f.rfm.recency_score as i16)
        .bind(f.rfm.frequency_score as i16)
        .bind(f.rfm.monetary_score as i16)
        .bind(&f.rfm.group)
        .bind(&f.lifecycle.stage)
        .bind(f.lifecycle.stage_start_time)
        .bind(&f.lifecycle.previous_stage)
        .bind(f.lifecycle.churn_risk)
        .bind(f.lifecycle.churn_risk_score)
        .execute(&mut *conn)
        .await?;
        for a in &f.activities {
            sqlx::query(
                "INSERT INTO customer_activities (activity_id, customer_id, kind, occur_time, \
                 amount_minor, currency, categories, channel, refunded_minor) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&a.activity_id)
            .bind(&f.customer_id)
            .bind(a.kind.as_str())
            .bind(a.occur_time)
            .bind(a.amount.as_ref().map(|m| m.amount_minor))
            .bind(a.amount.as_ref().map(|m| m.currency.clone()))
            .bind(&a.categories)
            .bind(&a.channel)
            .bind(a.refunded_minor)
            .execute(&mut *conn)
            .await?;
        }
        if let Some(p) = &f.prediction {
            sqlx::query(
                "INSERT INTO customer_predictions (customer_id, model_version, as_of_time, \
                 repeat_transactions, recency_weeks, age_weeks, mean_value, probability_alive, \
                 expected_purchases_90d, expected_value_minor, clv_minor, churn_risk) \
                 VALUES ($1, 1, now(), 0, 0, 0, 0, $2, $3, $4, $5, $6)",
            )
            .bind(&f.customer_id)
            .bind(p.probability_alive)
            .bind(p.expected_purchases_90d)
            .bind(p.expected_value_minor)
            .bind(p.clv_minor)
            .bind(p.churn_risk)
            .execute(&mut *conn)
            .await?;
        }
        for m in &f.loyalty {
            sqlx::query(
                "INSERT INTO loyalty_memberships (customer_id, loyalty_program_id, tier, points, \
                 qualifying_points, enroll_time) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&f.customer_id)
            .bind(&m.loyalty_program_id)
            .bind(&m.tier)
            .bind(m.points)
            .bind(m.qualifying_points)
            .bind(m.enroll_time)
            .execute(&mut *conn)
            .await?;
        }
        for e in &f.events {
            let properties: serde_json::Map<String, serde_json::Value> = e
                .properties
                .iter()
                .map(|(name, value)| (name.clone(), property_json(value)))
                .collect();
            sqlx::query(
                "INSERT INTO customer_events (activity_id, customer_id, event_type, occur_time, \
                 properties) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&e.activity_id)
            .bind(&f.customer_id)
            .bind(&e.event_type)
            .bind(e.occur_time)
            .bind(serde_json::Value::Object(properties))
            .execute(&mut *conn)
            .await?;
        }
        for (name, value) in &f.computed {
            let (integer, double, time, text) = match value {
                ComputedValue::Integer(v) => (Some(*v), None, None, None),
                ComputedValue::Double(v) => (None, Some(*v), None, None),
                ComputedValue::Time(v) => (None, None, Some(*v), None),
                ComputedValue::Text(v) => (None, None, None, Some(v.clone())),
            };
            sqlx::query(
                "INSERT INTO customer_computed_traits (customer_id, name, version, \
                   integer_value, double_value, time_value, string_value, compute_time) \
                 VALUES ($1, $2, 1, $3, $4, $5, $6, now())",
            )
            .bind(&f.customer_id)
            .bind(name)
            .bind(integer)
            .bind(double)
            .bind(time)
            .bind(text)
            .execute(&mut *conn)
            .await?;
        }
        for segment in &f.segments {
            sqlx::query(
                "INSERT INTO memberships (segment_id, customer_id, segment_version, enter_time, \
                 enter_reason) VALUES ($1, $2, 1, now(), 'static_upload')",
            )
            .bind(segment)
            .bind(&f.customer_id)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Members by the Rust evaluator and by SQL, for `condition` over `customers` at `ctx`; the
/// two SQL shapes (correlated and grouped aggregates) must agree, or it fails.
async fn both(
    pool: &PgPool,
    catalog: &Catalog,
    condition: &pb::Condition,
    customers: &[Facts],
    ctx: &EvalContext,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let rule = parse_rule(condition, "rule", catalog)
        .map_err(|v| anyhow::anyhow!("generated rule is invalid: {:?}", v.into_result()))?;
    let mut in_rust: Vec<String> = customers
        .iter()
        .filter(|f| evaluate(&rule, f, ctx))
        .map(|f| f.customer_id.clone())
        .collect();
    in_rust.sort();
    let mut tx = pool.begin().await?;
    insert(&mut tx, customers).await?;
    let in_sql = matching_customers(&mut tx, &compile_grouped(&rule), ctx).await?;
    let correlated = matching_customers(&mut tx, &compile(&rule), ctx).await?;
    tx.rollback().await?;
    anyhow::ensure!(
        in_sql == correlated,
        "grouped SQL selects {in_sql:?}, correlated SQL {correlated:?}"
    );
    Ok((in_rust, in_sql))
}

fn ts(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, micros: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .map(|t| t + Duration::microseconds(micros))
        .unwrap_or_default()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

fn ctx_at(now: DateTime<Utc>) -> EvalContext {
    EvalContext {
        now,
        today: now.date_naive(),
    }
}

fn ts_proto(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

// ---------------------------------------------------------------------------------------------
// Generation: a tape of random numbers drives every choice, so proptest can shrink it.

/// Reads choices off a slice of random numbers, cycling when it runs out.
struct Tape<'a> {
    values: &'a [u32],
    at: usize,
}

impl<'a> Tape<'a> {
    fn new(values: &'a [u32]) -> Self {
        Self { values, at: 0 }
    }
    fn next(&mut self) -> u32 {
        let v = self
            .values
            .get(self.at % self.values.len().max(1))
            .copied()
            .unwrap_or(0);
        self.at += 1;
        v
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() as usize) % n.max(1)
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
    fn chance(&mut self, percent: u32) -> bool {
        self.next() % 100 < percent
    }
    /// A subset of `items` (possibly empty).
    fn subset(&mut self, items: &[&str]) -> Vec<String> {
        items
            .iter()
            .filter(|_| self.chance(35))
            .map(|s| (*s).to_owned())
            .collect()
    }
}

/// Evaluation instants: ordinary, 28 Feb and 1 Mar of a common year, 29 Feb of a leap year.
fn nows() -> [DateTime<Utc>; 4] {
    [
        ts(2026, 11, 24, 12, 34, 56, 789_012),
        ts(2027, 2, 28, 10, 0, 0, 0),
        ts(2027, 3, 1, 0, 0, 0, 0),
        ts(2028, 2, 29, 23, 59, 59, 999_999),
    ]
}

const DAYS: [i32; 5] = [1, 7, 30, 90, 365];

/// Instants around the window and WITHIN_LAST boundaries: exactly N days before T, one
/// microsecond either side, T itself, and one day after T.
fn time_at(tape: &mut Tape<'_>, now: DateTime<Utc>) -> DateTime<Utc> {
    match tape.below(10) {
        0 => now,
        1 => now + Duration::days(1),
        2 => ts(2020, 1, 1, 0, 0, 0, 0),
        _ => {
            let days = tape.pick(&[0, 1, 7, 30, 90, 365, 1000]);
            let micros = tape.pick(&[-1_i64, 0, 0, 1]);
            now - Duration::hours(24 * days) + Duration::microseconds(micros)
        }
    }
}

fn birth_dates(today: NaiveDate) -> Vec<NaiveDate> {
    let mut dates = vec![
        date(2000, 2, 29),
        date(1996, 2, 29),
        date(1990, 2, 28),
        date(1990, 3, 1),
        date(2010, 12, 31),
        date(1999, 1, 1),
    ];
    // Birthdays today, tomorrow and yesterday.
    for delta in [-1, 0, 1] {
        let day = today + Duration::days(delta);
        if let Some(d) = NaiveDate::from_ymd_opt(1985, day.month(), day.day()) {
            dates.push(d);
        }
    }
    dates
}

const STRINGS: [&str; 16] = [
    "CN", "SG", "Shanghai", "Sh", "S", "Beijing", "engineer", "eng", "teacher", "x", "上海", "海",
    "a%b", "a_b", "a\\b", "%",
];
/// MATCHES_PATTERN operands: every wildcard, escapes, multi-byte characters (`_` is one
/// character, not one byte), case.
const PATTERNS: [&str; 22] = [
    "S%", "%ai", "Sh%i", "_h%", "%a%", "S_", "%", "_", "__", "上_", "%海", "a\\%b", "a\\_b", "a_b",
    "a%b", "%\\\\%", "s%", "%n%e%", "\\S%", "%%", "_%_", "CN",
];
const LIST_ITEMS: [&str; 8] = [
    "vip", "new", "sports", "beauty", "skincare", "makeup", "store", "web",
];
const CATEGORIES: [&str; 4] = ["skincare", "makeup", "hair", "none"];
const CHANNELS: [&str; 4] = ["store", "web", "app", "wechat_mini_program"];
const CURRENCIES: [&str; 2] = ["CNY", "USD"];
const INTS: [i64; 20] = [
    -1, 0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 26, 27, 28, 35, 36, 100, 364, 365, 1000,
];
const DOUBLES: [f64; 6] = [-0.5, 0.0, 0.25, 0.5, 0.75, 1.0];
const AMOUNTS: [i64; 6] = [-50, 0, 100, 150, 250, 1000];

const EVENT_TYPES: [&str; 2] = ["order_placed", "app_opened"];
const SKUS: [&str; 5] = ["a", "ab", "b", "B", ""];
const SCREENS: [&str; 3] = ["home", "cart", ""];
/// Event numbers: 0.1 + 0.2 + 0.3 differs by the order of the additions; 10^300 and
/// -10^-300 are bounded before they are added.
const NUMBERS: [f64; 11] = [
    1e300,
    -1e-300,
    -1.5,
    0.0,
    0.1,
    0.2,
    0.3,
    0.6,
    0.6000000000000001,
    1.0,
    2.5,
];

/// A random custom event of the customer `id` (the `j`th).
fn custom_event(id: &str, j: usize, raw: &[u32; 10], now: DateTime<Utc>) -> CustomEvent {
    let mut t = Tape::new(raw);
    let event_type = t.pick(&EVENT_TYPES);
    let mut properties = BTreeMap::new();
    let mut put = |t: &mut Tape<'_>, name: &str, value: PropertyValue| {
        // Now and then a value of another type than the definition's: it reads as unset.
        let value = if t.chance(5) {
            PropertyValue::String("1".to_owned())
        } else {
            value
        };
        properties.insert(name.to_owned(), value);
    };
    if event_type == "order_placed" {
        if !t.chance(20) {
            let n = t.pick(&NUMBERS);
            put(&mut t, "amount", PropertyValue::Number(n));
        }
        if !t.chance(20) {
            let sku = t.pick(&SKUS).to_owned();
            put(&mut t, "sku", PropertyValue::String(sku));
        }
        if !t.chance(30) {
            let gift = t.chance(50);
            put(&mut t, "gift", PropertyValue::Bool(gift));
        }
        if !t.chance(30) {
            let at = time_at(&mut t, now);
            put(&mut t, "shipped_at", PropertyValue::Time(at));
        }
        if t.chance(50) {
            let money = Money {
                amount_minor: t.pick(&AMOUNTS),
                currency: t.pick(&CURRENCIES).to_owned(),
            };
            put(&mut t, "total", PropertyValue::Money(money));
        }
    } else if !t.chance(20) {
        let screen = t.pick(&SCREENS).to_owned();
        put(&mut t, "screen", PropertyValue::String(screen));
    }
    CustomEvent {
        activity_id: format!("{id}-e{j}"),
        event_type: event_type.to_owned(),
        occur_time: time_at(&mut t, now),
        properties,
    }
}

fn customer(
    index: usize,
    tape: &mut Tape<'_>,
    activities: &[[u32; 12]],
    loyalty: &[[u32; 5]],
    events: &[[u32; 10]],
    ctx: &EvalContext,
) -> Facts {
    let now = ctx.now;
    let id = format!("c{index}");
    let text = |tape: &mut Tape<'_>, pool: &[&str]| {
        if tape.chance(25) {
            String::new()
        } else {
            tape.pick(pool).to_owned()
        }
    };
    let enum_value = |tape: &mut Tape<'_>, pool: &[&str]| {
        if tape.chance(20) {
            String::new()
        } else {
            tape.pick(pool).to_owned()
        }
    };
    let mut attributes = BTreeMap::new();
    for name in [
        "nickname",
        "vip_level",
        "score",
        "member",
        "last_login",
        "anniversary",
    ] {
        if tape.chance(30) {
            continue;
        }
        // Now and then a value of another type than the definition's: it reads as unset.
        let kind = if tape.chance(10) {
            tape.below(6)
        } else {
            usize::MAX
        };
        let value = match (name, kind) {
            ("nickname", usize::MAX) | (_, 0) => AttributeValue::String(text(tape, &STRINGS)),
            ("vip_level", usize::MAX) | (_, 1) => AttributeValue::Integer(tape.pick(&INTS)),
            ("score", usize::MAX) | (_, 2) => AttributeValue::Double(tape.pick(&DOUBLES)),
            ("member", usize::MAX) | (_, 3) => AttributeValue::Bool(tape.chance(50)),
            ("last_login", usize::MAX) | (_, 4) => AttributeValue::Timestamp(time_at(tape, now)),
            _ => AttributeValue::Date(tape.pick(&birth_dates(ctx.today))),
        };
        attributes.insert(name.to_owned(), value);
    }
    let option_time = |tape: &mut Tape<'_>| (!tape.chance(30)).then(|| time_at(tape, now));
    let facts_activities = activities
        .iter()
        .enumerate()
        .map(|(j, raw)| {
            let mut t = Tape::new(raw);
            let purchase = t.chance(60);
            let amount = (purchase && !t.chance(10)).then(|| Money {
                amount_minor: t.pick(&AMOUNTS),
                currency: t.pick(&CURRENCIES).to_owned(),
            });
            // The refunds the store matched to a purchase: none, part, all, more than all.
            let refunded_minor = match &amount {
                Some(m) if t.chance(40) => {
                    let whole = m.amount_minor.max(0);
                    t.pick(&[1, whole / 2, whole, whole + 1, 100])
                }
                _ => 0,
            };
            Activity {
                activity_id: format!("{id}-a{j}"),
                kind: if purchase {
                    ActivityKind::Purchase
                } else {
                    ActivityKind::Interaction(t.pick(&INTERACTION_KINDS).to_owned())
                },
                occur_time: time_at(&mut t, now),
                amount,
                categories: if purchase {
                    t.subset(&CATEGORIES[..3])
                } else {
                    Vec::new()
                },
                channel: if t.chance(20) {
                    String::new()
                } else {
                    t.pick(&CHANNELS).to_owned()
                },
                refunded_minor,
            }
        })
        .collect();
    let mut programs = BTreeSet::new();
    let facts_loyalty = loyalty
        .iter()
        .filter_map(|raw| {
            let mut t = Tape::new(raw);
            let program = t.pick(&["p1", "p2"]).to_owned();
            programs.insert(program.clone()).then(|| LoyaltyMembership {
                loyalty_program_id: program,
                tier: t.pick(&["", "silver", "gold"]).to_owned(),
                points: t.pick(&INTS),
                qualifying_points: t.pick(&INTS),
                enroll_time: (!t.chance(30)).then(|| time_at(&mut t, now)),
            })
        })
        .collect();
    Facts {
        customer_id: id,
        customer_create_time: option_time(tape),
        country: text(tape, &["CN", "SG", "US"]),
        region: text(tape, &["Shanghai", "Sh", "Beijing", "海"]),
        city: text(
            tape,
            &["Shanghai", "Beijing", "Singapore", "上海", "a%b", "a\\b"],
        ),
        birth_date: (!tape.chance(20)).then(|| tape.pick(&birth_dates(ctx.today))),
        gender: enum_value(tape, &["female", "male", "non_binary"]),
        income_band: enum_value(tape, &["low", "middle", "high"]),
        occupation: text(tape, &["engineer", "teacher"]),
        education: enum_value(tape, &["bachelor", "master"]),
        interests: tape.subset(&LIST_ITEMS[..4]),
        lifestyle_tags: tape.subset(&LIST_ITEMS[2..6]),
        tags: tape.subset(&LIST_ITEMS),
        attributes,
        consents: Consents {
            sms: tape.chance(50),
            email: tape.chance(50),
            app_push: tape.chance(50),
            wechat: tape.chance(50),
        },
        activities: facts_activities,
        loyalty: facts_loyalty,
        feedback: FeedbackFacts {
            last_nps_score: (!tape.chance(30)).then(|| tape.below(11) as i32),
            last_nps_time: option_time(tape),
            last_csat_score: (!tape.chance(30)).then(|| tape.below(6) as i32),
            last_csat_time: None,
            open_ticket_count: tape.below(4) as i32,
        },
        rfm: RfmFacts {
            recency_days: (!tape.chance(30)).then(|| tape.pick(&INTS) as i32),
            frequency: tape.pick(&INTS),
            monetary_minor: tape.pick(&INTS),
            recency_score: tape.below(6) as i32,
            frequency_score: tape.below(6) as i32,
            monetary_score: tape.below(6) as i32,
            group: enum_value(tape, &["champions", "at_risk", "lost"]),
            score_time: None,
        },
        lifecycle: LifecycleFacts {
            stage: enum_value(tape, &["prospect", "active", "at_risk", "dormant"]),
            stage_start_time: time_at(tape, now),
            previous_stage: String::new(),
            churn_risk: tape.chance(50),
            churn_risk_score: tape.pick(&DOUBLES),
        },
        prediction: (!tape.chance(30)).then(|| PredictionFacts {
            probability_alive: tape.pick(&DOUBLES),
            expected_purchases_90d: tape.pick(&DOUBLES),
            expected_value_minor: tape.pick(&INTS),
            clv_minor: tape.pick(&INTS),
            churn_risk: tape.chance(50),
        }),
        segments: segment_ids()
            .into_iter()
            .filter(|_| tape.chance(40))
            .collect(),
        events: events
            .iter()
            .enumerate()
            .map(|(j, raw)| custom_event(&format!("c{index}"), j, raw, now))
            .collect(),
        computed: computed_traits()
            .into_iter()
            .filter_map(|t| {
                if tape.chance(35) {
                    return None;
                }
                let value = match t.aggregate.value_type() {
                    ValueType::Integer => ComputedValue::Integer(tape.pick(&INTS)),
                    ValueType::Double => ComputedValue::Double(tape.pick(&DOUBLES)),
                    ValueType::Timestamp => ComputedValue::Time(time_at(tape, now)),
                    _ => ComputedValue::Text(tape.pick(&STRINGS).to_owned()),
                };
                Some((t.name, value))
            })
            .collect(),
    }
}

/// A random value for `def` under `operator`.
fn value(
    tape: &mut Tape<'_>,
    def: &FieldDef,
    operator: Operator,
    now: DateTime<Utc>,
    currency: &str,
) -> pb::Value {
    let today = now.date_naive();
    let kind = if matches!(operator, Operator::WithinLast | Operator::NotWithinLast) {
        V::DaysValue(tape.pick(&DAYS))
    } else if operator == Operator::MatchesPattern {
        V::StringValue(tape.pick(&PATTERNS).to_owned())
    } else {
        match def.value_type {
            ValueType::String => V::StringValue(tape.pick(&STRINGS).to_owned()),
            ValueType::Enum => V::StringValue(tape.pick(&def.allowed_values)),
            ValueType::StringList => V::StringValue(
                tape.pick(
                    &[
                        LIST_ITEMS.as_slice(),
                        CATEGORIES.as_slice(),
                        CHANNELS.as_slice(),
                    ]
                    .concat(),
                )
                .to_owned(),
            ),
            // Counts are small: values near them make every comparison matter.
            ValueType::Integer if def.windowed => V::IntegerValue(tape.pick(&[0, 1, 2, 3])),
            ValueType::Integer => V::IntegerValue(tape.pick(&INTS)),
            ValueType::Double if tape.chance(30) => V::IntegerValue(tape.pick(&[0, 1])),
            ValueType::Double => V::DoubleValue(tape.pick(&DOUBLES)),
            ValueType::Bool => V::BoolValue(tape.chance(50)),
            ValueType::Timestamp => V::TimestampValue(ts_proto(time_at(tape, now))),
            ValueType::Date => {
                let d = tape.pick(&birth_dates(today));
                V::DateValue(common_pb::Date {
                    year: d.year(),
                    month: d.month() as i32,
                    day: d.day() as i32,
                })
            }
            ValueType::Money => V::MoneyValue(common_pb::Money {
                amount_minor: tape.pick(&AMOUNTS),
                currency: currency.to_owned(),
            }),
        }
    };
    pb::Value { kind: Some(kind) }
}

/// Orders two BETWEEN bounds of one kind.
fn ordered(mut low: pb::Value, mut high: pb::Value) -> (pb::Value, pb::Value) {
    let key = |v: &pb::Value| -> (i128, f64) {
        match &v.kind {
            Some(V::IntegerValue(i)) => (i128::from(*i), 0.0),
            Some(V::DoubleValue(d)) => (0, *d),
            Some(V::TimestampValue(t)) => (
                i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
                0.0,
            ),
            Some(V::DateValue(d)) => (i128::from(d.year * 10_000 + d.month * 100 + d.day), 0.0),
            Some(V::MoneyValue(m)) => (i128::from(m.amount_minor), 0.0),
            _ => (0, 0.0),
        }
    };
    let (a, b) = (key(&low), key(&high));
    if a.0 > b.0 || (a.0 == b.0 && a.1 > b.1) {
        std::mem::swap(&mut low, &mut high);
    }
    (low, high)
}

fn aggregate_to_proto(aggregate: Aggregate) -> pb::EventAggregate {
    match aggregate {
        Aggregate::Count => pb::EventAggregate::Count,
        Aggregate::Sum => pb::EventAggregate::Sum,
        Aggregate::Min => pb::EventAggregate::Min,
        Aggregate::Max => pb::EventAggregate::Max,
        Aggregate::Average => pb::EventAggregate::Average,
        Aggregate::FirstTime => pb::EventAggregate::FirstTime,
        Aggregate::LastTime => pb::EventAggregate::LastTime,
        Aggregate::MostFrequent => pb::EventAggregate::MostFrequent,
    }
}

/// A random operand of `value_type` for event conditions and filters.
fn event_operand(
    tape: &mut Tape<'_>,
    value_type: ValueType,
    operator: Operator,
    now: DateTime<Utc>,
) -> V {
    if matches!(operator, Operator::WithinLast | Operator::NotWithinLast) {
        return V::DaysValue(tape.pick(&DAYS));
    }
    match value_type {
        // The currency is the comparison's: see `event_operands`.
        ValueType::Money => V::MoneyValue(common_pb::Money {
            amount_minor: tape.pick(&AMOUNTS),
            currency: String::new(),
        }),
        ValueType::Integer => V::IntegerValue(tape.pick(&[0, 1, 2, 3])),
        ValueType::Double if tape.chance(20) => V::IntegerValue(tape.pick(&[0, 1])),
        ValueType::Double => V::DoubleValue(tape.pick(&NUMBERS)),
        ValueType::Bool => V::BoolValue(tape.chance(50)),
        ValueType::Timestamp => V::TimestampValue(ts_proto(time_at(tape, now))),
        _ => V::StringValue(tape.pick(&["a", "ab", "b", "B", "home", "cart"]).to_owned()),
    }
}

/// Operands for `operator` over `value_type`, as many as it takes.
fn event_operands(
    tape: &mut Tape<'_>,
    value_type: ValueType,
    operator: Operator,
    now: DateTime<Utc>,
) -> Vec<pb::Value> {
    // Every money operand of one comparison in one currency.
    let currency = tape.pick(&CURRENCIES);
    let one = |tape: &mut Tape<'_>| pb::Value {
        kind: Some(match event_operand(tape, value_type, operator, now) {
            V::MoneyValue(money) => V::MoneyValue(common_pb::Money {
                currency: currency.to_owned(),
                ..money
            }),
            other => other,
        }),
    };
    match operator {
        Operator::IsSet | Operator::IsNotSet => Vec::new(),
        Operator::In | Operator::NotIn => (0..1 + tape.below(3)).map(|_| one(tape)).collect(),
        Operator::Between => {
            let low = one(tape);
            let mut high = one(tape);
            if low.kind.as_ref().map(std::mem::discriminant)
                != high.kind.as_ref().map(std::mem::discriminant)
            {
                high = low.clone();
            }
            let (low, high) = ordered(low, high);
            vec![low, high]
        }
        _ => vec![one(tape)],
    }
}

/// A random event condition over the test event types.
fn event_condition(tape: &mut Tape<'_>, now: DateTime<Utc>) -> pb::Condition {
    let types = event_types();
    let aggregate = tape.pick(&[
        Aggregate::Count,
        Aggregate::Count,
        Aggregate::Sum,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Average,
        Aggregate::FirstTime,
        Aggregate::LastTime,
        Aggregate::MostFrequent,
        Aggregate::MostFrequent,
        Aggregate::MostFrequent,
    ]);
    let mut def = &types[tape.below(types.len())];
    let of_type = |def: &EventTypeDef, wanted: PropertyType| -> Vec<String> {
        def.properties
            .iter()
            .filter(|(_, t)| **t == wanted)
            .map(|(name, _)| name.clone())
            .collect()
    };
    // A number aggregate of a money property now and then (compared in the operands'
    // currency, of the events in it).
    let money = aggregate.property_type() == Some(PropertyType::Number) && tape.chance(35);
    let property = match aggregate.property_type() {
        None => String::new(),
        Some(_) if money => {
            def = &types[0];
            "total".to_owned()
        }
        Some(wanted) => {
            if of_type(def, wanted).is_empty() {
                def = &types[0];
            }
            tape.pick(&of_type(def, wanted))
        }
    };
    let window = tape.chance(50).then(|| pb::ActivityWindow {
        span: Some(if tape.chance(70) {
            pb::activity_window::Span::LastDays(tape.pick(&DAYS))
        } else {
            let a = time_at(tape, now);
            let mut b = time_at(tape, now);
            if a == b {
                b += Duration::microseconds(1);
            }
            let (start, end) = if a < b { (a, b) } else { (b, a) };
            pb::activity_window::Span::TimeRange(common_pb::TimeRange {
                start_time: Some(ts_proto(start)),
                end_time: Some(ts_proto(end)),
            })
        }),
    });
    let filterable: Vec<(String, PropertyType)> = def
        .properties
        .iter()
        .map(|(n, t)| (n.clone(), *t))
        .collect();
    let filters = (0..tape.pick(&[0, 0, 1, 1, 2]))
        .map(|_| {
            let (property, property_type) = tape.pick(&filterable);
            let value_type = property_type.value_type();
            // Money compares in the operands' currency: no IS_SET / IS_NOT_SET.
            let operator = tape.pick(&operators_for(value_type, value_type == ValueType::Money));
            pb::EventPropertyFilter {
                property,
                operator: operator_to_proto(operator) as i32,
                values: event_operands(tape, value_type, operator, now),
            }
        })
        .collect();
    let (value_type, always_set) = if money {
        (ValueType::Money, true)
    } else {
        (aggregate.value_type(), aggregate.always_set())
    };
    let operator = tape.pick(&operators_for(value_type, always_set));
    pb::Condition {
        kind: Some(Kind::Event(pb::EventCondition {
            event_type: def.name.clone(),
            aggregate: aggregate_to_proto(aggregate) as i32,
            property,
            window,
            r#where: filters,
            operator: operator_to_proto(operator) as i32,
            values: event_operands(tape, value_type, operator, now),
        })),
    }
}

/// A random step of a sequence: an event type with 0–2 property filters.
fn event_step(tape: &mut Tape<'_>, now: DateTime<Utc>) -> pb::EventStep {
    let types = event_types();
    let def = &types[tape.below(types.len())];
    let filterable: Vec<(String, PropertyType)> = def
        .properties
        .iter()
        .map(|(n, t)| (n.clone(), *t))
        .collect();
    let r#where = (0..tape.pick(&[0, 0, 0, 1, 1, 2]))
        .map(|_| {
            let (property, property_type) = tape.pick(&filterable);
            let value_type = property_type.value_type();
            // Money compares in the operands' currency: no IS_SET / IS_NOT_SET.
            let operator = tape.pick(&operators_for(value_type, value_type == ValueType::Money));
            pb::EventPropertyFilter {
                property,
                operator: operator_to_proto(operator) as i32,
                values: event_operands(tape, value_type, operator, now),
            }
        })
        .collect();
    pb::EventStep {
        event_type: def.name.clone(),
        r#where,
    }
}

/// A random sequence condition over the test event types: spans that meet the events' day
/// boundaries, C half the time, a window on A now and then.
fn sequence_condition(tape: &mut Tape<'_>, now: DateTime<Utc>) -> pb::Condition {
    let first = event_step(tape, now);
    let then = event_step(tape, now);
    let within_days = tape.pick(&[1, 1, 7, 30, 365, 1095]);
    let not_between = tape.chance(50).then(|| event_step(tape, now));
    let window = tape.chance(30).then(|| pb::ActivityWindow {
        span: Some(pb::activity_window::Span::LastDays(tape.pick(&DAYS))),
    });
    pb::Condition {
        kind: Some(Kind::Sequence(pb::SequenceCondition {
            first: Some(first),
            then: Some(then),
            within_days,
            not_between,
            window,
        })),
    }
}

fn predicate(tape: &mut Tape<'_>, catalog: &Catalog, now: DateTime<Utc>) -> pb::Condition {
    // Event conditions: aggregates of custom events (a fifth of the leaves).
    if tape.chance(20) {
        return event_condition(tape, now);
    }
    // Sequence conditions: "A then B within N days, not C between" (a tenth of the rest).
    if tape.chance(10) {
        return sequence_condition(tape, now);
    }
    // Activity aggregates carry the most logic (windows, filters, currencies): test them more;
    // and string fields, whose text operators (prefix, suffix, LIKE patterns over multi-byte
    // characters and escapes) are few among all fields' operators.
    let fields: Vec<&FieldDef> = match tape.below(100) {
        0..40 => catalog.fields().filter(|f| f.windowed).collect(),
        40..55 => catalog
            .fields()
            .filter(|f| f.value_type == ValueType::String)
            .collect(),
        // Computed traits: the stored value, or 0 / unset without one.
        55..62 => catalog
            .fields()
            .filter(|f| f.name.starts_with("computed."))
            .collect(),
        _ => catalog.fields().collect(),
    };
    let def = fields[tape.below(fields.len())];
    let operator = tape.pick(&def.operators);
    let currency = tape.pick(&CURRENCIES);
    let values = match operator {
        Operator::IsSet | Operator::IsNotSet => Vec::new(),
        Operator::In | Operator::NotIn | Operator::ContainsAny | Operator::ContainsAll => {
            let n = 1 + tape.below(3);
            (0..n)
                .map(|_| value(tape, def, operator, now, currency))
                .collect()
        }
        Operator::Between => {
            let low = value(tape, def, operator, now, currency);
            let mut high = value(tape, def, operator, now, currency);
            // Both bounds of one kind: DOUBLE fields may mix integer and double values.
            if low.kind.as_ref().map(std::mem::discriminant)
                != high.kind.as_ref().map(std::mem::discriminant)
            {
                high = low.clone();
            }
            let (low, high) = ordered(low, high);
            vec![low, high]
        }
        _ => vec![value(tape, def, operator, now, currency)],
    };
    let window = (def.windowed && tape.chance(60)).then(|| pb::ActivityWindow {
        span: Some(if tape.chance(70) {
            pb::activity_window::Span::LastDays(tape.pick(&DAYS))
        } else {
            let a = time_at(tape, now);
            let mut b = time_at(tape, now);
            if a == b {
                b += Duration::microseconds(1);
            }
            let (start, end) = if a < b { (a, b) } else { (b, a) };
            pb::activity_window::Span::TimeRange(common_pb::TimeRange {
                start_time: Some(ts_proto(start)),
                end_time: Some(ts_proto(end)),
            })
        }),
    });
    let mut filter = pb::PredicateFilter::default();
    for dimension in &def.filter_dimensions {
        if !tape.chance(40) {
            continue;
        }
        match dimension {
            FilterDimension::Category => filter.categories = nonempty(tape, &CATEGORIES),
            FilterDimension::Channel => filter.channels = nonempty(tape, &CHANNELS),
            FilterDimension::InteractionKind => {
                filter.interaction_kinds = nonempty(tape, &INTERACTION_KINDS)
            }
            FilterDimension::LoyaltyProgram => {
                filter.loyalty_program_id = tape.pick(&["p1", "p2", "p3"]).to_owned()
            }
        }
    }
    pb::Condition {
        kind: Some(Kind::Predicate(pb::Predicate {
            field: def.name.clone(),
            operator: operator_to_proto(operator) as i32,
            values,
            window,
            filter: (filter != pb::PredicateFilter::default()).then_some(filter),
        })),
    }
}

fn nonempty(tape: &mut Tape<'_>, items: &[&str]) -> Vec<String> {
    let mut out = tape.subset(items);
    if out.is_empty() {
        out.push(tape.pick(items).to_owned());
    }
    out
}

/// The shape of a generated rule; leaves are filled from their tape.
#[derive(Debug, Clone)]
enum Shape {
    Predicate(Vec<u32>),
    Segment(usize),
    All(Vec<Shape>),
    Any(Vec<Shape>),
    Not(Box<Shape>),
}

fn shape() -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        9 => proptest::collection::vec(any::<u32>(), 16).prop_map(Shape::Predicate),
        1 => (0..3_usize).prop_map(Shape::Segment),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..3).prop_map(Shape::All),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Shape::Any),
            inner.prop_map(|s| Shape::Not(Box::new(s))),
        ]
    })
}

fn condition(shape: &Shape, catalog: &Catalog, now: DateTime<Utc>) -> pb::Condition {
    let group = |children: &[Shape]| pb::ConditionGroup {
        conditions: children
            .iter()
            .map(|c| condition(c, catalog, now))
            .collect(),
    };
    let kind = match shape {
        Shape::Predicate(tape) => return predicate(&mut Tape::new(tape), catalog, now),
        Shape::Segment(i) => Kind::Segment(pb::SegmentReference {
            segment_id: segment_ids()[*i].to_string(),
        }),
        Shape::All(children) => Kind::All(group(children)),
        Shape::Any(children) => Kind::Any(group(children)),
        Shape::Not(child) => Kind::Not(Box::new(pb::NotCondition {
            condition: Some(Box::new(condition(child, catalog, now))),
        })),
    };
    pb::Condition { kind: Some(kind) }
}

#[derive(Debug, Clone)]
struct RawCustomer {
    tape: Vec<u32>,
    activities: Vec<[u32; 12]>,
    loyalty: Vec<[u32; 5]>,
    events: Vec<[u32; 10]>,
}

fn raw_customer() -> impl Strategy<Value = RawCustomer> {
    (
        proptest::collection::vec(any::<u32>(), 64),
        proptest::collection::vec(any::<[u32; 12]>(), 0..6),
        proptest::collection::vec(any::<[u32; 5]>(), 0..3),
        proptest::collection::vec(any::<[u32; 10]>(), 0..7),
    )
        .prop_map(|(tape, activities, loyalty, events)| RawCustomer {
            tape,
            activities,
            loyalty,
            events,
        })
}

// ---------------------------------------------------------------------------------------------
// The property.

#[test]
fn both_evaluators_pick_the_same_members_for_random_rules_and_facts() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (_db, pool) = runtime.block_on(database())?;
    let catalog = catalog();
    let config = ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    // Cases where the rule picked some but not all customers: the test is not vacuous.
    let discriminating = Cell::new(0_u32);
    let total = Cell::new(0_u32);
    // Rules holding an event condition: the generator reaches them.
    let with_events = Cell::new(0_u32);
    let strategy = (
        0..4_usize,
        proptest::collection::vec(raw_customer(), 1..6),
        proptest::collection::vec(shape(), 1..4),
    );
    let result = runner.run(&strategy, |(now_index, raw, shapes)| {
        let ctx = ctx_at(nows()[now_index]);
        let customers: Vec<Facts> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| {
                customer(
                    i,
                    &mut Tape::new(&r.tape),
                    &r.activities,
                    &r.loyalty,
                    &r.events,
                    &ctx,
                )
            })
            .collect();
        for shape in &shapes {
            let condition = condition(shape, &catalog, ctx.now);
            let (in_rust, in_sql) = runtime
                .block_on(both(&pool, &catalog, &condition, &customers, &ctx))
                .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
            total.set(total.get() + 1);
            if format!("{condition:?}").contains("EventCondition") {
                with_events.set(with_events.get() + 1);
            }
            if !in_rust.is_empty() && in_rust.len() < customers.len() {
                discriminating.set(discriminating.get() + 1);
            }
            prop_assert_eq!(
                &in_rust,
                &in_sql,
                "rule {:?}\nat {:?}\ncustomers {:#?}",
                condition,
                ctx,
                customers
            );
        }
        Ok(())
    });
    if let Err(error) = result {
        anyhow::bail!("{error}");
    }
    let (discriminating, total) = (discriminating.get(), total.get());
    eprintln!(
        "{discriminating} of {total} rules split the customers; {} held an event condition",
        with_events.get()
    );
    assert!(
        with_events.get() * 10 >= total,
        "only {} of {total} rules held an event condition",
        with_events.get()
    );
    assert!(
        discriminating * 5 >= total,
        "only {discriminating} of {total} rules split the customers; the generator is too weak"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tricky semantics, by hand, through both evaluators.

fn pred(field: &str, operator: pb::Operator, values: Vec<V>) -> pb::Condition {
    pb::Condition {
        kind: Some(Kind::Predicate(pb::Predicate {
            field: field.to_owned(),
            operator: operator as i32,
            values: values
                .into_iter()
                .map(|k| pb::Value { kind: Some(k) })
                .collect(),
            window: None,
            filter: None,
        })),
    }
}

fn windowed(mut condition: pb::Condition, window: pb::activity_window::Span) -> pb::Condition {
    if let Some(Kind::Predicate(p)) = &mut condition.kind {
        p.window = Some(pb::ActivityWindow { span: Some(window) });
    }
    condition
}

fn not(condition: pb::Condition) -> pb::Condition {
    pb::Condition {
        kind: Some(Kind::Not(Box::new(pb::NotCondition {
            condition: Some(Box::new(condition)),
        }))),
    }
}

fn money(amount_minor: i64, currency: &str) -> V {
    V::MoneyValue(common_pb::Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

fn purchase(id: &str, at: DateTime<Utc>, amount_minor: i64, currency: &str) -> Activity {
    Activity {
        activity_id: id.to_owned(),
        kind: ActivityKind::Purchase,
        occur_time: at,
        amount: Some(Money {
            amount_minor,
            currency: currency.to_owned(),
        }),
        categories: vec!["skincare".to_owned()],
        channel: "store".to_owned(),
        refunded_minor: 0,
    }
}

fn person(id: &str) -> Facts {
    Facts {
        customer_id: id.to_owned(),
        ..Facts::default()
    }
}

/// Asserts both evaluators pick exactly `expected` for each `(rule, expected)`.
async fn check(
    customers: &[Facts],
    ctx: &EvalContext,
    cases: Vec<(pb::Condition, &[&str])>,
) -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let catalog = catalog();
    for (condition, expected) in cases {
        let (in_rust, in_sql) = both(&pool, &catalog, &condition, customers, ctx).await?;
        let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(in_rust, expected, "Rust evaluator on {condition:?}");
        assert_eq!(in_sql, expected, "SQL evaluator on {condition:?}");
    }
    Ok(())
}

#[tokio::test]
async fn unset_fields_fail_every_operator_but_is_not_set_and_not_negates_that() -> anyhow::Result<()>
{
    use pb::Operator as O;
    let ctx = ctx_at(nows()[0]);
    let mut cn = person("cn");
    cn.country = "CN".to_owned();
    cn.tags = vec!["vip".to_owned()];
    let unset = person("unset");
    let us = Facts {
        country: "US".to_owned(),
        ..person("us")
    };
    let customers = [cn, unset, us];
    let s = |v: &str| V::StringValue(v.to_owned());
    check(
        &customers,
        &ctx,
        vec![
            (pred("geo.country", O::Equals, vec![s("CN")]), &["cn"]),
            (pred("geo.country", O::NotEquals, vec![s("CN")]), &["us"]),
            (
                not(pred("geo.country", O::Equals, vec![s("CN")])),
                &["unset", "us"],
            ),
            (
                pred("geo.country", O::NotIn, vec![s("CN"), s("SG")]),
                &["us"],
            ),
            (pred("geo.country", O::IsNotSet, vec![]), &["unset"]),
            (pred("geo.country", O::IsSet, vec![]), &["cn", "us"]),
            (pred("tags", O::NotContains, vec![s("new")]), &["cn"]),
            (
                not(pred("tags", O::Contains, vec![s("new")])),
                &["cn", "unset", "us"],
            ),
            (
                pred(
                    "feedback.last_nps_score",
                    O::LessThan,
                    vec![V::IntegerValue(100)],
                ),
                &[],
            ),
            // Counts are never unset.
            (
                pred("purchase.count", O::Equals, vec![V::IntegerValue(0)]),
                &["cn", "unset", "us"],
            ),
        ],
    )
    .await
}

#[tokio::test]
async fn not_within_last_differs_from_not_of_within_last_for_who_never_bought() -> anyhow::Result<()>
{
    use pb::Operator as O;
    let ctx = ctx_at(nows()[0]);
    let mut recent = person("recent");
    recent.activities = vec![purchase("r1", ctx.now - Duration::days(10), 100, "CNY")];
    let mut old = person("old");
    old.activities = vec![purchase("o1", ctx.now - Duration::days(200), 100, "CNY")];
    let never = person("never");
    let within = || pred("purchase.last_time", O::WithinLast, vec![V::DaysValue(90)]);
    check(
        &[recent, old, never],
        &ctx,
        vec![
            (within(), &["recent"]),
            (not(within()), &["never", "old"]),
            (
                pred(
                    "purchase.last_time",
                    O::NotWithinLast,
                    vec![V::DaysValue(90)],
                ),
                &["old"],
            ),
        ],
    )
    .await
}

#[tokio::test]
async fn windows_include_t_and_exclude_exactly_n_days_before() -> anyhow::Result<()> {
    use pb::Operator as O;
    let ctx = ctx_at(nows()[0]);
    let edge = ctx.now - Duration::hours(24 * 7);
    let one = Duration::microseconds(1);
    let at = |id: &str, t: DateTime<Utc>| Facts {
        activities: vec![purchase(&format!("{id}-p"), t, 100, "CNY")],
        ..person(id)
    };
    let customers = [
        at("edge", edge),
        at("inside", edge + one),
        at("now", ctx.now),
        at("future", ctx.now + one),
    ];
    let count = || {
        pred(
            "purchase.count",
            O::GreaterOrEqual,
            vec![V::IntegerValue(1)],
        )
    };
    let range = pb::activity_window::Span::TimeRange(common_pb::TimeRange {
        start_time: Some(ts_proto(edge)),
        end_time: Some(ts_proto(ctx.now)),
    });
    check(
        &customers,
        &ctx,
        vec![
            (
                windowed(count(), pb::activity_window::Span::LastDays(7)),
                &["inside", "now"],
            ),
            // A fixed range is [start, end).
            (windowed(count(), range), &["edge", "inside"]),
            (
                pred("purchase.last_time", O::WithinLast, vec![V::DaysValue(7)]),
                &["inside", "now"],
            ),
            (
                pred(
                    "purchase.last_time",
                    O::NotWithinLast,
                    vec![V::DaysValue(7)],
                ),
                &["edge"],
            ),
        ],
    )
    .await
}

#[tokio::test]
async fn money_compares_the_sum_in_the_values_currency_only() -> anyhow::Result<()> {
    use pb::Operator as O;
    let ctx = ctx_at(nows()[0]);
    let t = ctx.now - Duration::days(1);
    let mixed = Facts {
        activities: vec![
            purchase("m1", t, 100, "CNY"),
            purchase("m2", t, 60, "CNY"),
            purchase("m3", t, 500, "USD"),
        ],
        ..person("mixed")
    };
    check(
        &[mixed, person("none")],
        &ctx,
        vec![
            (
                pred("purchase.amount", O::Equals, vec![money(160, "CNY")]),
                &["mixed"],
            ),
            (
                pred("purchase.amount", O::GreaterThan, vec![money(200, "CNY")]),
                &[],
            ),
            (
                pred("purchase.amount", O::GreaterThan, vec![money(200, "USD")]),
                &["mixed"],
            ),
            // Another currency sums to 0, which is a value, not "unset".
            (
                pred("purchase.amount", O::Equals, vec![money(0, "EUR")]),
                &["mixed", "none"],
            ),
            (
                pred(
                    "purchase.amount",
                    O::Between,
                    vec![money(100, "CNY"), money(160, "CNY")],
                ),
                &["mixed"],
            ),
        ],
    )
    .await
}

#[tokio::test]
async fn purchases_are_net_of_refunds_and_one_refunded_in_full_is_no_purchase() -> anyhow::Result<()>
{
    use pb::Operator as O;
    let ctx = ctx_at(nows()[0]);
    let refunded = |id: &str, days: i64, amount: i64, refunded_minor: i64| Activity {
        refunded_minor,
        ..purchase(id, ctx.now - Duration::days(days), amount, "CNY")
    };
    // 100 − 30 and 50 refunded in full.
    let partial = Facts {
        activities: vec![refunded("p1", 40, 100, 30), refunded("p2", 10, 50, 50)],
        ..person("partial")
    };
    // Refunds beyond the amount take back the amount only.
    let over = Facts {
        activities: vec![refunded("o1", 40, 100, 250), refunded("o2", 20, 60, 0)],
        ..person("over")
    };
    let last_within = |days| {
        pred(
            "purchase.last_time",
            O::WithinLast,
            vec![V::DaysValue(days)],
        )
    };
    check(
        &[partial, over],
        &ctx,
        vec![
            (
                pred("purchase.amount", O::Equals, vec![money(70, "CNY")]),
                &["partial"],
            ),
            (
                pred("purchase.amount", O::Equals, vec![money(60, "CNY")]),
                &["over"],
            ),
            (
                pred("purchase.count", O::Equals, vec![V::IntegerValue(1)]),
                &["over", "partial"],
            ),
            // partial's last purchase is p1 (p2 was refunded in full), over's is o2.
            (last_within(30), &["over"]),
            (
                pred(
                    "purchase.first_time",
                    O::Before,
                    vec![V::TimestampValue(ts_proto(ctx.now - Duration::days(30)))],
                ),
                &["partial"],
            ),
        ],
    )
    .await
}

#[tokio::test]
async fn ends_with_and_patterns_match_characters_and_escapes_in_both_evaluators()
-> anyhow::Result<()> {
    use pb::Operator as O;
    let ctx = ctx_at(nows()[0]);
    let city = |id: &str, city: &str| Facts {
        city: city.to_owned(),
        ..person(id)
    };
    let customers = [
        city("shanghai", "Shanghai"),
        city("cjk", "上海"),
        city("percent", "100%"),
        city("underscore", "a_b"),
        city("backslash", "a\\b"),
        city("long", &"a".repeat(10_000)),
        person("unset"),
    ];
    let s = |v: &str| V::StringValue(v.to_owned());
    let like = |pattern: &str| pred("geo.city", O::MatchesPattern, vec![s(pattern)]);
    check(
        &customers,
        &ctx,
        vec![
            (pred("geo.city", O::EndsWith, vec![s("hai")]), &["shanghai"]),
            (pred("geo.city", O::EndsWith, vec![s("海")]), &["cjk"]),
            // No LIKE in ENDS_WITH: "%" is a character.
            (pred("geo.city", O::EndsWith, vec![s("%")]), &["percent"]),
            (
                pred("geo.city", O::EndsWith, vec![s("_b")]),
                &["underscore"],
            ),
            (
                not(pred("geo.city", O::EndsWith, vec![s("b")])),
                &["cjk", "long", "percent", "shanghai", "unset"],
            ),
            // `_` is one character, however many bytes.
            (like("__"), &["cjk"]),
            (like("上_"), &["cjk"]),
            (like("S%"), &["shanghai"]),
            (like("s%"), &[]),
            (like("%\\%"), &["percent"]),
            (like("a\\_b"), &["underscore"]),
            (like("a_b"), &["backslash", "underscore"]),
            (like("%\\\\%"), &["backslash"]),
            (
                like("%"),
                &[
                    "backslash",
                    "cjk",
                    "long",
                    "percent",
                    "shanghai",
                    "underscore",
                ],
            ),
            // Many runs against a long text: no backtracking blow-up in either evaluator.
            (like("%a%a%a%a%a%a%a%b"), &[]),
            (like("%a%a%a%a%a%a%a%a"), &["long"]),
        ],
    )
    .await
}

#[tokio::test]
async fn leap_day_birthdays_count_on_28_february_in_common_years() -> anyhow::Result<()> {
    use pb::Operator as O;
    let leap = Facts {
        birth_date: Some(date(2000, 2, 29)),
        ..person("leap")
    };
    let march = Facts {
        birth_date: Some(date(2000, 3, 1)),
        ..person("march")
    };
    let customers = [leap, march, person("unknown")];
    let age = |n| pred("demographics.age", O::Equals, vec![V::IntegerValue(n)]);
    let until = |n| {
        pred(
            "demographics.days_until_birthday",
            O::Equals,
            vec![V::IntegerValue(n)],
        )
    };
    // 28 February 2027: the leap-day child turns 27 today; March's is still 26.
    check(
        &customers,
        &ctx_at(ts(2027, 2, 28, 10, 0, 0, 0)),
        vec![
            (age(27), &["leap"]),
            (age(26), &["march"]),
            (until(0), &["leap"]),
            (until(1), &["march"]),
            (pred("demographics.age", O::IsNotSet, vec![]), &["unknown"]),
        ],
    )
    .await?;
    // 29 February 2028: the real birthday.
    check(
        &customers,
        &ctx_at(ts(2028, 2, 29, 10, 0, 0, 0)),
        vec![
            (until(0), &["leap"]),
            (age(28), &["leap"]),
            (age(27), &["march"]),
        ],
    )
    .await
}

#[test]
fn explain_lists_every_node_with_actual_values() -> anyhow::Result<()> {
    use pb::Operator as O;
    let ctx = ctx_at(nows()[0]);
    let facts = Facts {
        country: "CN".to_owned(),
        activities: vec![purchase("p", ctx.now - Duration::days(1), 100, "CNY")],
        ..person("c")
    };
    let condition = pb::Condition {
        kind: Some(Kind::Any(pb::ConditionGroup {
            conditions: vec![
                pred(
                    "geo.country",
                    O::Equals,
                    vec![V::StringValue("SG".to_owned())],
                ),
                not(pred("purchase.amount", O::LessThan, vec![money(50, "CNY")])),
            ],
        })),
    };
    let rule = parse_rule(&condition, "rule", &catalog())
        .map_err(|v| anyhow::anyhow!("{:?}", v.into_result()))?;
    let explanation = custops_segmentation::wire::rules::explain(&rule, &facts, &ctx);
    assert!(explanation.result);
    assert_eq!(explanation.path, "rule");
    assert_eq!(explanation.children.len(), 2);
    let country = &explanation.children[0];
    assert_eq!(country.path, "rule.any.conditions[0]");
    assert!(!country.result);
    assert_eq!(
        country.actual_values,
        vec![pb::Value {
            kind: Some(V::StringValue("CN".to_owned()))
        }]
    );
    let negated = &explanation.children[1];
    assert!(negated.result);
    assert_eq!(
        negated.children[0].path,
        "rule.any.conditions[1].not.condition"
    );
    assert_eq!(
        negated.children[0].actual_values,
        vec![pb::Value {
            kind: Some(money(100, "CNY"))
        }]
    );
    Ok(())
}

//! A scale fixture: a customer base of N customers with about M activities, generated
//! deterministically from a seed and written **directly into segmentation's tables** in the
//! shape the profiles feed handler (`feeds::profiles`) writes them, so tests and `custops bench`
//! can stand up a million customers in a minute or two instead of replaying their history
//! through profiles and the feed.
//!
//! What it writes, as the feed would:
//! - `attribute_definitions`: the custom attributes the customers carry, as
//!   AttributeDefinitionCreated writes them (`vip_level` double, `newsletter` bool,
//!   `preferred_store` string).
//! - `customer_facts`: one row per customer with the columns CustomerCreated's traits fill
//!   (create time, geography, demographics as enum slugs, occupation, interests, lifestyle tags,
//!   tags, typed attributes, the four consents). Derived values (RFM, lifecycle) are left at
//!   their defaults, as before any full run, and the feed positions at 0: the fixture is no
//!   event, so any later feed event about these customers applies.
//! - `customer_activities`: purchases (70 %, amount and currency, one or two categories, a sales
//!   channel) and interactions (30 %: the feed's interaction kind slugs, at most one category,
//!   web or app), as ActivityRecorded writes them.
//!
//! The shape: 60 % of customers in China (prices in CNY), the rest in four other countries,
//! paying in their local currency one purchase in four; 15 % of customers never active; the
//! others with a skewed number of activities (a Pareto tail: most have a few, a few have
//! hundreds) spread over their own lifetime of up to two years before the anchor, 40 % of them
//! lapsed for a while before it. Every time lies 2–22 hours off a whole number of days before
//! the anchor, so for two hours after the anchor no activity or creation time crosses the
//! boundary of a whole-day window (`last_days`, WITHIN_LAST, recency days): rules over the
//! fixture give the same answer throughout a benchmark.
//!
//! Everything is set-based SQL (`generate_series`, hashing for the random draws) in chunks of
//! customers, each statement inserting in key order; a million customers and five million
//! activities load in a minute or two. `tests/fixture.rs` checks a sample against the feed
//! path: the same customers and activities sent through `ProfilesFeed` as CustomerCreated,
//! AttributeDefinitionCreated and ActivityRecorded events write the same rows.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection};

/// Places customers live in, with the currency they pay in, weighted by repetition (China
/// six in ten).
pub const PLACES: &[(&str, &str, &str, &str)] = &[
    ("CN", "CN-GD", "Shenzhen", "CNY"),
    ("CN", "CN-GD", "Shenzhen", "CNY"),
    ("CN", "CN-SH", "Shanghai", "CNY"),
    ("CN", "CN-SH", "Shanghai", "CNY"),
    ("CN", "CN-BJ", "Beijing", "CNY"),
    ("CN", "CN-ZJ", "Hangzhou", "CNY"),
    ("DE", "DE-BE", "Berlin", "EUR"),
    ("US", "US-CA", "San Francisco", "USD"),
    ("JP", "JP-13", "Tokyo", "JPY"),
    ("GB", "GB-LND", "London", "GBP"),
];

/// The currency the business prices in (segmentation's default RFM currency).
pub const SHOP_CURRENCY: &str = "CNY";

/// Product categories of purchases (and of some interactions).
pub const CATEGORIES: &[&str] = &[
    "shoes",
    "apparel",
    "home/kitchen",
    "electronics",
    "beauty",
    "sports",
    "books",
    "toys",
];

/// Sales channels of purchases.
pub const CHANNELS: &[&str] = &["store", "web", "app", "wechat_mini_program"];

/// Interaction kinds, as the feed stores them (profiles' `InteractionKind` slugs).
pub const INTERACTION_KINDS: &[&str] = &[
    "visit",
    "browse",
    "support_contact",
    "campaign_response",
    "search",
    "add_to_cart",
    "message_open",
    "login",
];

/// Interests (psychographics).
pub const INTERESTS: &[&str] = &[
    "outdoor", "cooking", "tech", "fashion", "travel", "fitness", "books", "music",
];

/// Lifestyle tags.
pub const LIFESTYLE_TAGS: &[&str] = &[
    "health_conscious",
    "frequent_traveller",
    "new_parent",
    "student",
];

/// Occupations ("" for none given).
pub const OCCUPATIONS: &[&str] = &[
    "", "", "engineer", "teacher", "nurse", "designer", "student", "retired",
];

/// The custom attributes: name, catalog type slug, description.
pub const ATTRIBUTES: &[(&str, &str, &str)] = &[
    ("vip_level", "double", "VIP level 1-5 from the CRM"),
    ("newsletter", "bool", "Subscribed to the newsletter"),
    (
        "preferred_store",
        "string",
        "The store the customer named as preferred",
    ),
];

const GENDERS: &[&str] = &["female", "male", "non_binary", "prefer_not_to_say"];
const INCOME_BANDS: &[&str] = &[
    "low",
    "lower_middle",
    "middle",
    "upper_middle",
    "high",
    "prefer_not_to_say",
];
const EDUCATION_LEVELS: &[&str] = &[
    "primary",
    "secondary",
    "vocational",
    "associate",
    "bachelor",
    "master",
    "doctorate",
    "prefer_not_to_say",
];

/// Share of customers with no activity at all.
const INACTIVE_SHARE: f64 = 0.15;

/// Mean of the activity weight `min(50, 0.5 / sqrt(u))` over a uniform `u`.
const WEIGHT_MEAN: f64 = 0.995;

/// Customers per statement.
const CHUNK: u64 = 20_000;

/// Activity keys are `customer number × this + activity number`.
const PER_CUSTOMER_KEYS: u64 = 65_536;

/// A customer base to load.
#[derive(Debug, Clone, PartialEq)]
pub struct Fixture {
    /// Customers (customer numbers `0..customers`).
    pub customers: u64,
    /// Activities wanted; the count loaded is close to it (it is drawn per customer).
    pub activities: u64,
    /// The seed: the same seed, sizes and anchor give the same rows.
    pub seed: u32,
    /// "Now" of the data: every time lies before it (up to two years).
    pub anchor: DateTime<Utc>,
    /// Ids for the first customers (say, customers that exist in profiles); the others get
    /// generated ids ([`Fixture::customer_id`]).
    pub known_ids: Vec<String>,
}

/// What [`Fixture::load`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub customers: u64,
    pub activities: u64,
    pub purchases: u64,
}

impl Fixture {
    /// `customers` customers with about `activities` activities before `anchor`.
    pub fn new(customers: u64, activities: u64, seed: u32, anchor: DateTime<Utc>) -> Self {
        Self {
            customers,
            activities,
            seed,
            anchor,
            known_ids: Vec::new(),
        }
    }

    /// The id of customer number `i`: a known id, or a UUID made of the seed and `i`.
    pub fn customer_id(&self, i: u64) -> String {
        match usize::try_from(i).ok().and_then(|i| self.known_ids.get(i)) {
            Some(id) => id.clone(),
            None => format!("{:08x}-0000-4000-8000-{i:012x}", self.seed),
        }
    }

    /// Records the custom attribute definitions (as AttributeDefinitionCreated does); done by
    /// [`Fixture::load`] too. Rules on the attributes validate once these exist.
    pub async fn define_attributes(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        for (name, value_type, description) in ATTRIBUTES {
            sqlx::query(
                "INSERT INTO attribute_definitions (name, value_type, description) \
                 VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(value_type)
            .bind(description)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Writes the customers and their activities through `conn`, whose `search_path` must be
    /// the segmentation schema, one statement per chunk of customers (autocommitted unless
    /// the caller opened a transaction). Fails on customers or activities already there.
    pub async fn load(&self, conn: &mut PgConnection) -> Result<Loaded, sqlx::Error> {
        self.define_attributes(&mut *conn).await?;
        let facts_sql = facts_sql();
        let activities_sql = activities_sql();
        let active = self.customers as f64 * (1.0 - INACTIVE_SHARE) * WEIGHT_MEAN;
        let lambda = if active > 0.0 {
            self.activities as f64 / active
        } else {
            0.0
        };
        let mut loaded = Loaded {
            customers: 0,
            activities: 0,
            purchases: 0,
        };
        let mut lo = 0;
        while lo < self.customers {
            let hi = (lo + CHUNK).min(self.customers);
            let (customers, _) = self.run(&mut *conn, &facts_sql, lo, hi, lambda).await?;
            let (activities, purchases) = self
                .run(&mut *conn, &activities_sql, lo, hi, lambda)
                .await?;
            loaded.customers += customers;
            loaded.activities += activities;
            loaded.purchases += purchases;
            lo = hi;
        }
        Ok(loaded)
    }

    /// Runs one of the statements for the customer numbers `[lo, hi)`; it answers two counts.
    async fn run(
        &self,
        conn: &mut PgConnection,
        sql: &str,
        lo: u64,
        hi: u64,
        lambda: f64,
    ) -> Result<(u64, u64), sqlx::Error> {
        let column =
            |n: usize| -> Vec<&str> { PLACES.iter().map(|p| [p.0, p.1, p.2, p.3][n]).collect() };
        // The text is built from this module's fixed fragments; every value is bound.
        let (a, b): (i64, i64) = sqlx::query_as(AssertSqlSafe(sql.to_owned()))
            .bind(i64::from(self.seed))
            .bind(i64::try_from(lo).unwrap_or(i64::MAX))
            .bind(i64::try_from(hi).unwrap_or(i64::MAX))
            .bind(self.anchor)
            .bind(&self.known_ids)
            .bind(lambda)
            .bind(column(0))
            .bind(column(1))
            .bind(column(2))
            .bind(column(3))
            .bind(GENDERS)
            .bind(INCOME_BANDS)
            .bind(EDUCATION_LEVELS)
            .bind(OCCUPATIONS)
            .bind(INTERESTS)
            .bind(LIFESTYLE_TAGS)
            .bind(CATEGORIES)
            .bind(CHANNELS)
            .bind(INTERACTION_KINDS)
            .fetch_one(conn)
            .await?;
        Ok((u64::try_from(a).unwrap_or(0), u64::try_from(b).unwrap_or(0)))
    }
}

// Placeholders of every statement: `$1` seed, `$2`/`$3` the customer numbers `[lo, hi)`, `$4`
// anchor, `$5` known ids, `$6` activities per active customer, `$7`–`$10` places (country,
// region, city, currency), `$11`–`$19` the value lists (genders, income bands, education
// levels, occupations, interests, lifestyle tags, categories, channels, interaction kinds).

/// A uniform draw in [0, 1) for `key` (a bigint SQL expression), independent per `draw`
/// number and seed.
fn u(key: &str, draw: u32) -> String {
    format!(
        "((hashint8extended({key}, $1::bigint * 64 + {draw}) & 281474976710655)::float8 \
         / 281474976710656.0)"
    )
}

/// An element of the 1-based SQL array `array` picked by the draw `draw`.
fn pick(array: &str, draw: &str) -> String {
    format!("({array})[1 + floor({draw} * cardinality({array}))::int]")
}

/// The columns every customer's rows derive from its number `i`: its id, place and
/// lifetime (days since first seen, days since last active) and activity count.
fn customer_columns() -> String {
    let id = "CASE WHEN i < cardinality($5::text[]) THEN ($5::text[])[i + 1] \
              ELSE format('%s-0000-4000-8000-%s', lpad(to_hex($1::bigint), 8, '0'), \
                          lpad(to_hex(i), 12, '0')) END";
    let place = format!("1 + floor({} * cardinality($7::text[]))::int", u("i", 0));
    let lifetime = format!("1 + floor({} * 730)::int", u("i", 1));
    let lapsed = format!(
        "CASE WHEN {} < 0.6 THEN 0.0 ELSE {} END",
        u("i", 2),
        u("i", 3)
    );
    // A Pareto tail with mean ~1 (WEIGHT_MEAN), scaled to the activities wanted, rounded
    // up or down at random so the total is right on average.
    let count = format!(
        "CASE WHEN {inactive} < {INACTIVE_SHARE} THEN 0 \
         ELSE floor($6::float8 * least(50.0, 0.5 / sqrt(greatest({w}, 1e-12))) + {r})::int END",
        inactive = u("i", 4),
        w = u("i", 5),
        r = u("i", 6),
    );
    format!(
        "SELECT i, {id} AS id, {place} AS place, {lifetime} AS lifetime, \
           {lapsed} AS lapsed, least({count}, {max}) AS n \
         FROM generate_series($2::bigint, $3::bigint - 1) AS i",
        max = PER_CUSTOMER_KEYS - 1
    )
}

/// A time `days` whole days (an SQL integer) and 2–22 hours (by `draw`) before the anchor.
fn before_anchor(days: &str, draw: &str) -> String {
    format!(
        "($4::timestamptz - ({days}) * interval '24 hours' \
         - (2 + 20 * {draw}) * interval '1 hour')"
    )
}

fn facts_sql() -> String {
    let interests = format!(
        "CASE floor({n} * 3)::int WHEN 0 THEN '{{}}'::text[] \
           WHEN 1 THEN ARRAY[($15::text[])[1 + a]] \
           ELSE ARRAY[($15::text[])[1 + a], ($15::text[])[1 + (a + 1 + b) % cardinality($15::text[])]] END",
        n = u("i", 20),
    );
    let attributes = format!(
        "jsonb_strip_nulls(jsonb_build_object( \
           'vip_level', CASE WHEN {v} < 0.3 THEN jsonb_build_object('double', (1 + floor({vl} * 5))::float8) END, \
           'newsletter', CASE WHEN {n} < 0.5 THEN jsonb_build_object('bool', {nl} < 0.6) END, \
           'preferred_store', CASE WHEN {s} < 0.2 THEN jsonb_build_object('string', ($9::text[])[place] || ' flagship') END))",
        v = u("i", 21),
        vl = u("i", 22),
        n = u("i", 23),
        nl = u("i", 24),
        s = u("i", 25),
    );
    let blank_or = |share: f64, draw_blank: u32, array: &str, draw: u32| {
        format!(
            "CASE WHEN {} < {share} THEN '' ELSE {} END",
            u("i", draw_blank),
            pick(array, &u("i", draw))
        )
    };
    format!(
        "WITH c AS ({customers}), \
         d AS (SELECT c.*, floor({a} * cardinality($15::text[]))::int AS a, \
                 floor({b} * (cardinality($15::text[]) - 1))::int AS b FROM c), \
         ins AS (INSERT INTO customer_facts (customer_id, customer_create_time, country, region, city, \
           birth_date, gender, income_band, occupation, education, interests, lifestyle_tags, \
           tags, attributes, consent_sms, consent_email, consent_app_push, consent_wechat, \
           lifecycle_stage_start_time, update_time) \
         SELECT id, {create_time}, ($7::text[])[place], ($8::text[])[place], ($9::text[])[place], \
           CASE WHEN {no_birth} < 0.1 THEN NULL \
                ELSE date '1950-01-01' + floor({birth} * 20075)::int END, \
           {gender}, {income}, {occupation}, {education}, {interests}, \
           CASE WHEN {has_tag} < 0.4 THEN ARRAY[{tag}] ELSE '{{}}'::text[] END, \
           CASE WHEN {vip} < 0.1 THEN ARRAY['vip'] ELSE '{{}}'::text[] END, \
           {attributes}, {c1} < 0.48, {c2} < 0.48, {c3} < 0.48, {c4} < 0.48, $4, $4 \
         FROM d ORDER BY i \
         RETURNING 1) \
         SELECT count(*), 0::bigint FROM ins",
        customers = customer_columns(),
        a = u("i", 26),
        b = u("i", 27),
        create_time = before_anchor("lifetime", &u("i", 7)),
        no_birth = u("i", 8),
        birth = u("i", 9),
        gender = blank_or(0.1, 10, "$11::text[]", 11),
        income = blank_or(0.2, 12, "$12::text[]", 13),
        occupation = pick("$14::text[]", &u("i", 14)),
        education = blank_or(0.2, 15, "$13::text[]", 16),
        has_tag = u("i", 17),
        tag = pick("$16::text[]", &u("i", 18)),
        vip = u("i", 19),
        c1 = u("i", 28),
        c2 = u("i", 29),
        c3 = u("i", 30),
        c4 = u("i", 31),
    )
}

fn activities_sql() -> String {
    let key = format!("(c.i * {PER_CUSTOMER_KEYS} + k)");
    let purchase = format!("{} < 0.7", u(&key, 40));
    let days = format!(
        "floor(c.lapsed * (c.lifetime - 1)) + floor({} * (c.lifetime - floor(c.lapsed * (c.lifetime - 1))))",
        u(&key, 41)
    );
    let category = pick("$17::text[]", &u(&key, 43));
    let second = format!(
        "($17::text[])[1 + (array_position($17::text[], {category}) + floor({} * (cardinality($17::text[]) - 1))::int) \
           % cardinality($17::text[])]",
        u(&key, 44)
    );
    format!(
        "WITH c AS ({customers}), \
         a AS ( \
           SELECT c.id, c.place, {key} AS key, {purchase} AS purchase, {occur} AS occur_time, \
                  {category} AS category, {second} AS second, {draw_two} AS draw_two, \
                  {draw_amount} AS draw_amount, {draw_currency} AS draw_currency, \
                  {kind} AS interaction_kind, {channel} AS channel, {web} AS web_channel, \
                  {draw_category} AS draw_category \
           FROM c CROSS JOIN LATERAL generate_series(0, c.n - 1) AS k), \
         ins AS ( \
           INSERT INTO customer_activities (activity_id, customer_id, kind, occur_time, \
             amount_minor, currency, categories, channel) \
           SELECT format('%s-0001-4000-8000-%s', lpad(to_hex($1::bigint), 8, '0'), \
                         lpad(to_hex(key), 12, '0')), \
             id, \
             CASE WHEN purchase THEN 'purchase' ELSE interaction_kind END, \
             occur_time, \
             CASE WHEN purchase THEN 500 + floor(60000 * draw_amount * draw_amount)::bigint END, \
             CASE WHEN NOT purchase THEN NULL \
                  WHEN ($10::text[])[place] <> '{SHOP_CURRENCY}' AND draw_currency < 0.25 \
                    THEN ($10::text[])[place] \
                  ELSE '{SHOP_CURRENCY}' END, \
             CASE WHEN purchase AND draw_two < 0.2 THEN ARRAY[category, second] \
                  WHEN purchase OR draw_category < 0.5 THEN ARRAY[category] \
                  ELSE '{{}}'::text[] END, \
             CASE WHEN purchase THEN channel ELSE web_channel END \
           FROM a ORDER BY key \
           RETURNING kind) \
         SELECT count(*), count(*) FILTER (WHERE kind = 'purchase') FROM ins",
        customers = customer_columns(),
        occur = before_anchor(&days, &u(&key, 42)),
        draw_two = u(&key, 45),
        draw_amount = u(&key, 46),
        draw_currency = u(&key, 47),
        kind = pick("$19::text[]", &u(&key, 48)),
        channel = pick("$18::text[]", &u(&key, 49)),
        web = pick("ARRAY['web', 'app']", &u(&key, 50)),
        draw_category = u(&key, 51),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_uuids_and_known_ids_come_first() {
        let mut fixture = Fixture::new(10, 50, 42, Utc::now());
        assert_eq!(
            fixture.customer_id(255),
            "0000002a-0000-4000-8000-0000000000ff"
        );
        assert!(uuid::Uuid::parse_str(&fixture.customer_id(7)).is_ok());
        fixture.known_ids = vec!["a".to_owned()];
        assert_eq!(fixture.customer_id(0), "a");
        assert_eq!(
            fixture.customer_id(1),
            "0000002a-0000-4000-8000-000000000001"
        );
    }
}

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
//! - `event_types`: the twenty custom event types of [`EVENT_TYPES`], as EventTypeDefined
//!   writes them (at feed position 0, so profiles' own EventTypeDefined of the same type
//!   replaces the row with the same content).
//! - `customer_events`: custom events of those types (about [`Fixture::custom_events`], one per
//!   customer by default), as an ActivityRecorded carrying a custom event writes them: the
//!   properties as `{"<name>": {"<type>": value}}`, in the text the feed writes (strings from
//!   each property's list, numbers in quarters so that sums in any order are exact, written as
//!   serde_json writes the f64, booleans, times as chrono's RFC 3339 in UTC), optional
//!   properties left out now and then, channel app or web.
//!
//! The shape: 60 % of customers in China (prices in CNY), the rest in four other countries,
//! paying in their local currency one purchase in four; 15 % of customers never active; the
//! others with a skewed number of activities (a Pareto tail: most have a few, a few have
//! hundreds) spread over their own lifetime of up to two years before the anchor, 40 % of them
//! lapsed for a while before it. Custom events are skewed twice: 60 % of the active customers
//! have any (a Pareto tail again), and the event types are drawn with a falling share (the
//! first about a fifth of the events, the last about one in forty). Every time lies 2–22 hours off a whole number of days before
//! the anchor, so for two hours after the anchor no activity or creation time crosses the
//! boundary of a whole-day window (`last_days`, WITHIN_LAST, recency days): rules over the
//! fixture give the same answer throughout a benchmark.
//!
//! Everything is set-based SQL (`generate_series`, hashing for the random draws) in chunks of
//! customers, each statement inserting in key order; a million customers and five million
//! activities load in a minute or two. `tests/fixture.rs` checks a sample against the feed
//! path: the same customers and activities sent through `ProfilesFeed` as CustomerCreated,
//! AttributeDefinitionCreated and ActivityRecorded events write the same rows.
//!
//! The custom events are there for the behavioural rules (event aggregates and sequences) of
//! `custops bench`: its `segmentation.recompute_events` recomputes one over them, and every
//! bench rule segment over events is checked against hand-written SQL over these rows.

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

/// How the values of one property of a fixture event type are drawn, and so its type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PropertyValues {
    /// A STRING property, one of these (drawn uniformly).
    Strings(&'static [&'static str]),
    /// A NUMBER property, a whole number of quarters from 0 to below `max` (exact in binary, so
    /// sums in any order agree).
    Quarters { max: u32 },
    /// A BOOL property, true one time in two.
    Bool,
    /// A TIME property: the event's occur time plus 0 to `days` − 1 whole days.
    DaysAfter { days: u32 },
}

impl PropertyValues {
    /// The catalog type slug (`event_types.properties[].type`, the key of a stored value).
    pub fn type_slug(&self) -> &'static str {
        match self {
            Self::Strings(_) => "string",
            Self::Quarters { .. } => "number",
            Self::Bool => "bool",
            Self::DaysAfter { .. } => "time",
        }
    }
}

/// A property of a fixture event type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixtureProperty {
    /// Name (the key in the event's properties).
    pub name: &'static str,
    /// Its values, and so its type.
    pub values: PropertyValues,
    /// Every event carries it; an optional one is left out of one event in five.
    pub required: bool,
}

/// A custom event type of the fixture, declared the same way in profiles by `custops bench`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixtureEventType {
    /// Name (`event_types.name`, `customer_events.event_type`).
    pub name: &'static str,
    /// What it means.
    pub description: &'static str,
    /// Its properties, none personal.
    pub properties: &'static [FixtureProperty],
}

const fn property(name: &'static str, values: PropertyValues, required: bool) -> FixtureProperty {
    FixtureProperty {
        name,
        values,
        required,
    }
}

/// The twenty custom event types, most frequent first (see the module docs for the mix).
pub const EVENT_TYPES: &[FixtureEventType] = &[
    FixtureEventType {
        name: "app_opened",
        description: "The app came to the foreground",
        properties: &[
            property(
                "screen",
                PropertyValues::Strings(&["home", "search", "cart", "profile"]),
                true,
            ),
            property("from_push", PropertyValues::Bool, false),
        ],
    },
    FixtureEventType {
        name: "page_viewed",
        description: "A page of the web shop was viewed",
        properties: &[
            property(
                "path",
                PropertyValues::Strings(&["/", "/sale", "/new", "/brands", "/stores"]),
                true,
            ),
            property("seconds", PropertyValues::Quarters { max: 1200 }, false),
        ],
    },
    FixtureEventType {
        name: "search_performed",
        description: "A product search (the term itself is not recorded)",
        properties: &[
            property("results", PropertyValues::Quarters { max: 400 }, true),
            property("filtered", PropertyValues::Bool, false),
        ],
    },
    FixtureEventType {
        name: "coupon_redeemed",
        description: "A coupon was applied to an order",
        properties: &[
            property(
                "code",
                PropertyValues::Strings(&["WELCOME10", "SPRING20", "VIP30", "FREESHIP"]),
                true,
            ),
            property("value", PropertyValues::Quarters { max: 200 }, true),
            property("first_use", PropertyValues::Bool, true),
        ],
    },
    FixtureEventType {
        name: "wishlist_added",
        description: "A product was added to the wish list",
        properties: &[
            property("category", PropertyValues::Strings(CATEGORIES), true),
            property("price", PropertyValues::Quarters { max: 4000 }, false),
        ],
    },
    FixtureEventType {
        name: "cart_abandoned",
        description: "A cart was left without ordering for a day",
        properties: &[
            property("items", PropertyValues::Quarters { max: 40 }, true),
            property("value", PropertyValues::Quarters { max: 8000 }, true),
            property(
                "device",
                PropertyValues::Strings(&["ios", "android", "desktop"]),
                false,
            ),
        ],
    },
    FixtureEventType {
        name: "notification_clicked",
        description: "A push notification or message was clicked",
        properties: &[
            property(
                "campaign",
                PropertyValues::Strings(&["spring_sale", "restock", "birthday", "win_back"]),
                true,
            ),
            property("sent_at", PropertyValues::DaysAfter { days: 1 }, false),
        ],
    },
    FixtureEventType {
        name: "review_written",
        description: "A product review was published",
        properties: &[
            property("stars", PropertyValues::Quarters { max: 20 }, true),
            property("with_photo", PropertyValues::Bool, false),
            property("category", PropertyValues::Strings(CATEGORIES), true),
        ],
    },
    FixtureEventType {
        name: "store_checked_in",
        description: "The customer checked in at a store",
        properties: &[
            property(
                "store",
                PropertyValues::Strings(&[
                    "Shanghai flagship",
                    "Shenzhen flagship",
                    "Beijing flagship",
                    "Berlin flagship",
                ]),
                true,
            ),
            property("minutes", PropertyValues::Quarters { max: 480 }, false),
        ],
    },
    FixtureEventType {
        name: "live_stream_watched",
        description: "A live shopping stream was watched",
        properties: &[
            property(
                "host",
                PropertyValues::Strings(&["anna", "li_wei", "mika"]),
                true,
            ),
            property("minutes", PropertyValues::Quarters { max: 360 }, true),
            property("bought", PropertyValues::Bool, false),
        ],
    },
    FixtureEventType {
        name: "referral_sent",
        description: "A referral link was shared",
        properties: &[
            property(
                "medium",
                PropertyValues::Strings(&["wechat", "email", "sms", "link"]),
                true,
            ),
            property("accepted", PropertyValues::Bool, false),
        ],
    },
    FixtureEventType {
        name: "points_redeemed",
        description: "Loyalty points were exchanged for a reward",
        properties: &[
            property(
                "reward",
                PropertyValues::Strings(&["voucher", "gift", "upgrade"]),
                true,
            ),
            property("points", PropertyValues::Quarters { max: 20000 }, true),
        ],
    },
    FixtureEventType {
        name: "survey_completed",
        description: "A satisfaction survey was completed",
        properties: &[
            property(
                "survey",
                PropertyValues::Strings(&["post_purchase", "delivery", "store_visit"]),
                true,
            ),
            property("nps", PropertyValues::Quarters { max: 44 }, false),
        ],
    },
    FixtureEventType {
        name: "trial_started",
        description: "A membership trial started",
        properties: &[
            property(
                "plan",
                PropertyValues::Strings(&["plus", "family", "premium"]),
                true,
            ),
            property("trial_end", PropertyValues::DaysAfter { days: 31 }, true),
        ],
    },
    FixtureEventType {
        name: "subscription_renewed",
        description: "A paid membership was renewed",
        properties: &[
            property(
                "plan",
                PropertyValues::Strings(&["plus", "family", "premium"]),
                true,
            ),
            property("months", PropertyValues::Quarters { max: 52 }, true),
            property("automatic", PropertyValues::Bool, false),
        ],
    },
    FixtureEventType {
        name: "support_ticket_opened",
        description: "A support ticket was opened",
        properties: &[
            property(
                "topic",
                PropertyValues::Strings(&["delivery", "refund", "size", "payment"]),
                true,
            ),
            property("urgent", PropertyValues::Bool, false),
        ],
    },
    FixtureEventType {
        name: "delivery_rated",
        description: "A delivery was rated",
        properties: &[
            property("rating", PropertyValues::Quarters { max: 20 }, true),
            property("late", PropertyValues::Bool, false),
            property("delivered_at", PropertyValues::DaysAfter { days: 3 }, false),
        ],
    },
    FixtureEventType {
        name: "appointment_booked",
        description: "A fitting, styling or repair appointment was booked",
        properties: &[
            property(
                "service",
                PropertyValues::Strings(&["fitting", "styling", "repair"]),
                true,
            ),
            property(
                "appointment_time",
                PropertyValues::DaysAfter { days: 14 },
                true,
            ),
            property("deposit", PropertyValues::Quarters { max: 2000 }, false),
        ],
    },
    FixtureEventType {
        name: "app_crashed",
        description: "The app crashed",
        properties: &[
            property(
                "version",
                PropertyValues::Strings(&["5.1.0", "5.2.0", "5.2.1"]),
                true,
            ),
            property("fatal", PropertyValues::Bool, false),
        ],
    },
    FixtureEventType {
        name: "gift_card_bought",
        description: "A gift card was bought",
        properties: &[
            property("amount", PropertyValues::Quarters { max: 4000 }, true),
            property(
                "design",
                PropertyValues::Strings(&["birthday", "festival", "plain"]),
                false,
            ),
        ],
    },
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

/// Share of the active customers with custom events.
const EVENTFUL_SHARE: f64 = 0.6;

/// Share of events carrying an optional property.
const OPTIONAL_PRESENT: f64 = 0.8;

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
    /// Custom events wanted (of [`EVENT_TYPES`]); drawn per customer like the activities.
    /// [`Fixture::new`] asks for one per customer.
    pub custom_events: u64,
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
    /// Rows of `customer_events`.
    pub custom_events: u64,
}

impl Fixture {
    /// `customers` customers with about `activities` activities and about one custom event
    /// each before `anchor`.
    pub fn new(customers: u64, activities: u64, seed: u32, anchor: DateTime<Utc>) -> Self {
        Self {
            customers,
            activities,
            custom_events: customers,
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

    /// Records the custom event types of [`EVENT_TYPES`] (as EventTypeDefined does, at feed
    /// position 0); done by [`Fixture::load`] too. Rules on the events validate once these
    /// exist.
    pub async fn define_event_types(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        for event_type in EVENT_TYPES {
            let properties: Vec<serde_json::Value> = event_type
                .properties
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "name": p.name,
                        "type": p.values.type_slug(),
                        "contains_pii": false,
                        "required": p.required,
                        "description": "",
                    })
                })
                .collect();
            sqlx::query(
                "INSERT INTO event_types (name, description, properties, profiles_sequence) \
                 VALUES ($1, $2, $3::jsonb, 0) ON CONFLICT (name) DO NOTHING",
            )
            .bind(event_type.name)
            .bind(event_type.description)
            .bind(serde_json::Value::Array(properties).to_string())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Writes the customers, their activities and their custom events through `conn`, whose `search_path` must be
    /// the segmentation schema, one statement per chunk of customers (autocommitted unless
    /// the caller opened a transaction). Fails on customers or activities already there.
    pub async fn load(&self, conn: &mut PgConnection) -> Result<Loaded, sqlx::Error> {
        self.define_attributes(&mut *conn).await?;
        self.define_event_types(&mut *conn).await?;
        let facts_sql = facts_sql();
        let activities_sql = activities_sql();
        let events_sql = events_sql();
        let active = self.customers as f64 * (1.0 - INACTIVE_SHARE) * WEIGHT_MEAN;
        let lambda = if active > 0.0 {
            self.activities as f64 / active
        } else {
            0.0
        };
        let eventful =
            self.customers as f64 * (1.0 - INACTIVE_SHARE) * EVENTFUL_SHARE * WEIGHT_MEAN;
        let events_lambda = if eventful > 0.0 {
            self.custom_events as f64 / eventful
        } else {
            0.0
        };
        let mut loaded = Loaded {
            customers: 0,
            activities: 0,
            purchases: 0,
            custom_events: 0,
        };
        let mut lo = 0;
        while lo < self.customers {
            let hi = (lo + CHUNK).min(self.customers);
            let (customers, _) = self.run(&mut *conn, &facts_sql, lo, hi, lambda).await?;
            let (activities, purchases) = self
                .run(&mut *conn, &activities_sql, lo, hi, lambda)
                .await?;
            let (custom_events, _) = self
                .run(&mut *conn, &events_sql, lo, hi, events_lambda)
                .await?;
            loaded.customers += customers;
            loaded.activities += activities;
            loaded.custom_events += custom_events;
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
// anchor, `$5` known ids, `$6` activities per active customer (custom events per eventful
// customer in the custom events' statement), `$7`–`$10` places (country,
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

/// The text of the timestamptz `t` as the feed stores a time property (chrono's `to_rfc3339`
/// in UTC: no fraction, or milliseconds, or microseconds, whichever is exact; `+00:00`).
fn rfc3339(t: &str) -> String {
    let micros = format!("(extract(microseconds FROM {t})::bigint % 1000000)");
    format!(
        "(to_char({t} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || \
          CASE WHEN {micros} = 0 THEN '' \
               WHEN {micros} % 1000 = 0 THEN to_char({t} AT TIME ZONE 'UTC', '.MS') \
               ELSE to_char({t} AT TIME ZONE 'UTC', '.US') END || '+00:00')"
    )
}

/// A stored property value (`{"<type>": value}`) of `p` for the event of `key` (an SQL
/// column) occurring at `occur_time`, drawn with the draws `draw` and `draw + 1`; NULL when an
/// optional property is left out.
fn property_value(p: &FixtureProperty, key: &str, draw: u32) -> String {
    let value = u(key, draw);
    let stored = match p.values {
        PropertyValues::Strings(values) => format!(
            "jsonb_build_object('string', (ARRAY[{}])[1 + floor({value} * {})::int])",
            values
                .iter()
                .map(|v| format!("'{v}'"))
                .collect::<Vec<_>>()
                .join(", "),
            values.len()
        ),
        // As serde_json writes the f64 (one decimal for whole and half numbers, two for the
        // other quarters), so the stored text is the feed's.
        PropertyValues::Quarters { max } => format!(
            "jsonb_build_object('number', CASE WHEN floor({value} * {quarters})::bigint % 2 = 0 \
               THEN round(floor({value} * {quarters})::bigint / 4.0, 1) \
               ELSE round(floor({value} * {quarters})::bigint / 4.0, 2) END)",
            quarters = u64::from(max) * 4
        ),
        PropertyValues::Bool => format!("jsonb_build_object('bool', {value} < 0.5)"),
        PropertyValues::DaysAfter { days } => format!(
            "jsonb_build_object('time', {})",
            rfc3339(&format!(
                "(occur_time + floor({value} * {days}) * interval '24 hours')"
            ))
        ),
    };
    if p.required {
        stored
    } else {
        format!(
            "CASE WHEN {} < {OPTIONAL_PRESENT} THEN {stored} END",
            u(key, draw + 1)
        )
    }
}

fn events_sql() -> String {
    let key = format!("(c.i * {PER_CUSTOMER_KEYS} + k)");
    // The customer's events: none for the inactive (the same draw as their activities) and
    // for 40 % of the others, a Pareto tail for the rest.
    let count = format!(
        "CASE WHEN {inactive} < {INACTIVE_SHARE} OR {eventful} >= {EVENTFUL_SHARE} THEN 0 \
         ELSE least(floor($6::float8 * least(50.0, 0.5 / sqrt(greatest({w}, 1e-12))) + {r})::int, {max}) END",
        inactive = u("c.i", 4),
        eventful = u("c.i", 32),
        w = u("c.i", 33),
        r = u("c.i", 34),
        max = PER_CUSTOMER_KEYS - 1
    );
    let days = format!(
        "floor(c.lapsed * (c.lifetime - 1)) + floor({} * (c.lifetime - floor(c.lapsed * (c.lifetime - 1))))",
        u(&key, 61)
    );
    let names = EVENT_TYPES
        .iter()
        .map(|t| format!("'{}'", t.name))
        .collect::<Vec<_>>()
        .join(", ");
    let properties = EVENT_TYPES
        .iter()
        .enumerate()
        .map(|(n, t)| {
            let fields = t
                .properties
                .iter()
                .zip((70..).step_by(2))
                .map(|(p, draw)| format!("'{}', {}", p.name, property_value(p, "key", draw)))
                .collect::<Vec<_>>()
                .join(", ");
            format!("WHEN {} THEN jsonb_build_object({fields})", n + 1)
        })
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "WITH c AS ({customers}), \
         e AS ( \
           SELECT c.id, {key} AS key, 1 + floor({t} * {t} * {types})::int AS t, \
                  {occur} AS occur_time, {channel} AS channel \
           FROM c CROSS JOIN LATERAL generate_series(0, {count} - 1) AS k), \
         ins AS ( \
           INSERT INTO customer_events (activity_id, customer_id, event_type, occur_time, \
             properties, channel) \
           SELECT format('%s-0002-4000-8000-%s', lpad(to_hex($1::bigint), 8, '0'), \
                         lpad(to_hex(key), 12, '0')), \
             id, (ARRAY[{names}])[t], occur_time, \
             jsonb_strip_nulls(CASE t {properties} END), channel \
           FROM e ORDER BY key \
           RETURNING 1) \
         SELECT count(*), 0::bigint FROM ins",
        customers = customer_columns(),
        t = u(&key, 60),
        types = EVENT_TYPES.len(),
        occur = before_anchor(&days, &u(&key, 62)),
        channel = pick("ARRAY['app', 'web']", &u(&key, 63)),
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

    #[test]
    fn twenty_event_types_of_every_property_type_fit_for_profiles_and_sql() {
        assert_eq!(EVENT_TYPES.len(), 20);
        let mut names: Vec<&str> = EVENT_TYPES.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 20, "names are unique");
        let slug = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let mut types = std::collections::BTreeSet::new();
        for event_type in EVENT_TYPES {
            assert!(slug(event_type.name), "{}", event_type.name);
            assert!(!event_type.properties.is_empty(), "{}", event_type.name);
            for p in event_type.properties {
                assert!(slug(p.name), "{}.{}", event_type.name, p.name);
                types.insert(p.values.type_slug());
                // Values are written into the statement's text.
                if let PropertyValues::Strings(values) = p.values {
                    assert!(values.iter().all(|v| !v.contains('\'') && !v.is_empty()));
                }
            }
        }
        assert_eq!(types.len(), 4, "{types:?}");
    }
}

//! The rule segments of the segmentation benchmarks and, for each, the SQL a database engineer
//! would write by hand for the same members: the baseline of `segmentation.recompute` and
//! `segmentation.recompute_all`, and the direct evaluation the benchmarks check memberships
//! against. Also the hand-written RFM and lifecycle full runs (what RecomputeAll does before
//! the segments).
//!
//! Ten kinds of rule, five variants each (the first is the freshness probe's segment): purchase
//! counts and spend in windows, category buyers, country with consent, demographics with
//! interests, RFM groups, lifecycle stages, lapsed buyers, browsers who do not buy, and tags and
//! custom attributes. Then four over the fixture's custom events ([`event_specs`]): a count in
//! a window with a property filter, a sum of a number property, the most frequent value of a
//! string property and a sequence with an event that must not come between, each written by
//! hand another way than the compiler writes it (the sequence as "the next B-or-C event after
//! an A is a B in time", the most frequent value with a window function). The hand-written SQL
//! reads `$1` as the evaluation time; its text holds `@F` / `@A`, a condition on the customer
//! of the facts (`f`) or activities (`a`) alias: TRUE over everyone, or `= ANY($2)` for the
//! customers a check looks at. Every literal in it is one of this file's constants or, for
//! the event rules, a name or value of `fixture::EVENT_TYPES`.

use custops_contracts::custops::common::v1::Money;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::domain::lifecycle::LifecycleConfig;
use custops_segmentation::domain::rfm::{RfmConfig, grid};
use custops_segmentation::fixture::SHOP_CURRENCY;
use custops_segmentation::store::facts::{COUNTS_AS_PURCHASE, NET_AMOUNT};

/// The category only the freshness probes buy.
pub const PROBE_CATEGORY: &str = "bench_probe";

/// Days the probe segment looks back.
const PROBE_WINDOW_DAYS: i32 = 7;

/// A rule segment and its hand-written members query.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// Display name.
    pub name: String,
    /// The rule as the API takes it.
    pub rule: pb::Condition,
    /// `SELECT customer_id …` with `@F` / `@A` where the scope goes.
    hand: String,
}

impl RuleSpec {
    /// The hand-written members query over every customer (`$1` = T).
    pub fn everyone_sql(&self) -> String {
        self.hand.replace("@F", "TRUE").replace("@A", "TRUE")
    }

    /// The hand-written members query over the customers `$2` (`$1` = T).
    pub fn scoped_sql(&self) -> String {
        self.hand
            .replace("@F", "f.customer_id = ANY($2::text[])")
            .replace("@A", "a.customer_id = ANY($2::text[])")
    }
}

/// The first `count` segments (at most 50): the probe segment first, then one of each kind,
/// then the further variants.
pub fn specs(count: usize) -> Vec<RuleSpec> {
    let mut all = vec![category_buyers(PROBE_CATEGORY, PROBE_WINDOW_DAYS)];
    for variant in 0..5 {
        all.push(frequent_buyers(variant));
        all.push(big_spenders(variant));
        if variant < 4 {
            let category = ["shoes", "apparel", "electronics", "beauty"][variant];
            all.push(category_buyers(category, 365));
        }
        all.push(country_with_email(variant));
        all.push(demographics(variant));
        all.push(rfm_groups(variant));
        all.push(lifecycle_stages(variant));
        all.push(lapsed(variant));
        all.push(browsers(variant));
        all.push(attributes(variant));
    }
    all.truncate(count);
    all
}

/// The position in [`specs`] of the segment `segmentation.recompute` measures: purchases in the
/// last 365 days ≥ 3, a third or so of the customers.
pub const RECOMPUTED: usize = 1;

fn predicate(field: &str, operator: pb::Operator, values: Vec<pb::Value>) -> pb::Predicate {
    pb::Predicate {
        field: field.to_owned(),
        operator: operator.into(),
        values,
        ..Default::default()
    }
}

fn condition(predicate: pb::Predicate) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::Predicate(predicate)),
    }
}

fn windowed(mut predicate: pb::Predicate, days: i32) -> pb::Predicate {
    predicate.window = Some(pb::ActivityWindow {
        span: Some(pb::activity_window::Span::LastDays(days)),
    });
    predicate
}

fn all(conditions: Vec<pb::Condition>) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::All(pb::ConditionGroup { conditions })),
    }
}

fn any(conditions: Vec<pb::Condition>) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::Any(pb::ConditionGroup { conditions })),
    }
}

fn not(condition: pb::Condition) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::Not(Box::new(pb::NotCondition {
            condition: Some(Box::new(condition)),
        }))),
    }
}

fn value(kind: pb::value::Kind) -> pb::Value {
    pb::Value { kind: Some(kind) }
}

fn integer(n: i64) -> pb::Value {
    value(pb::value::Kind::IntegerValue(n))
}

fn double(d: f64) -> pb::Value {
    value(pb::value::Kind::DoubleValue(d))
}

fn text(s: &str) -> pb::Value {
    value(pb::value::Kind::StringValue(s.to_owned()))
}

fn boolean(b: bool) -> pb::Value {
    value(pb::value::Kind::BoolValue(b))
}

fn texts(values: &[&str]) -> Vec<pb::Value> {
    values.iter().map(|v| text(v)).collect()
}

/// `'a', 'b'` of this file's constants.
fn quoted(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("'{v}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Activities of the last `days` whole days before `$1`, as the rule windows read them.
fn window(days: i32) -> String {
    window_of("a", days)
}

/// Rows aliased `alias` of the last `days` whole days before `$1`.
fn window_of(alias: &str, days: i32) -> String {
    format!(
        "{alias}.occur_time > $1 - interval '{} hours' AND {alias}.occur_time <= $1",
        days * 24
    )
}

/// Purchases in the last D days ≥ n.
fn frequent_buyers(variant: usize) -> RuleSpec {
    let (days, n) = [(365, 3), (30, 1), (90, 2), (180, 3), (730, 6)][variant];
    RuleSpec {
        name: format!("Bought {n}+ times in {days} days"),
        rule: condition(windowed(
            predicate(
                "purchase.count",
                pb::Operator::GreaterOrEqual,
                vec![integer(n)],
            ),
            days,
        )),
        hand: format!(
            "SELECT f.customer_id FROM customer_facts f \
             JOIN customer_activities a ON a.customer_id = f.customer_id \
             WHERE @F AND {COUNTS_AS_PURCHASE} AND {w} \
             GROUP BY f.customer_id HAVING count(*) >= {n}",
            w = window(days)
        ),
    }
}

/// Spend in the shop currency in the last D days ≥ X.
fn big_spenders(variant: usize) -> RuleSpec {
    let (days, amount) = [
        (90, 50_000),
        (180, 100_000),
        (365, 150_000),
        (365, 300_000),
        (730, 500_000),
    ][variant];
    let money = value(pb::value::Kind::MoneyValue(Money {
        amount_minor: amount,
        currency: SHOP_CURRENCY.to_owned(),
    }));
    RuleSpec {
        name: format!("Spent {amount} {SHOP_CURRENCY} minor units in {days} days"),
        rule: condition(windowed(
            predicate("purchase.amount", pb::Operator::GreaterOrEqual, vec![money]),
            days,
        )),
        hand: format!(
            "SELECT f.customer_id FROM customer_facts f \
             JOIN customer_activities a ON a.customer_id = f.customer_id \
             WHERE @F AND {COUNTS_AS_PURCHASE} AND a.currency = '{SHOP_CURRENCY}' AND {w} \
             GROUP BY f.customer_id HAVING sum({NET_AMOUNT}) >= {amount}",
            w = window(days)
        ),
    }
}

/// Bought in `category` in the last D days.
fn category_buyers(category: &str, days: i32) -> RuleSpec {
    let mut bought = windowed(
        predicate(
            "purchase.count",
            pb::Operator::GreaterOrEqual,
            vec![integer(1)],
        ),
        days,
    );
    bought.filter = Some(pb::PredicateFilter {
        categories: vec![category.to_owned()],
        ..Default::default()
    });
    RuleSpec {
        name: format!("Bought {category} in {days} days"),
        rule: condition(bought),
        hand: format!(
            "SELECT DISTINCT f.customer_id FROM customer_facts f \
             JOIN customer_activities a ON a.customer_id = f.customer_id \
             WHERE @F AND {COUNTS_AS_PURCHASE} AND a.categories && ARRAY['{category}'] AND {w}",
            w = window(days)
        ),
    }
}

/// Lives in a country and takes e-mail.
fn country_with_email(variant: usize) -> RuleSpec {
    let country = ["CN", "DE", "US", "JP", "GB"][variant];
    RuleSpec {
        name: format!("E-mail reachable in {country}"),
        rule: all(vec![
            condition(predicate(
                "geo.country",
                pb::Operator::Equals,
                vec![text(country)],
            )),
            condition(predicate(
                "consent.email",
                pb::Operator::Equals,
                vec![boolean(true)],
            )),
        ]),
        hand: format!(
            "SELECT f.customer_id FROM customer_facts f \
             WHERE @F AND f.country = '{country}' AND f.consent_email"
        ),
    }
}

/// Gender, income bands and interests.
fn demographics(variant: usize) -> RuleSpec {
    let (gender, incomes, interests): (&str, &[&str], &[&str]) = [
        (
            "female",
            &["middle", "upper_middle", "high"][..],
            &["fashion", "travel"][..],
        ),
        ("male", &["high"][..], &["tech"][..]),
        (
            "female",
            &["low", "lower_middle"][..],
            &["cooking", "books"][..],
        ),
        ("male", &["middle"][..], &["fitness", "outdoor"][..]),
        ("female", &["prefer_not_to_say", "high"][..], &["music"][..]),
    ][variant];
    RuleSpec {
        name: format!("{gender}, income {incomes:?}, into {interests:?}"),
        rule: all(vec![
            condition(predicate(
                "demographics.gender",
                pb::Operator::Equals,
                vec![text(gender)],
            )),
            condition(predicate(
                "demographics.income_band",
                pb::Operator::In,
                texts(incomes),
            )),
            condition(predicate(
                "psychographics.interests",
                pb::Operator::ContainsAny,
                texts(interests),
            )),
        ]),
        hand: format!(
            "SELECT f.customer_id FROM customer_facts f WHERE @F AND f.gender = '{gender}' \
             AND f.income_band IN ({incomes}) AND f.interests && ARRAY[{interests}]",
            incomes = quoted(incomes),
            interests = quoted(interests)
        ),
    }
}

/// In some RFM groups.
fn rfm_groups(variant: usize) -> RuleSpec {
    let groups: &[&str] = [
        &["champions", "loyal"][..],
        &["at_risk", "cannot_lose"][..],
        &["hibernating", "lost"][..],
        &["new_customers", "promising"][..],
        &["need_attention", "about_to_sleep", "potential_loyalist"][..],
    ][variant];
    RuleSpec {
        name: format!("RFM {groups:?}"),
        rule: condition(predicate("rfm.group", pb::Operator::In, texts(groups))),
        hand: format!(
            "SELECT f.customer_id FROM customer_facts f WHERE @F AND f.rfm_group IN ({})",
            quoted(groups)
        ),
    }
}

/// In a lifecycle stage (at risk: flagged too).
fn lifecycle_stages(variant: usize) -> RuleSpec {
    let (stages, flagged): (&[&str], bool) = [
        (&["new"][..], false),
        (&["active"][..], false),
        (&["at_risk"][..], true),
        (&["dormant"][..], false),
        (&["churned", "reactivated"][..], false),
    ][variant];
    let mut conditions = vec![condition(predicate(
        "lifecycle.stage",
        pb::Operator::In,
        texts(stages),
    ))];
    if flagged {
        conditions.push(condition(predicate(
            "lifecycle.churn_risk",
            pb::Operator::Equals,
            vec![boolean(true)],
        )));
    }
    RuleSpec {
        name: format!(
            "Lifecycle {stages:?}{}",
            if flagged { ", flagged" } else { "" }
        ),
        rule: all(conditions),
        hand: format!(
            "SELECT f.customer_id FROM customer_facts f \
             WHERE @F AND f.lifecycle_stage IN ({}){}",
            quoted(stages),
            if flagged { " AND f.churn_risk" } else { "" }
        ),
    }
}

/// Bought once, but not in the last D days.
fn lapsed(variant: usize) -> RuleSpec {
    let days = [30, 60, 90, 180, 365][variant];
    let bought = |window_days: Option<i32>| {
        let p = predicate(
            "purchase.count",
            pb::Operator::GreaterOrEqual,
            vec![integer(1)],
        );
        condition(match window_days {
            Some(d) => windowed(p, d),
            None => p,
        })
    };
    RuleSpec {
        name: format!("No purchase in {days} days"),
        rule: all(vec![bought(None), not(bought(Some(days)))]),
        hand: format!(
            "SELECT f.customer_id FROM customer_facts f \
             JOIN customer_activities a ON a.customer_id = f.customer_id \
             WHERE @F AND {COUNTS_AS_PURCHASE} GROUP BY f.customer_id \
             HAVING count(*) FILTER (WHERE {w}) = 0",
            w = window(days)
        ),
    }
}

/// Visits or browses in the last D days, no purchase in them.
fn browsers(variant: usize) -> RuleSpec {
    let (days, n) = [(30, 1), (90, 1), (90, 2), (180, 2), (365, 3)][variant];
    let kinds = ["visit", "browse"];
    let mut browsed = windowed(
        predicate(
            "interaction.count",
            pb::Operator::GreaterOrEqual,
            vec![integer(n)],
        ),
        days,
    );
    browsed.filter = Some(pb::PredicateFilter {
        interaction_kinds: kinds.map(str::to_owned).to_vec(),
        ..Default::default()
    });
    let bought = windowed(
        predicate("purchase.count", pb::Operator::LessThan, vec![integer(1)]),
        days,
    );
    RuleSpec {
        name: format!("Browsed {n}+ times in {days} days, bought nothing"),
        rule: all(vec![condition(browsed), condition(bought)]),
        hand: format!(
            "SELECT f.customer_id FROM customer_facts f \
             JOIN customer_activities a ON a.customer_id = f.customer_id \
             WHERE @F AND {w} GROUP BY f.customer_id \
             HAVING count(*) FILTER (WHERE a.kind IN ({kinds})) >= {n} \
               AND count(*) FILTER (WHERE {COUNTS_AS_PURCHASE}) = 0",
            w = window(days),
            kinds = quoted(&kinds)
        ),
    }
}

/// Tags and custom attributes.
fn attributes(variant: usize) -> RuleSpec {
    let vip_tag = || condition(predicate("tags", pb::Operator::Contains, vec![text("vip")]));
    let vip_level = |level: f64| {
        condition(predicate(
            "attributes.vip_level",
            pb::Operator::GreaterOrEqual,
            vec![double(level)],
        ))
    };
    let level = "(f.attributes -> 'vip_level' ->> 'double')::float8";
    let (name, rule, test) = match variant {
        0 => ("Tagged vip", vip_tag(), "f.tags @> ARRAY['vip']".to_owned()),
        1 => ("VIP level 3+", vip_level(3.0), format!("{level} >= 3")),
        2 => (
            "Tagged vip or VIP level 4+",
            any(vec![vip_tag(), vip_level(4.0)]),
            format!("(f.tags @> ARRAY['vip'] OR {level} >= 4)"),
        ),
        3 => (
            "Newsletter and SMS",
            all(vec![
                condition(predicate(
                    "attributes.newsletter",
                    pb::Operator::Equals,
                    vec![boolean(true)],
                )),
                condition(predicate(
                    "consent.sms",
                    pb::Operator::Equals,
                    vec![boolean(true)],
                )),
            ]),
            "(f.attributes -> 'newsletter' ->> 'bool')::boolean AND f.consent_sms".to_owned(),
        ),
        _ => (
            "Prefers a Shanghai store",
            condition(predicate(
                "attributes.preferred_store",
                pb::Operator::StartsWith,
                vec![text("Shanghai")],
            )),
            "starts_with(f.attributes -> 'preferred_store' ->> 'string', 'Shanghai')".to_owned(),
        ),
    };
    RuleSpec {
        name: name.to_owned(),
        rule,
        hand: format!("SELECT f.customer_id FROM customer_facts f WHERE @F AND {test}"),
    }
}

/// The position in [`event_specs`] of the segment `segmentation.recompute_events` measures:
/// app opens on the cart screen in the last 365 days.
pub const EVENT_RECOMPUTED: usize = 0;

fn last_days(days: i32) -> Option<pb::ActivityWindow> {
    Some(pb::ActivityWindow {
        span: Some(pb::activity_window::Span::LastDays(days)),
    })
}

fn property_filter(
    property: &str,
    operator: pb::Operator,
    value: pb::Value,
) -> pb::EventPropertyFilter {
    pb::EventPropertyFilter {
        property: property.to_owned(),
        operator: operator.into(),
        values: vec![value],
    }
}

/// The rule segments over the fixture's custom events (`fixture::EVENT_TYPES`), which the
/// benchmarks add after [`specs`].
pub fn event_specs() -> Vec<RuleSpec> {
    let (opens_days, opens) = (365, 1);
    let cart_opens = RuleSpec {
        name: format!("Opened the app on the cart screen {opens}+ times in {opens_days} days"),
        rule: pb::Condition {
            kind: Some(pb::condition::Kind::Event(pb::EventCondition {
                event_type: "app_opened".to_owned(),
                aggregate: pb::EventAggregate::Count.into(),
                property: String::new(),
                window: last_days(opens_days),
                r#where: vec![property_filter(
                    "screen",
                    pb::Operator::Equals,
                    text("cart"),
                )],
                operator: pb::Operator::GreaterOrEqual.into(),
                values: vec![integer(opens)],
            })),
        },
        hand: format!(
            "SELECT f.customer_id FROM customer_facts f \
             JOIN customer_events e ON e.customer_id = f.customer_id \
             WHERE @F AND e.event_type = 'app_opened' \
               AND e.properties -> 'screen' ->> 'string' = 'cart' AND {w} \
             GROUP BY f.customer_id HAVING count(*) >= {opens}",
            w = window_of("e", opens_days)
        ),
    };
    let worth = 150.0;
    let coupons = RuleSpec {
        name: format!("Redeemed coupons worth {worth}+"),
        rule: pb::Condition {
            kind: Some(pb::condition::Kind::Event(pb::EventCondition {
                event_type: "coupon_redeemed".to_owned(),
                aggregate: pb::EventAggregate::Sum.into(),
                property: "value".to_owned(),
                window: None,
                r#where: Vec::new(),
                operator: pb::Operator::GreaterOrEqual.into(),
                values: vec![double(worth)],
            })),
        },
        // The values are whole quarters: the sum is exact in any order.
        hand: format!(
            "SELECT f.customer_id FROM customer_facts f \
             JOIN customer_events e ON e.customer_id = f.customer_id \
             WHERE @F AND e.event_type = 'coupon_redeemed' GROUP BY f.customer_id \
             HAVING COALESCE(sum((e.properties -> 'value' ->> 'number')::float8), 0) >= {worth:?}"
        ),
    };
    let path = "/sale";
    let sale_viewers = RuleSpec {
        name: format!("Views {path} most"),
        rule: pb::Condition {
            kind: Some(pb::condition::Kind::Event(pb::EventCondition {
                event_type: "page_viewed".to_owned(),
                aggregate: pb::EventAggregate::MostFrequent.into(),
                property: "path".to_owned(),
                window: None,
                r#where: Vec::new(),
                operator: pb::Operator::Equals.into(),
                values: vec![text(path)],
            })),
        },
        hand: format!(
            "SELECT v.customer_id FROM ( \
               SELECT p.customer_id, p.path, row_number() OVER (PARTITION BY p.customer_id \
                 ORDER BY count(*) DESC, p.path COLLATE \"C\") AS place \
               FROM (SELECT f.customer_id, e.properties -> 'path' ->> 'string' AS path \
                     FROM customer_facts f \
                     JOIN customer_events e ON e.customer_id = f.customer_id \
                     WHERE @F AND e.event_type = 'page_viewed') p \
               WHERE p.path <> '' GROUP BY p.customer_id, p.path) v \
             WHERE v.place = 1 AND v.path = '{path}'"
        ),
    };
    let (window_days, within_days) = (365, 90);
    let step = |event_type: &str, filters: Vec<pb::EventPropertyFilter>| pb::EventStep {
        event_type: event_type.to_owned(),
        r#where: filters,
    };
    let viewed_then_coupon = RuleSpec {
        name: format!(
            "Viewed a page in {window_days} days, then redeemed a first coupon within {within_days} days, no crash between"
        ),
        rule: pb::Condition {
            kind: Some(pb::condition::Kind::Sequence(pb::SequenceCondition {
                first: Some(step("page_viewed", Vec::new())),
                then: Some(step(
                    "coupon_redeemed",
                    vec![property_filter(
                        "first_use",
                        pb::Operator::Equals,
                        boolean(true),
                    )],
                )),
                within_days,
                not_between: Some(step("app_crashed", Vec::new())),
                window: last_days(window_days),
            })),
        },
        // The first B or C after an A in event order (occur time, then id in byte order) is a
        // B in time: a later B is later still, and has that C (or this B's C) before it.
        hand: format!(
            "SELECT DISTINCT f.customer_id FROM customer_facts f \
             JOIN customer_events a ON a.customer_id = f.customer_id \
             CROSS JOIN LATERAL ( \
               SELECT n.event_type, n.occur_time FROM customer_events n \
               WHERE n.customer_id = a.customer_id \
                 AND ((n.event_type = 'coupon_redeemed' \
                       AND (n.properties -> 'first_use' ->> 'bool')::boolean) \
                      OR n.event_type = 'app_crashed') \
                 AND (n.occur_time, n.activity_id COLLATE \"C\") \
                     > (a.occur_time, a.activity_id COLLATE \"C\") \
               ORDER BY n.occur_time, n.activity_id COLLATE \"C\" LIMIT 1) n \
             WHERE @F AND a.event_type = 'page_viewed' AND {w} \
               AND n.event_type = 'coupon_redeemed' \
               AND n.occur_time <= a.occur_time + interval '{hours} hours'",
            w = window_of("a", window_days),
            hours = within_days * 24
        ),
    };
    vec![cart_opens, coupons, sale_viewers, viewed_then_coupon]
}

/// The RFM full run written by hand for `config` (no currency rates: the shop currency only):
/// values, quintile bounds and scores in one statement, stored on every customer (`$1` = T).
pub fn rfm_sql(config: &RfmConfig) -> String {
    let hours = config.window_days * 24;
    let currency = &config.currency;
    let cells = grid()
        .into_iter()
        .map(|(r, fm, slug)| format!("({r}, {fm}, '{slug}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let score = |value: &str, bounds: &str, best_low: bool| {
        let scores: [i32; 5] = if best_low {
            [5, 4, 3, 2, 1]
        } else {
            [1, 2, 3, 4, 5]
        };
        format!(
            "CASE WHEN NOT v.scored OR b.{bounds} IS NULL THEN 0 \
               WHEN v.{value} <= b.{bounds}[1] THEN {} WHEN v.{value} <= b.{bounds}[2] THEN {} \
               WHEN v.{value} <= b.{bounds}[3] THEN {} WHEN v.{value} <= b.{bounds}[4] THEN {} \
               ELSE {} END",
            scores[0], scores[1], scores[2], scores[3], scores[4]
        )
    };
    format!(
        "WITH p AS ( \
           SELECT a.customer_id, max(a.occur_time) AS last_time, \
             count(*) FILTER (WHERE a.occur_time > $1 - interval '{hours} hours') AS frequency, \
             sum({NET_AMOUNT}) FILTER (WHERE a.occur_time > $1 - interval '{hours} hours' \
                                          AND a.currency = '{currency}') AS monetary \
           FROM customer_activities a WHERE {COUNTS_AS_PURCHASE} AND a.occur_time <= $1 \
           GROUP BY a.customer_id), \
         v AS ( \
           SELECT f.customer_id, p.last_time IS NOT NULL AS scored, \
             floor(extract(epoch FROM ($1 - p.last_time)) / 86400)::int AS recency_days, \
             COALESCE(p.frequency, 0) AS frequency, COALESCE(p.monetary, 0)::bigint AS monetary \
           FROM customer_facts f LEFT JOIN p ON p.customer_id = f.customer_id), \
         b AS ( \
           SELECT percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY recency_days) AS r, \
             percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY frequency) AS fq, \
             percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY monetary) AS m \
           FROM v WHERE scored), \
         s AS ( \
           SELECT v.*, {r} AS rs, {f} AS fs, {m} AS ms FROM v CROSS JOIN b) \
         UPDATE customer_facts f SET rfm_recency_days = s.recency_days, \
           rfm_frequency = s.frequency, rfm_monetary_minor = s.monetary, \
           rfm_recency_score = s.rs, rfm_frequency_score = s.fs, rfm_monetary_score = s.ms, \
           rfm_group = COALESCE(g.grp, ''), rfm_score_time = $1 \
         FROM s LEFT JOIN (VALUES {cells}) AS g (r, fm, grp) \
           ON g.r = s.rs AND g.fm = (s.fs + s.ms + 1) / 2 \
         WHERE f.customer_id = s.customer_id",
        r = score("recency_days", "r", true),
        f = score("frequency", "fq", false),
        m = score("monetary", "m", false),
    )
}

/// The lifecycle full run written by hand for `config`: stage and churn risk of every
/// customer from its purchase history, stored (`$1` = T).
pub fn lifecycle_sql(config: &LifecycleConfig) -> String {
    let hours = |days: i32| format!("interval '{} hours'", days * 24);
    let multiplier = config.churn_risk_gap_multiplier;
    format!(
        "WITH p AS ( \
           SELECT a.customer_id, a.occur_time, a.occur_time - lag(a.occur_time) OVER \
             (PARTITION BY a.customer_id ORDER BY a.occur_time, a.activity_id) AS gap \
           FROM customer_activities a WHERE {COUNTS_AS_PURCHASE} AND a.occur_time <= $1), \
         h AS ( \
           SELECT customer_id, min(occur_time) AS first_time, max(occur_time) AS last_time, \
             count(*) AS n, count(*) FILTER (WHERE occur_time > $1 - {active}) AS active_n, \
             max(occur_time) FILTER (WHERE gap >= {dormant}) AS reactivate_time \
           FROM p GROUP BY customer_id), \
         c AS ( \
           SELECT f.customer_id, h.first_time, h.last_time, h.active_n, h.reactivate_time, \
             floor(extract(epoch FROM ($1 - h.last_time)) / 86400)::int AS d, \
             CASE WHEN h.last_time IS NULL THEN NULL \
                  WHEN h.n >= 2 THEN extract(epoch FROM (h.last_time - h.first_time))::float8 \
                    / 86400 / (h.n - 1) \
                  ELSE {at_risk_days}::float8 END AS gap \
           FROM customer_facts f LEFT JOIN h ON h.customer_id = f.customer_id), \
         s AS ( \
           SELECT c.*, \
             CASE WHEN last_time IS NULL THEN 'prospect' \
                  WHEN d >= {churned_days} THEN 'churned' \
                  WHEN d >= {dormant_days} THEN 'dormant' \
                  WHEN d >= {at_risk_days} THEN 'at_risk' \
                  WHEN first_time > $1 - {new} THEN 'new' \
                  WHEN reactivate_time > $1 - {reactivated} THEN 'reactivated' \
                  WHEN active_n >= {active_min} THEN 'active' \
                  ELSE 'at_risk' END AS stage, \
             CASE WHEN last_time IS NULL THEN 0::float8 \
                  WHEN {multiplier:?} * gap <= 0 THEN CASE WHEN d > 0 THEN 1::float8 ELSE 0::float8 END \
                  ELSE least(1::float8, d / ({multiplier:?} * gap)) END AS raw_score \
           FROM c), \
         r AS ( \
           SELECT customer_id, stage, d, gap, \
             CASE WHEN stage IN ('prospect', 'churned') THEN 0::float8 ELSE raw_score END AS score, \
             stage IN ('at_risk', 'dormant') \
               OR (stage IN ('new', 'active', 'reactivated') AND raw_score >= 1) AS flag \
           FROM s) \
         UPDATE customer_facts f SET \
           lifecycle_previous_stage = CASE WHEN f.lifecycle_stage <> r.stage \
             THEN f.lifecycle_stage ELSE f.lifecycle_previous_stage END, \
           lifecycle_stage_start_time = CASE WHEN f.lifecycle_stage <> r.stage \
             THEN $1 ELSE f.lifecycle_stage_start_time END, \
           lifecycle_stage = r.stage, lifecycle_days_since_last_purchase = r.d, \
           lifecycle_expected_gap_days = r.gap, churn_risk_score = r.score, \
           churn_risk = r.flag, lifecycle_evaluate_time = $1 \
         FROM r WHERE f.customer_id = r.customer_id",
        active = hours(config.active_window_days),
        dormant = hours(config.dormant_after_days),
        at_risk_days = config.at_risk_after_days,
        churned_days = config.churned_after_days,
        dormant_days = config.dormant_after_days,
        new = hours(config.new_window_days),
        reactivated = hours(config.reactivated_window_days),
        active_min = config.active_min_purchases,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_segments_the_probe_first_and_scopes_in_every_query() {
        assert_eq!(specs(12).len(), 12);
        let specs = specs(100);
        assert_eq!(specs.len(), 50);
        assert!(specs[0].everyone_sql().contains(PROBE_CATEGORY));
        assert!(
            specs[RECOMPUTED]
                .name
                .starts_with("Bought 3+ times in 365 days")
        );
        let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 50, "names are unique");
        for spec in &specs {
            assert!(spec.hand.contains("@F"), "{}: no scope", spec.name);
            assert!(!spec.everyone_sql().contains("@F") && !spec.everyone_sql().contains("@A"));
            assert!(spec.scoped_sql().contains("$2"));
        }
    }

    #[test]
    fn the_event_rules_read_event_types_and_properties_of_the_fixture() {
        use custops_segmentation::fixture::EVENT_TYPES;
        let specs = event_specs();
        assert_eq!(specs.len(), 4);
        assert!(specs[EVENT_RECOMPUTED].name.contains("cart screen"));
        let known = |event_type: &str, property: &str| {
            EVENT_TYPES.iter().any(|t| {
                t.name == event_type
                    && (property.is_empty() || t.properties.iter().any(|p| p.name == property))
            })
        };
        for spec in &specs {
            assert!(spec.hand.contains("@F"), "{}: no scope", spec.name);
            match &spec.rule.kind {
                Some(pb::condition::Kind::Event(event)) => {
                    assert!(known(&event.event_type, &event.property), "{}", spec.name);
                    for filter in &event.r#where {
                        assert!(known(&event.event_type, &filter.property), "{}", spec.name);
                    }
                }
                Some(pb::condition::Kind::Sequence(sequence)) => {
                    for step in [&sequence.first, &sequence.then, &sequence.not_between]
                        .into_iter()
                        .flatten()
                    {
                        assert!(known(&step.event_type, ""), "{}", spec.name);
                        for filter in &step.r#where {
                            assert!(known(&step.event_type, &filter.property), "{}", spec.name);
                        }
                    }
                }
                other => panic!("{}: not an event rule: {other:?}", spec.name),
            }
        }
    }
}

//! Sample data for `custops demo`: a synthetic customer base (several countries, channels,
//! demographics, consents) with purchases and interactions spread over two years, loaded
//! through the public RPCs like any client would. Deterministic (a seeded generator) and
//! idempotent: customers carry request ids and activities event ids derived from their
//! position, so running it twice on one day stores nothing new.
//!
//! # Currencies
//! The sample business reports in CNY, segmentation's default RFM currency: its online shop
//! prices in CNY for every country, so nearly all purchases are in CNY and RFM monetary
//! scores mean something out of the box. Customers abroad pay one purchase in four in their
//! local currency (EUR, USD, JPY, GBP: the shop's local pick-up points). Segmentation counts
//! those towards monetary value only once its RFM config has rates for them
//! (`RfmConfig.currency_rates`); it ships none, because exchange rates move and a stale
//! built-in rate would skew scores unseen, and this loader only talks to profiles.

use anyhow::Context;
use chrono::{Duration, Utc};
use custops_common::time::to_timestamp as ts;
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as pb;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use tonic::client::GrpcService;
use tonic::codegen::{Body, Bytes, StdError};

/// What `load` stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemoSummary {
    /// Customers created (or found from an earlier run).
    pub customers: usize,
    /// Activities newly stored.
    pub activities_accepted: i64,
    /// Activities already stored by an earlier run.
    pub activities_duplicate: i64,
}

/// A small deterministic generator (SplitMix64): the same sample data on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        &items[i]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The currency the sample business prices in and reports in (segmentation's default RFM
/// currency).
const SHOP_CURRENCY: &str = "CNY";

/// Places with their local currency.
const PLACES: &[(&str, &str, &str, &str)] = &[
    ("CN", "CN-GD", "Shenzhen", "CNY"),
    ("CN", "CN-SH", "Shanghai", "CNY"),
    ("CN", "CN-BJ", "Beijing", "CNY"),
    ("DE", "DE-BE", "Berlin", "EUR"),
    ("US", "US-CA", "San Francisco", "USD"),
    ("JP", "JP-13", "Tokyo", "JPY"),
    ("GB", "GB-LND", "London", "GBP"),
];
const GIVEN: &[&str] = &[
    "Wei", "Fang", "Min", "Jing", "Lei", "Anna", "Lukas", "Emma", "Yuki", "Oliver",
];
const FAMILY: &[&str] = &[
    "Li", "Wang", "Zhang", "Liu", "Chen", "Schmidt", "Smith", "Sato", "Brown",
];
const INTERESTS: &[&str] = &[
    "outdoor", "cooking", "tech", "fashion", "travel", "fitness", "books",
];
const LIFESTYLE: &[&str] = &[
    "health_conscious",
    "frequent_traveller",
    "new_parent",
    "student",
];
const CATEGORIES: &[&str] = &[
    "shoes",
    "apparel",
    "home/kitchen",
    "electronics",
    "beauty",
    "sports",
];
const CHANNELS: &[&str] = &["store", "web", "app", "wechat_mini_program"];

fn customer(rng: &mut Rng, i: usize) -> pb::Customer {
    let (country, region, city, _) = *rng.pick(PLACES);
    let given = *rng.pick(GIVEN);
    let family = *rng.pick(FAMILY);
    let mut identities = vec![pb::Identity {
        identity_type: pb::IdentityType::Email as i32,
        value: format!("demo.customer{i}@example.com"),
        ..Default::default()
    }];
    if rng.chance(60) {
        identities.push(pb::Identity {
            identity_type: pb::IdentityType::Phone as i32,
            value: format!("+861390{:07}", i),
            ..Default::default()
        });
    }
    if country == "CN" && rng.chance(70) {
        identities.push(pb::Identity {
            identity_type: pb::IdentityType::WechatOpenid as i32,
            namespace: "wxdemo".to_owned(),
            value: format!("o_demo_{i}"),
            ..Default::default()
        });
    }
    let mut consents = Vec::new();
    for channel in [
        common::ContactChannel::Email,
        common::ContactChannel::Sms,
        common::ContactChannel::Wechat,
    ] {
        if rng.chance(60) {
            let status = if rng.chance(80) {
                pb::ConsentStatus::Granted
            } else {
                pb::ConsentStatus::Withdrawn
            };
            consents.push(pb::Consent {
                channel: channel as i32,
                status: status as i32,
                source: "import".to_owned(),
                ..Default::default()
            });
        }
    }
    let year = 1955 + i32::try_from(rng.below(50)).unwrap_or(0);
    pb::Customer {
        given_name: given.to_owned(),
        family_name: family.to_owned(),
        display_name: format!("{given} {family}"),
        identities,
        demographics: Some(pb::Demographics {
            birth_date: Some(common::Date {
                year,
                month: 1 + i32::try_from(rng.below(12)).unwrap_or(0),
                day: 1 + i32::try_from(rng.below(28)).unwrap_or(0),
            }),
            gender: 1 + i32::try_from(rng.below(4)).unwrap_or(0),
            income_band: 1 + i32::try_from(rng.below(6)).unwrap_or(0),
            education_level: 1 + i32::try_from(rng.below(8)).unwrap_or(0),
            occupation: String::new(),
        }),
        geography: Some(pb::Geography {
            country_code: country.to_owned(),
            region: region.to_owned(),
            city: city.to_owned(),
            postal_code: String::new(),
        }),
        psychographics: Some(pb::Psychographics {
            interests: vec![
                (*rng.pick(INTERESTS)).to_owned(),
                (*rng.pick(INTERESTS)).to_owned(),
            ],
            lifestyle_tags: vec![(*rng.pick(LIFESTYLE)).to_owned()],
        }),
        tags: if rng.chance(10) {
            vec!["vip".to_owned()]
        } else {
            Vec::new()
        },
        consents,
        ..Default::default()
    }
}

fn activities(
    rng: &mut Rng,
    i: usize,
    customer_id: &str,
    local_currency: &str,
) -> Vec<pb::ImportActivitiesRequest> {
    // Times count back from today's midnight (UTC), so a second run the same day sends the
    // very same activities and they come back as duplicates.
    let now = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or_else(Utc::now, |midnight| midnight.and_utc());
    let count = rng.below(16);
    (0..count)
        .map(|k| {
            let ago =
                Duration::minutes(i64::try_from(rng.below(2 * 365 * 24 * 60)).unwrap_or(0) + 10);
            let details = if rng.chance(40) {
                // Chosen by position, not by the generator, so every other draw (and with it
                // the rest of the sample) stays as it was.
                let currency = if (k + u64::try_from(i).unwrap_or(0)) % 4 == 0 {
                    local_currency
                } else {
                    SHOP_CURRENCY
                };
                pb::activity::Details::Purchase(pb::Purchase {
                    order_id: format!("demo-order-{i}-{k}"),
                    amount: Some(common::Money {
                        amount_minor: i64::try_from(500 + rng.below(60_000)).unwrap_or(500),
                        currency: currency.to_owned(),
                    }),
                    categories: vec![(*rng.pick(CATEGORIES)).to_owned()],
                    item_count: 1 + i32::try_from(rng.below(4)).unwrap_or(0),
                })
            } else {
                pb::activity::Details::Interaction(pb::Interaction {
                    interaction_kind: 1 + i32::try_from(rng.below(8)).unwrap_or(0),
                    category: (*rng.pick(CATEGORIES)).to_owned(),
                    ..Default::default()
                })
            };
            pb::ImportActivitiesRequest {
                activity: Some(pb::Activity {
                    customer_id: customer_id.to_owned(),
                    source: "demo".to_owned(),
                    event_id: format!("demo-{i}-{k}"),
                    occur_time: Some(ts(now - ago)),
                    channel: (*rng.pick(CHANNELS)).to_owned(),
                    details: Some(details),
                    ..Default::default()
                }),
                customer_identity: None,
            }
        })
        .collect()
}

/// Creates `customers` sample customers and their activities through `client`.
pub async fn load<T>(
    client: &mut ProfilesServiceClient<T>,
    customers: usize,
) -> anyhow::Result<DemoSummary>
where
    T: GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    let mut rng = Rng(0x00C0_FFEE);
    let mut summary = DemoSummary::default();
    let mut batch = Vec::new();
    for i in 0..customers {
        let input = customer(&mut rng, i);
        let local_currency = PLACES
            .iter()
            .find(|p| Some(p.2) == input.geography.as_ref().map(|g| g.city.as_str()))
            .map_or(SHOP_CURRENCY, |p| p.3);
        let created = client
            .create_customer(pb::CreateCustomerRequest {
                customer: Some(input),
                request_id: format!("demo-customer-{i}"),
            })
            .await
            .with_context(|| format!("Failed to create demo customer {i}"))?
            .into_inner()
            .customer
            .context("CreateCustomer answered no customer")?;
        summary.customers += 1;
        batch.extend(activities(
            &mut rng,
            i,
            &created.customer_id,
            local_currency,
        ));
        if batch.len() >= 5_000 || i + 1 == customers {
            let sent = std::mem::take(&mut batch);
            let response = client
                .import_activities(tokio_stream::iter(sent))
                .await
                .context("Failed to import demo activities")?
                .into_inner();
            summary.activities_accepted += response.accepted_count;
            summary.activities_duplicate += response.duplicate_count;
        }
    }
    Ok(summary)
}

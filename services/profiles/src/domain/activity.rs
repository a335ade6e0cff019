//! Activities: purchases, refunds, interactions and custom events reported by other systems,
//! idempotent on the reporter's (source, event id).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::event_type::CustomEvent;

/// Largest amount of one purchase or refund, in minor units: 10^15 (ten trillion in the
/// major unit of a two-decimal currency). Wide for any real order, and small enough that the
/// sums kept of them (a customer's net spend, segmentation's aggregates, the anonymous totals
/// of erased customers) need thousands of maximal orders before they could leave int64.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// Largest item count of one purchase: 10^6.
pub const MAX_ITEM_COUNT: i32 = 1_000_000;

/// What happened.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ActivityDetails {
    /// A completed purchase.
    Purchase {
        /// Order id.
        order_id: String,
        /// Amount paid in minor units (≥ 0).
        amount_minor: i64,
        /// ISO-4217 code.
        currency: String,
        /// De-duplicated categories.
        categories: Vec<String>,
        /// Items, 0 when unknown.
        item_count: i32,
    },
    /// Money returned.
    Refund {
        /// Refunded order.
        order_id: String,
        /// Amount in minor units (> 0).
        amount_minor: i64,
        /// ISO-4217 code.
        currency: String,
        /// Categories.
        categories: Vec<String>,
    },
    /// A non-purchase interaction.
    Interaction {
        /// `InteractionKind` number.
        kind: i16,
        /// For OTHER.
        other_kind: String,
        /// Campaign.
        campaign_id: String,
        /// Page or screen.
        page: String,
        /// Product.
        product_id: String,
        /// Category.
        category: String,
        /// Related record.
        reference_id: String,
    },
    /// An event of a declared custom type (checked against the catalog before it is stored).
    CustomEvent(CustomEvent),
}

impl ActivityDetails {
    /// `ActivityKind` number.
    pub fn kind(&self) -> i16 {
        match self {
            ActivityDetails::Purchase { .. } => 1,
            ActivityDetails::Refund { .. } => 2,
            ActivityDetails::Interaction { .. } => 3,
            ActivityDetails::CustomEvent(_) => 4,
        }
    }

    /// `InteractionKind` number, 0 for purchases and refunds.
    pub fn interaction_kind(&self) -> i16 {
        match self {
            ActivityDetails::Interaction { kind, .. } => *kind,
            _ => 0,
        }
    }

    /// Amount and currency of purchases and refunds.
    pub fn amount(&self) -> Option<(i64, &str)> {
        match self {
            ActivityDetails::Purchase {
                amount_minor,
                currency,
                ..
            }
            | ActivityDetails::Refund {
                amount_minor,
                currency,
                ..
            } => Some((*amount_minor, currency)),
            ActivityDetails::Interaction { .. } | ActivityDetails::CustomEvent(_) => None,
        }
    }
}

/// Who an activity is about, as the request names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerRef {
    /// By id (a merged id is followed).
    Id(Uuid),
    /// By identity.
    Identity(super::Identity),
}

/// An activity to record, validated (a custom event only in itself: the catalog check is the
/// use case's, in its transaction).
#[derive(Debug, Clone, PartialEq)]
pub struct NewActivity {
    /// Whose.
    pub customer: CustomerRef,
    /// Reporting system slug.
    pub source: String,
    /// Reporter's id.
    pub event_id: String,
    /// When it happened.
    pub occur_time: DateTime<Utc>,
    /// Channel slug.
    pub channel: String,
    /// What happened.
    pub details: ActivityDetails,
}

impl NewActivity {
    /// Hash of the content that must match for a replay of (source, event id) to be a true
    /// duplicate rather than a reused event id. The customer is part of it as the request named
    /// them, so a replay naming a since-merged id is still a duplicate.
    pub fn content_hash(&self) -> String {
        let customer = match &self.customer {
            CustomerRef::Id(id) => id.to_string(),
            CustomerRef::Identity(identity) => {
                format!(
                    "{}|{}|{}",
                    identity.kind.number(),
                    identity.namespace,
                    identity.value
                )
            }
        };
        let details = serde_json::to_string(&self.details).unwrap_or_default();
        let mut hash = Sha256::new();
        for part in [
            customer.as_str(),
            &self.occur_time.timestamp_micros().to_string(),
            &self.channel,
            &details,
        ] {
            hash.update(part.len().to_be_bytes());
            hash.update(part.as_bytes());
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A stored activity.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// The customer it is recorded on.
    pub customer_id: Uuid,
    /// Reporter.
    pub source: String,
    /// Reporter's id.
    pub event_id: String,
    /// When it happened.
    pub occur_time: DateTime<Utc>,
    /// When recorded.
    pub record_time: DateTime<Utc>,
    /// Channel slug.
    pub channel: String,
    /// What happened.
    pub details: ActivityDetails,
}

/// Filters of ListActivities, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityFilter {
    /// `ActivityKind` numbers, any of.
    pub kinds: Vec<i16>,
    /// `InteractionKind` numbers, any of.
    pub interaction_kinds: Vec<i16>,
    /// Channel slug.
    pub channel: Option<String>,
    /// Source slug.
    pub source: Option<String>,
    /// Occurred in [start, end).
    pub occur_range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
}

/// Whether `code` is an active ISO-4217 alphabetic currency code.
pub fn is_currency(code: &str) -> bool {
    code.len() == 3 && CURRENCIES.split(' ').any(|c| c == code)
}

const CURRENCIES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

/// Aggregates of one customer's activities (Customer 360).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivitySummary {
    /// Purchases.
    pub purchase_count: i64,
    /// Interactions.
    pub interaction_count: i64,
    /// Purchases minus refunds per currency, by currency code.
    pub net_spend: Vec<(String, i64)>,
    /// First purchase.
    pub first_purchase_time: Option<DateTime<Utc>>,
    /// Latest purchase.
    pub last_purchase_time: Option<DateTime<Utc>>,
    /// Latest activity of any kind.
    pub last_activity_time: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_checked() {
        assert!(is_currency("CNY"));
        assert!(!is_currency("cny"));
        assert!(!is_currency("ABC"));
    }
}

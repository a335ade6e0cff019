//! Why the domain refuses an operation: each variant is one `ErrorInfo` reason of the
//! contract (`LoyaltyService` docs), with the metadata a caller needs to act on it.

use uuid::Uuid;

/// A refusal by the loyalty rules (not a malformed request, not an infrastructure failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The named resource does not exist.
    #[error("{resource} `{id}` was not found")]
    NotFound {
        /// Kind of resource, e.g. "member".
        resource: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request id was used before with a different request.
    #[error("request_id `{request_id}` was already used with a different request")]
    RequestIdReused {
        /// The reused id.
        request_id: String,
    },
    /// The available balance is short of what a spend needs.
    #[error(
        "insufficient points: {requested} requested, {available} available ({shortfall} short)"
    )]
    InsufficientPoints {
        /// Points the member can spend.
        available: i64,
        /// Points asked for.
        requested: i64,
        /// `requested - available`.
        shortfall: i64,
    },
    /// The member's status does not allow the operation.
    #[error("the member is {status}")]
    MemberNotActive {
        /// The status, in upper case as in the contract (`SUSPENDED`, `CLOSED`, `MERGED`).
        status: &'static str,
    },
    /// The customer is already a member of the program.
    #[error("the customer is already a member of the program")]
    MemberAlreadyEnrolled {
        /// The existing member.
        member_id: Uuid,
    },
    /// The customer was erased in profiles.
    #[error("the customer was erased")]
    CustomerErased,
    /// Profiles has no customer with this id (checked when loyalty follows profiles).
    #[error("customer_id `{customer_id}` is not a customer in profiles")]
    CustomerNotFound {
        /// The id asked for.
        customer_id: Uuid,
    },
    /// The customer is soft-deleted in profiles.
    #[error("customer_id `{customer_id}` is deleted in profiles")]
    CustomerDeleted {
        /// The id asked for.
        customer_id: Uuid,
    },
    /// A program update would remove a tier that members hold.
    #[error("members hold tier `{tier_code}`, which the update removes")]
    TierInUse {
        /// The tier.
        tier_code: String,
    },
    /// The program is archived.
    #[error("the program is archived")]
    ProgramNotActive,
    /// The order already earned points in this program.
    #[error("order already earned points in this program")]
    OrderAlreadyEarned {
        /// The earlier EARN entry.
        ledger_entry_id: Uuid,
    },
    /// More than what remains reversible was asked for.
    #[error("the reversal exceeds what remains reversible ({reversible_points} points)")]
    ReversalExceedsRemaining {
        /// Request field at fault: `points` or `refund_amount`.
        field: &'static str,
        /// Points still reversible.
        reversible_points: i64,
        /// For purchase earns: amount not refunded yet.
        refundable_amount_minor: Option<i64>,
    },
    /// The target entry cannot be reversed by this call.
    #[error("a {kind} entry cannot be reversed by this call")]
    NotReversible {
        /// Kind of the target, e.g. `EXPIRE`.
        kind: &'static str,
    },
    /// The reward redemption was reversed already.
    #[error("the reward redemption was already reversed")]
    AlreadyReversed,
    /// The reward is inactive or outside its availability period.
    #[error("the reward is not available")]
    RewardNotAvailable,
    /// Not enough stock.
    #[error("the reward is out of stock ({available_stock} left)")]
    RewardOutOfStock {
        /// Units left.
        available_stock: i64,
    },
    /// The member's tier is below the reward's minimum.
    #[error("the reward needs tier `{min_tier_code}` or above")]
    RewardTierNotEligible {
        /// Lowest tier that may redeem.
        min_tier_code: String,
    },
    /// The member holds the most units one member may redeem.
    #[error("the member has redeemed the most units allowed ({max_quantity_per_member})")]
    RewardMemberLimitReached {
        /// The reward's limit.
        max_quantity_per_member: i32,
    },
    /// A stock adjustment on a reward without a stock limit.
    #[error("the reward has unlimited stock")]
    StockUnlimited,
    /// A stock adjustment would take the stock below zero.
    #[error("the stock would be negative ({available_stock} left)")]
    StockWouldBeNegative {
        /// Units left.
        available_stock: i64,
    },
    /// The change would raise one of the member's balances past its limit
    /// (`domain::limits`).
    #[error("the change would take the member's {balance} past {limit}")]
    BalanceLimit {
        /// Which balance: `points`, `lifetime_earned_points`, `qualifying_points`,
        /// `qualifying_spend`, ….
        balance: &'static str,
        /// The limit.
        limit: i64,
    },
    /// A stock adjustment would take the stock past its limit.
    #[error("the stock would pass {limit} ({available_stock} now)")]
    StockLimit {
        /// Units now.
        available_stock: i64,
        /// The limit.
        limit: i64,
    },
    /// A request field is wrong in a way only the stored state reveals (e.g. a purchase in
    /// another currency than the program's).
    #[error("{field}: {description}")]
    InvalidField {
        /// Path of the field.
        field: &'static str,
        /// What is wrong.
        description: String,
    },
    /// A stale etag: the resource changed since it was read.
    #[error("the {resource} changed since it was read; read it again and retry")]
    StaleEtag {
        /// Kind of resource.
        resource: &'static str,
    },
}

impl Rejection {
    /// Shorthand for [`Rejection::NotFound`].
    pub fn not_found(resource: &'static str, id: impl ToString) -> Self {
        Rejection::NotFound {
            resource,
            id: id.to_string(),
        }
    }
}

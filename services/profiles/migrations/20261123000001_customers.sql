-- The single customer record: customers, their identities, consents with the audit trail,
-- the custom attribute catalog, activities, merges and request-id idempotency records.
-- Enumerations are stored as the proto enum numbers (smallint): they are the contract's
-- stable names for these values, and new values only ever get added.

CREATE TABLE customers (
    customer_id         uuid PRIMARY KEY,
    version             bigint      NOT NULL DEFAULT 1,
    state               smallint    NOT NULL,
    merged_into         uuid        REFERENCES customers (customer_id),
    create_time         timestamptz NOT NULL,
    update_time         timestamptz NOT NULL,
    delete_time         timestamptz,
    erase_time          timestamptz,
    display_name        text        NOT NULL DEFAULT '',
    given_name          text        NOT NULL DEFAULT '',
    family_name         text        NOT NULL DEFAULT '',
    birth_date          date,
    gender              smallint    NOT NULL DEFAULT 0,
    income_band         smallint    NOT NULL DEFAULT 0,
    occupation          text        NOT NULL DEFAULT '',
    education_level     smallint    NOT NULL DEFAULT 0,
    country_code        text        NOT NULL DEFAULT '',
    region              text        NOT NULL DEFAULT '',
    city                text        NOT NULL DEFAULT '',
    postal_code         text        NOT NULL DEFAULT '',
    interests           text[]      NOT NULL DEFAULT '{}',
    lifestyle_tags      text[]      NOT NULL DEFAULT '{}',
    tags                text[]      NOT NULL DEFAULT '{}',
    custom_attributes   jsonb       NOT NULL DEFAULT '{}',
    channel_preferences jsonb       NOT NULL DEFAULT '{}'
);

-- List filters: state first (ListCustomers defaults to ACTIVE), keyset on customer_id.
CREATE INDEX customers_state_id ON customers (state, customer_id);
CREATE INDEX customers_country ON customers (country_code, customer_id);
CREATE INDEX customers_tags ON customers USING gin (tags);
CREATE INDEX customers_merged_into ON customers (merged_into) WHERE merged_into IS NOT NULL;

-- One row per identity; the primary key is what makes an identity unique across customers
-- (concurrent creates sharing one: exactly one insert wins) and what LookupCustomer reads.
CREATE TABLE identities (
    identity_type smallint    NOT NULL,
    namespace     text        NOT NULL,
    value         text        NOT NULL,
    customer_id   uuid        NOT NULL REFERENCES customers (customer_id),
    create_time   timestamptz NOT NULL,
    PRIMARY KEY (identity_type, namespace, value)
);
CREATE INDEX identities_customer ON identities (customer_id);
-- FindDuplicateCustomers compares values across types.
CREATE INDEX identities_value ON identities (value);

-- The consent in force per customer and channel.
CREATE TABLE consents (
    customer_id   uuid        NOT NULL REFERENCES customers (customer_id),
    channel       smallint    NOT NULL,
    status        smallint    NOT NULL,
    source        text        NOT NULL,
    actor_kind    smallint    NOT NULL,
    actor_id      text        NOT NULL,
    actor_service text        NOT NULL,
    change_time   timestamptz NOT NULL,
    record_time   timestamptz NOT NULL,
    PRIMARY KEY (customer_id, channel)
);

-- Append-only audit trail of consent changes.
CREATE TABLE consent_changes (
    consent_change_id uuid PRIMARY KEY,
    customer_id       uuid        NOT NULL REFERENCES customers (customer_id),
    channel           smallint    NOT NULL,
    old_status        smallint    NOT NULL,
    new_status        smallint    NOT NULL,
    source            text        NOT NULL,
    actor_kind        smallint    NOT NULL,
    actor_id          text        NOT NULL,
    actor_service     text        NOT NULL,
    change_time       timestamptz NOT NULL,
    record_time       timestamptz NOT NULL,
    merge_id          uuid,
    superseded        boolean     NOT NULL DEFAULT false
);
CREATE INDEX consent_changes_customer ON consent_changes (customer_id, record_time DESC, consent_change_id DESC);
CREATE INDEX consent_changes_time ON consent_changes (record_time DESC, consent_change_id DESC);

CREATE TABLE attribute_definitions (
    attribute_name text PRIMARY KEY,
    value_type     smallint    NOT NULL,
    description    text        NOT NULL,
    contains_pii   boolean     NOT NULL,
    create_time    timestamptz NOT NULL
);

-- Activities; (source, event_id) is the caller's idempotency key. `details` is the domain's
-- JSON form of the purchase / refund / interaction; amount and currency are columns too, for
-- aggregates. `content_hash` tells a true replay from a reused event id.
CREATE TABLE activities (
    activity_id  uuid PRIMARY KEY,
    customer_id  uuid        NOT NULL REFERENCES customers (customer_id),
    source       text        NOT NULL,
    event_id     text        NOT NULL,
    occur_time   timestamptz NOT NULL,
    record_time  timestamptz NOT NULL,
    channel      text        NOT NULL,
    kind         smallint    NOT NULL,
    interaction_kind smallint NOT NULL DEFAULT 0,
    amount_minor bigint,
    currency     text,
    details      jsonb       NOT NULL,
    content_hash text        NOT NULL,
    merge_id     uuid,
    UNIQUE (source, event_id)
);
CREATE INDEX activities_timeline ON activities (customer_id, occur_time DESC, activity_id DESC);

-- Merge audit trail; `snapshot` (both customers before the merge) is kept for unmerge.
CREATE TABLE merges (
    merge_id            uuid PRIMARY KEY,
    source_customer_id  uuid        NOT NULL REFERENCES customers (customer_id),
    target_customer_id  uuid        NOT NULL REFERENCES customers (customer_id),
    state               smallint    NOT NULL,
    survivorship        jsonb       NOT NULL,
    source_value_paths  text[]      NOT NULL,
    moved_identity_count integer    NOT NULL,
    moved_activity_count bigint     NOT NULL,
    actor_kind          smallint    NOT NULL,
    actor_id            text        NOT NULL,
    actor_service       text        NOT NULL,
    merge_reason        text        NOT NULL,
    merge_time          timestamptz NOT NULL,
    unmerge_expire_time timestamptz NOT NULL,
    snapshot            jsonb
);
CREATE INDEX merges_source ON merges (source_customer_id);
CREATE INDEX merges_target ON merges (target_customer_id);

-- AIP-155 request ids, scoped to the calling service: the payload's hash and the resource the
-- first call produced.
CREATE TABLE request_ids (
    caller       text        NOT NULL,
    request_id   text        NOT NULL,
    method       text        NOT NULL,
    payload_hash text        NOT NULL,
    customer_id  uuid        NOT NULL,
    create_time  timestamptz NOT NULL,
    PRIMARY KEY (caller, request_id)
);

-- What erasure keeps of an erased customer's activities: anonymous daily totals per kind,
-- channel and currency, with no customer id.
CREATE TABLE erased_activity_aggregates (
    day            date     NOT NULL,
    kind           smallint NOT NULL,
    channel        text     NOT NULL,
    currency       text     NOT NULL,
    activity_count bigint   NOT NULL,
    amount_minor   bigint   NOT NULL,
    PRIMARY KEY (day, kind, channel, currency)
);

-- Programs, members and their balances projection.
--
-- A program's rules (earning, expiry, clawback, tier ladder and policy) are one JSON document
-- owned by the domain (`domain::program::ProgramRules`): they are read and replaced whole.

CREATE TABLE programs (
    program_id    uuid PRIMARY KEY,
    display_name  text        NOT NULL,
    description   text        NOT NULL DEFAULT '',
    state         smallint    NOT NULL,
    currency      text        NOT NULL,
    time_zone     text        NOT NULL,
    rules         jsonb       NOT NULL,
    etag          bigint      NOT NULL DEFAULT 1,
    create_time   timestamptz NOT NULL,
    update_time   timestamptz NOT NULL
);

CREATE TABLE members (
    member_id          uuid PRIMARY KEY,
    program_id         uuid        NOT NULL REFERENCES programs,
    customer_id        uuid        NOT NULL,
    status             smallint    NOT NULL,
    status_reason      text        NOT NULL DEFAULT '',
    enrol_channel      text        NOT NULL DEFAULT '',
    enrol_time         timestamptz NOT NULL,
    tier_code          text        NOT NULL,
    tier_achieve_time  timestamptz NOT NULL,
    UNIQUE (program_id, customer_id)
);

-- The projection of each member's ledger, updated in the transaction that appends the entry.
-- Every mutation locks the member's row here first (SELECT ... FOR UPDATE), which serialises
-- changes of one member and keeps the balance equal to the sum of its entries.
CREATE TABLE balances (
    member_id                 uuid PRIMARY KEY REFERENCES members,
    available_points          bigint      NOT NULL DEFAULT 0,
    pending_points            bigint      NOT NULL DEFAULT 0 CHECK (pending_points >= 0),
    qualifying_points         bigint      NOT NULL DEFAULT 0 CHECK (qualifying_points >= 0),
    qualifying_spend_minor    bigint      NOT NULL DEFAULT 0 CHECK (qualifying_spend_minor >= 0),
    lifetime_earned_points    bigint      NOT NULL DEFAULT 0,
    lifetime_redeemed_points  bigint      NOT NULL DEFAULT 0,
    lifetime_expired_points   bigint      NOT NULL DEFAULT 0,
    update_time               timestamptz NOT NULL
);

CREATE TABLE tier_changes (
    tier_change_id     uuid PRIMARY KEY,
    member_id          uuid        NOT NULL REFERENCES members,
    program_id         uuid        NOT NULL,
    from_tier_code     text        NOT NULL,
    from_rank          integer     NOT NULL,
    to_tier_code       text        NOT NULL,
    to_rank            integer     NOT NULL,
    direction          smallint    NOT NULL,
    cause              smallint    NOT NULL,
    qualifying_points  bigint      NOT NULL,
    change_time        timestamptz NOT NULL
);
CREATE INDEX tier_changes_member ON tier_changes (member_id, change_time DESC);

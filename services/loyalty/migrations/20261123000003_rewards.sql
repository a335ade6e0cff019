-- The rewards catalog and its redemptions.

CREATE TABLE rewards (
    reward_id                uuid PRIMARY KEY,
    program_id               uuid        NOT NULL REFERENCES programs,
    display_name             text        NOT NULL,
    description              text        NOT NULL DEFAULT '',
    state                    smallint    NOT NULL,
    points_cost              bigint      NOT NULL CHECK (points_cost > 0),
    unlimited_stock          boolean     NOT NULL,
    -- Never negative: a redemption takes stock with a conditional UPDATE, so it cannot oversell.
    available_stock          bigint      NOT NULL CHECK (available_stock >= 0),
    redeemed_quantity        bigint      NOT NULL DEFAULT 0,
    available_from           timestamptz,
    available_until          timestamptz,
    min_tier_code            text        NOT NULL DEFAULT '',
    max_quantity_per_member  integer     NOT NULL DEFAULT 0,
    etag                     bigint      NOT NULL DEFAULT 1,
    create_time              timestamptz NOT NULL,
    update_time              timestamptz NOT NULL
);
CREATE INDEX rewards_program ON rewards (program_id, reward_id);

CREATE TABLE reward_redemptions (
    reward_redemption_id     uuid PRIMARY KEY,
    reward_id                uuid        NOT NULL REFERENCES rewards,
    reward_display_name      text        NOT NULL,
    member_id                uuid        NOT NULL REFERENCES members,
    program_id               uuid        NOT NULL,
    quantity                 integer     NOT NULL,
    points_spent             bigint      NOT NULL,
    state                    smallint    NOT NULL,
    ledger_entry_id          uuid        NOT NULL REFERENCES ledger_entries,
    reversal_ledger_entry_id uuid REFERENCES ledger_entries,
    restocked                boolean     NOT NULL DEFAULT false,
    reason                   text        NOT NULL,
    reversal_reason          text        NOT NULL DEFAULT '',
    external_reference       text        NOT NULL DEFAULT '',
    redeem_time              timestamptz NOT NULL,
    reverse_time             timestamptz
);
CREATE INDEX reward_redemptions_member ON reward_redemptions (member_id, reward_id);

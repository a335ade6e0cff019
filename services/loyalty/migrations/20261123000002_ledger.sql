-- The append-only points ledger, the lots earns create, and which lots each spend used.

CREATE TABLE ledger_entries (
    ledger_entry_id         uuid PRIMARY KEY,
    member_id               uuid        NOT NULL REFERENCES members,
    program_id              uuid        NOT NULL,
    kind                    smallint    NOT NULL,
    points                  bigint      NOT NULL,
    available_delta         bigint      NOT NULL,
    pending_delta           bigint      NOT NULL,
    qualifying_delta        bigint      NOT NULL,
    spend_delta_minor       bigint      NOT NULL,
    reason                  text        NOT NULL,
    reason_code             text        NOT NULL DEFAULT '',
    caller                  text        NOT NULL,
    request_id              text        NOT NULL DEFAULT '',
    operator_id             text        NOT NULL DEFAULT '',
    external_reference      text        NOT NULL DEFAULT '',
    order_id                text,
    create_time             timestamptz NOT NULL,
    expire_time             timestamptz,
    -- REVERSE entries: the entry reversed, what was asked and what was waived.
    reversed_entry_id       uuid REFERENCES ledger_entries,
    requested_points        bigint,
    waived_points           bigint,
    refund_amount_minor     bigint,
    clawback_policy         smallint,
    -- REVERSE of a redemption: returned points whose lots had expired meanwhile.
    expired_points          bigint,
    -- Kind-specific details (purchase and calculation, reward redemption), owned by the domain.
    details                 jsonb,
    -- Balances right after the entry: the running balance of a statement.
    after_available         bigint      NOT NULL,
    after_pending           bigint      NOT NULL,
    after_qualifying        bigint      NOT NULL,
    after_spend_minor       bigint      NOT NULL,
    after_lifetime_earned   bigint      NOT NULL,
    after_lifetime_redeemed bigint      NOT NULL,
    after_lifetime_expired  bigint      NOT NULL
);
CREATE INDEX ledger_entries_statement ON ledger_entries (member_id, ledger_entry_id);
CREATE INDEX ledger_entries_reversals ON ledger_entries (reversed_entry_id) WHERE reversed_entry_id IS NOT NULL;
-- One purchase earn per order and program.
CREATE UNIQUE INDEX ledger_entries_order_earn ON ledger_entries (program_id, order_id)
    WHERE kind = 1 AND order_id IS NOT NULL;
-- A request id makes at most one entry, even after its idempotency record is cleaned up.
CREATE UNIQUE INDEX ledger_entries_request ON ledger_entries (caller, request_id) WHERE request_id <> '';

CREATE TABLE point_lots (
    point_lot_id     uuid PRIMARY KEY,
    member_id        uuid        NOT NULL REFERENCES members,
    ledger_entry_id  uuid        NOT NULL REFERENCES ledger_entries,
    original_points  bigint      NOT NULL,
    remaining_points bigint      NOT NULL CHECK (remaining_points >= 0),
    expired_points   bigint      NOT NULL DEFAULT 0,
    earn_time        timestamptz NOT NULL,
    expire_time      timestamptz
);
-- Spending order: first expiring first, then first earned.
CREATE INDEX point_lots_spending ON point_lots (member_id, expire_time NULLS LAST, earn_time, point_lot_id)
    WHERE remaining_points > 0;
CREATE INDEX point_lots_entry ON point_lots (ledger_entry_id);

-- Which lots a spending entry (REDEEM, negative ADJUST, REVERSE of an earn) took points from.
CREATE TABLE lot_spends (
    ledger_entry_id uuid   NOT NULL REFERENCES ledger_entries,
    point_lot_id    uuid   NOT NULL REFERENCES point_lots,
    points          bigint NOT NULL CHECK (points > 0),
    PRIMARY KEY (ledger_entry_id, point_lot_id)
);

-- Idempotency records: the first successful response to each (calling service, request id).
CREATE TABLE idempotency_keys (
    caller      text        NOT NULL,
    request_id  text        NOT NULL,
    method      text        NOT NULL,
    request     bytea       NOT NULL,
    -- Filled in by the same transaction that claimed the key; a concurrent replay waits on
    -- the key's row lock and then reads the committed response.
    response    bytea       NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL,
    PRIMARY KEY (caller, request_id)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (create_time);

-- Points a reversal of a redemption gave back to the lots the redemption spent.
CREATE TABLE lot_returns (
    ledger_entry_id uuid   NOT NULL REFERENCES ledger_entries,
    point_lot_id    uuid   NOT NULL REFERENCES point_lots,
    points          bigint NOT NULL CHECK (points > 0),
    PRIMARY KEY (ledger_entry_id, point_lot_id)
);

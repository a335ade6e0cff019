-- The feedback schema: surveys, invitations, responses, tickets with history, the SLA policy,
-- reviews, and the idempotency keys of mutating calls. Enumerations are stored as lower-case
-- text with CHECK constraints so the data reads without the code.

-- Idempotency keys (AIP-155): one row per (calling service, operation, request id), written in
-- the transaction of the change it guards, holding a hash of the request so a reuse with
-- another payload is recognised.
CREATE TABLE idempotency_keys (
    caller      text        NOT NULL,
    operation   text        NOT NULL,
    request_id  text        NOT NULL,
    fingerprint bytea       NOT NULL,
    resource_id uuid        NOT NULL,
    create_time timestamptz NOT NULL,
    PRIMARY KEY (caller, operation, request_id)
);

CREATE TABLE surveys (
    survey_id         uuid        PRIMARY KEY,
    display_name      text        NOT NULL,
    description       text        NOT NULL,
    -- Ordered questions (domain::survey::Question as JSON); frozen once active.
    questions         jsonb       NOT NULL,
    touchpoint_kind   text        NOT NULL,
    segment_id        text        NOT NULL DEFAULT '',
    reward_points     bigint      CHECK (reward_points BETWEEN 1 AND 1000000),
    reward_program_id text,
    status            text        NOT NULL CHECK (status IN ('draft', 'active', 'closed')),
    create_time       timestamptz NOT NULL,
    update_time       timestamptz NOT NULL,
    activate_time     timestamptz,
    close_time        timestamptz,
    version           bigint      NOT NULL DEFAULT 1,
    CHECK ((reward_points IS NULL) = (reward_program_id IS NULL))
);
-- Keyset pagination of ListSurveys (newest first).
CREATE INDEX surveys_by_create_time ON surveys (create_time DESC, survey_id DESC);

CREATE TABLE invitations (
    invitation_id   uuid        PRIMARY KEY,
    survey_id       uuid        NOT NULL REFERENCES surveys (survey_id),
    customer_id     text        NOT NULL,
    touchpoint_kind text        NOT NULL,
    touchpoint_id   text        NOT NULL,
    channel         text        NOT NULL DEFAULT '',
    expire_time     timestamptz,
    status          text        NOT NULL CHECK (status IN ('pending', 'responded', 'expired')),
    response_id     uuid,
    create_time     timestamptz NOT NULL,
    respond_time    timestamptz,
    -- At most one invitation per (survey, customer, touchpoint).
    UNIQUE (survey_id, customer_id, touchpoint_kind, touchpoint_id)
);
CREATE INDEX invitations_by_create_time ON invitations (create_time DESC, invitation_id DESC);

CREATE TABLE responses (
    response_id            uuid        PRIMARY KEY,
    -- One response per invitation, whatever the concurrency.
    invitation_id          uuid        NOT NULL UNIQUE REFERENCES invitations (invitation_id),
    survey_id              uuid        NOT NULL REFERENCES surveys (survey_id),
    customer_id            text        NOT NULL,
    touchpoint_kind        text        NOT NULL,
    touchpoint_id          text        NOT NULL,
    channel                text        NOT NULL,
    answers                jsonb       NOT NULL,
    completed              boolean     NOT NULL,
    -- Derived scores, one column per metric so that metrics are aggregated in SQL. NULL
    -- with `*_omitted` false: the survey has no such question.
    nps_score              smallint    CHECK (nps_score BETWEEN 0 AND 10),
    nps_omitted            boolean     NOT NULL DEFAULT false,
    csat_score             smallint    CHECK (csat_score BETWEEN 1 AND 5),
    csat_omitted           boolean     NOT NULL DEFAULT false,
    ces_score              smallint    CHECK (ces_score BETWEEN 1 AND 7),
    ces_omitted            boolean     NOT NULL DEFAULT false,
    follow_up_ticket_id    uuid,
    submit_time            timestamptz NOT NULL,
    -- Reward delivery through loyalty (NULL status: no reward).
    reward_status          text        CHECK (reward_status IN ('pending', 'retrying', 'delivered', 'rejected')),
    reward_points          bigint,
    reward_program_id      text,
    reward_attempt_count   integer     NOT NULL DEFAULT 0,
    reward_last_attempt    timestamptz,
    reward_next_attempt    timestamptz,
    reward_last_error      text        NOT NULL DEFAULT '',
    reward_ledger_entry_id text        NOT NULL DEFAULT '',
    reward_deliver_time    timestamptz
);
-- Metrics: covering indexes, so GetSurveyMetrics over a time range (optionally per survey) is
-- an index-only scan that never touches the heap (answers JSON stays out of the way).
CREATE INDEX responses_metrics_by_time ON responses (submit_time)
    INCLUDE (survey_id, channel, touchpoint_kind, nps_score, nps_omitted, csat_score,
             csat_omitted, ces_score, ces_omitted);
CREATE INDEX responses_metrics_by_survey ON responses (survey_id, submit_time)
    INCLUDE (channel, touchpoint_kind, nps_score, nps_omitted, csat_score, csat_omitted,
             ces_score, ces_omitted);
-- The reward worker's queue.
CREATE INDEX responses_rewards_due ON responses (reward_next_attempt)
    WHERE reward_status IN ('pending', 'retrying');

-- The SLA policy in force; no row means the defaults (domain::sla::SlaPolicy::default).
CREATE TABLE sla_policy (
    singleton          boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    targets            jsonb       NOT NULL,
    follow_up_severity text        NOT NULL,
    update_time        timestamptz NOT NULL,
    version            bigint      NOT NULL
);

CREATE TABLE tickets (
    ticket_id             uuid        PRIMARY KEY,
    kind                  text        NOT NULL CHECK (kind IN ('complaint', 'follow_up')),
    status                text        NOT NULL CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    customer_id           text        NOT NULL,
    category              text        NOT NULL,
    severity              text        NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    channel               text        NOT NULL,
    subject               text        NOT NULL,
    description           text        NOT NULL,
    touchpoint_kind       text,
    touchpoint_id         text,
    source_response_id    uuid,
    assignee_id           text        NOT NULL DEFAULT '',
    resolution_code       text,
    resolution_note       text        NOT NULL DEFAULT '',
    compensation_minor    bigint,
    compensation_currency text,
    -- SLA: due times from the policy at open / reopen / severity change.
    open_time             timestamptz NOT NULL,
    respond_due_time      timestamptz NOT NULL,
    resolve_due_time      timestamptz NOT NULL,
    first_respond_time    timestamptz,
    response_breached     boolean     NOT NULL DEFAULT false,
    resolution_breached   boolean     NOT NULL DEFAULT false,
    -- The next due time while OPEN or IN_PROGRESS (first response until met, else
    -- resolution); NULL otherwise. Drives the breach / near-breach lists and the work queue.
    next_due_time         timestamptz,
    -- Closed loop (follow-up tickets only).
    follow_up_triggers    text[]      NOT NULL DEFAULT '{}',
    follow_up_survey_id   uuid,
    follow_up_nps         smallint,
    follow_up_csat        smallint,
    follow_up_ces         smallint,
    first_outcome_time    timestamptz,
    create_time           timestamptz NOT NULL,
    update_time           timestamptz NOT NULL,
    resolve_time          timestamptz,
    close_time            timestamptz,
    version               bigint      NOT NULL DEFAULT 1
);
CREATE INDEX tickets_by_create_time ON tickets (create_time DESC, ticket_id DESC);
CREATE INDEX tickets_by_next_due ON tickets (next_due_time) WHERE next_due_time IS NOT NULL;
CREATE INDEX tickets_follow_ups ON tickets (create_time) WHERE kind = 'follow_up';

CREATE TABLE ticket_history (
    position    bigserial   PRIMARY KEY,
    entry_id    uuid        NOT NULL UNIQUE,
    ticket_id   uuid        NOT NULL REFERENCES tickets (ticket_id),
    action      text        NOT NULL,
    occur_time  timestamptz NOT NULL,
    actor_service text      NOT NULL,
    actor_id    text        NOT NULL DEFAULT '',
    from_status text,
    to_status   text,
    note        text        NOT NULL DEFAULT '',
    -- Action-specific detail (assignment, resolution, fields change, follow-up outcome).
    detail      jsonb
);
CREATE INDEX ticket_history_by_ticket ON ticket_history (ticket_id, position);

CREATE TABLE reviews (
    review_id    uuid        PRIMARY KEY,
    customer_id  text        NOT NULL,
    subject_kind text        NOT NULL CHECK (subject_kind IN ('product', 'service')),
    subject_id   text        NOT NULL,
    rating       smallint    NOT NULL CHECK (rating BETWEEN 1 AND 5),
    title        text        NOT NULL DEFAULT '',
    body         text        NOT NULL DEFAULT '',
    channel      text        NOT NULL DEFAULT '',
    create_time  timestamptz NOT NULL
);
-- Per-subject summaries (count, average, distribution) and lists, newest first.
CREATE INDEX reviews_by_subject ON reviews (subject_kind, subject_id, create_time DESC) INCLUDE (rating);
CREATE INDEX reviews_by_create_time ON reviews (create_time DESC, review_id DESC);

-- The segmentation schema: the facts projection built from the other services' feeds, segments
-- and their memberships (the truth behind the cached lookups), recompute jobs and the
-- deployment-wide configs. Customer ids are profiles' ids (text, as they travel on the feeds).

-- One row per customer segmentation knows: what rules are evaluated against. Empty strings
-- and NULLs mean "unset" (a predicate on an unset field is false, except IS_NOT_SET).
-- Activity aggregates are not stored here: both evaluators compute them from
-- `customer_activities` at evaluation time, so windows and filters need no extra columns.
CREATE TABLE customer_facts (
    customer_id                text PRIMARY KEY,
    customer_create_time       timestamptz,
    country                    text NOT NULL DEFAULT '',
    region                     text NOT NULL DEFAULT '',
    city                       text NOT NULL DEFAULT '',
    birth_date                 date,
    -- Enum slugs as profiles' enum value names without prefix, lower case ("female").
    gender                     text NOT NULL DEFAULT '',
    income_band                text NOT NULL DEFAULT '',
    occupation                 text NOT NULL DEFAULT '',
    education                  text NOT NULL DEFAULT '',
    interests                  text[] NOT NULL DEFAULT '{}',
    lifestyle_tags             text[] NOT NULL DEFAULT '{}',
    tags                       text[] NOT NULL DEFAULT '{}',
    -- Typed custom attributes: {"<name>": {"string": "…"} | {"integer": 1} | {"double": 1.5}
    -- | {"bool": true} | {"timestamp": "<RFC 3339>"} | {"date": "YYYY-MM-DD"}}.
    attributes                 jsonb NOT NULL DEFAULT '{}',
    consent_sms                boolean NOT NULL DEFAULT false,
    consent_email              boolean NOT NULL DEFAULT false,
    consent_app_push           boolean NOT NULL DEFAULT false,
    consent_wechat             boolean NOT NULL DEFAULT false,
    -- Feedback facts.
    last_nps_score             integer,
    last_nps_time              timestamptz,
    last_csat_score            integer,
    last_csat_time             timestamptz,
    open_ticket_count          integer NOT NULL DEFAULT 0,
    -- RFM, derived (see rfm.proto). 0 scores and '' group when not scored.
    rfm_recency_days           integer,
    rfm_frequency              bigint NOT NULL DEFAULT 0,
    rfm_monetary_minor         bigint NOT NULL DEFAULT 0,
    rfm_recency_score          smallint NOT NULL DEFAULT 0,
    rfm_frequency_score        smallint NOT NULL DEFAULT 0,
    rfm_monetary_score         smallint NOT NULL DEFAULT 0,
    rfm_group                  text NOT NULL DEFAULT '',
    rfm_score_time             timestamptz,
    -- Lifecycle, derived (see lifecycle.proto): stage slugs ("prospect", "at_risk", …).
    lifecycle_stage            text NOT NULL DEFAULT 'prospect',
    lifecycle_stage_start_time timestamptz NOT NULL DEFAULT now(),
    lifecycle_previous_stage   text NOT NULL DEFAULT '',
    churn_risk                 boolean NOT NULL DEFAULT false,
    churn_risk_score           double precision NOT NULL DEFAULT 0,
    lifecycle_evaluate_time    timestamptz,
    -- Last event applied from each feed (CustomerFacts.source_positions).
    profiles_sequence          bigint NOT NULL DEFAULT 0,
    profiles_occur_time        timestamptz,
    loyalty_sequence           bigint NOT NULL DEFAULT 0,
    loyalty_occur_time         timestamptz,
    feedback_sequence          bigint NOT NULL DEFAULT 0,
    feedback_occur_time        timestamptz,
    update_time                timestamptz NOT NULL DEFAULT now()
);

-- Purchases and interactions from the profiles feed, kept 1,095 days. Keyed by profiles'
-- activity id, so a redelivered ActivityRecorded is a no-op.
CREATE TABLE customer_activities (
    activity_id     text PRIMARY KEY,
    customer_id     text NOT NULL,
    -- "purchase", or an interaction kind: "visit", "browse", "support_contact",
    -- "campaign_response".
    kind            text NOT NULL,
    occur_time      timestamptz NOT NULL,
    -- Purchases only (NULL for interactions).
    amount_minor    bigint,
    currency        text,
    categories      text[] NOT NULL DEFAULT '{}',
    channel         text NOT NULL DEFAULT '',
    -- The customer the activity was recorded on before a merge moved it, and that merge, so
    -- CustomerUnmerged moves exactly these back.
    merged_from     text,
    merge_id        text
);
CREATE INDEX customer_activities_customer ON customer_activities (customer_id, kind, occur_time);
CREATE INDEX customer_activities_merge ON customer_activities (merge_id) WHERE merge_id IS NOT NULL;

-- Loyalty program memberships from the loyalty feed, one per (customer, program).
CREATE TABLE loyalty_memberships (
    customer_id        text NOT NULL,
    loyalty_program_id text NOT NULL,
    member_id          text NOT NULL DEFAULT '',
    tier               text NOT NULL DEFAULT '',
    points             bigint NOT NULL DEFAULT 0,
    qualifying_points  bigint NOT NULL DEFAULT 0,
    enroll_time        timestamptz,
    PRIMARY KEY (customer_id, loyalty_program_id)
);
CREATE UNIQUE INDEX loyalty_memberships_member ON loyalty_memberships (member_id) WHERE member_id <> '';

-- What the field catalog learns from the feeds: custom attributes and loyalty tiers.
CREATE TABLE attribute_definitions (
    name          text PRIMARY KEY,
    -- "string", "integer", "double", "bool", "timestamp", "date".
    value_type    text NOT NULL,
    display_name  text NOT NULL DEFAULT '',
    description   text NOT NULL DEFAULT ''
);
CREATE TABLE loyalty_tiers (
    loyalty_program_id text NOT NULL,
    tier               text NOT NULL,
    PRIMARY KEY (loyalty_program_id, tier)
);

-- Segments. `rule` is the encoded custops.segmentation.v1.Condition of the current version.
CREATE TABLE segments (
    segment_id              uuid PRIMARY KEY,
    display_name            text NOT NULL,
    description             text NOT NULL DEFAULT '',
    kind                    text NOT NULL CHECK (kind IN ('rule', 'static')),
    rule                    bytea,
    version                 bigint NOT NULL DEFAULT 1,
    membership_version      bigint NOT NULL DEFAULT 0,
    member_count            bigint NOT NULL DEFAULT 0 CHECK (member_count >= 0),
    time_dependent          boolean NOT NULL DEFAULT false,
    referenced_segment_ids  uuid[] NOT NULL DEFAULT '{}',
    -- Catalog fields the rule tests (ListSegments `field`, which segments an RFM or lifecycle
    -- recompute re-evaluates).
    fields                  text[] NOT NULL DEFAULT '{}',
    labels                  jsonb NOT NULL DEFAULT '{}',
    latest_recompute_job_id uuid,
    create_time             timestamptz NOT NULL,
    update_time             timestamptz NOT NULL,
    etag                    text NOT NULL
);
CREATE INDEX segments_references ON segments USING gin (referenced_segment_ids);

CREATE TABLE segment_versions (
    segment_id  uuid NOT NULL REFERENCES segments ON DELETE CASCADE,
    version     bigint NOT NULL,
    rule        bytea NOT NULL,
    create_time timestamptz NOT NULL,
    creator     text NOT NULL,
    PRIMARY KEY (segment_id, version)
);

-- Current memberships: the truth behind the lookups.
CREATE TABLE memberships (
    segment_id      uuid NOT NULL REFERENCES segments ON DELETE CASCADE,
    customer_id     text NOT NULL,
    segment_version bigint NOT NULL,
    enter_time      timestamptz NOT NULL,
    -- ChangeReason slug: "event", "schedule", "recompute", "static_upload", "merge".
    enter_reason    text NOT NULL,
    PRIMARY KEY (segment_id, customer_id)
);
CREATE INDEX memberships_customer ON memberships (customer_id, segment_id);

-- Recompute jobs (recompute.proto). Picked by one replica with FOR UPDATE SKIP LOCKED.
CREATE TABLE recompute_jobs (
    recompute_job_id        uuid PRIMARY KEY,
    -- "segment", "rfm", "lifecycle", "all".
    scope                   text NOT NULL,
    segment_id              uuid,
    segment_version         bigint NOT NULL DEFAULT 0,
    -- "segment_created", "rule_changed", "config_changed", "requested", "schedule".
    trigger                 text NOT NULL,
    -- "queued", "running", "succeeded", "failed", "superseded".
    state                   text NOT NULL DEFAULT 'queued',
    progress_percent        integer NOT NULL DEFAULT 0,
    segments_total          bigint NOT NULL DEFAULT 0,
    segments_done           bigint NOT NULL DEFAULT 0,
    customers_evaluated     bigint NOT NULL DEFAULT 0,
    entered_count           bigint NOT NULL DEFAULT 0,
    exited_count            bigint NOT NULL DEFAULT 0,
    lifecycle_changed_count bigint NOT NULL DEFAULT 0,
    rfm_group_changed_count bigint NOT NULL DEFAULT 0,
    -- [{"segment_id", "segment_version", "entered_count", "exited_count", "member_count",
    --   "duration_millis"}]
    segment_results         jsonb NOT NULL DEFAULT '[]',
    create_time             timestamptz NOT NULL,
    start_time              timestamptz,
    end_time                timestamptz,
    -- While running: when the running replica last showed life; a stale one is resumed.
    heartbeat_time          timestamptz,
    error_message           text NOT NULL DEFAULT '',
    requester               text NOT NULL
);
CREATE INDEX recompute_jobs_queue ON recompute_jobs (state, create_time);
CREATE INDEX recompute_jobs_segment ON recompute_jobs (segment_id, create_time);

-- Deployment-wide configs, one row each: "rfm", "lifecycle", "evaluation". `value` holds the
-- config as JSON (see store code); the RFM row also holds the last computed thresholds.
CREATE TABLE configs (
    name        text PRIMARY KEY,
    value       jsonb NOT NULL,
    etag        text NOT NULL,
    update_time timestamptz NOT NULL
);

-- Idempotency keys of CreateSegment, UploadStaticMembers, RecomputeSegment and RecomputeAll:
-- unique per calling service, stored with the request's hash and the first response.
CREATE TABLE idempotency_keys (
    caller        text NOT NULL,
    request_id    text NOT NULL,
    method        text NOT NULL,
    request_hash  bytea NOT NULL,
    response      bytea NOT NULL,
    create_time   timestamptz NOT NULL,
    PRIMARY KEY (caller, request_id)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (create_time);

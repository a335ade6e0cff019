-- Computed traits (issue 21, computed_trait.proto): named, versioned aggregates of each
-- customer's custom events, stored per customer like RFM scores and read by rules as
-- "computed.<name>".
--
-- `definition` is the encoded ComputedTrait holding the definition fields of `version`
-- (event_type, aggregate, property, window, where), as rules store encoded Conditions;
-- `aggregate` (count, sum, min, max, average, first_time, last_time, most_frequent), which
-- gives the value type, and `time_dependent` are derived from it and kept as columns for the
-- catalog and the rollover pass.
CREATE TABLE computed_traits (
    name                    text PRIMARY KEY,
    description             text        NOT NULL DEFAULT '',
    version                 bigint      NOT NULL,
    definition              bytea       NOT NULL,
    aggregate               text        NOT NULL,
    time_dependent          boolean     NOT NULL,
    create_time             timestamptz NOT NULL,
    update_time             timestamptz NOT NULL,
    etag                    text        NOT NULL,
    latest_recompute_job_id uuid
);

-- Every version's definition, for GetComputedTrait with a version.
CREATE TABLE computed_trait_versions (
    name        text        NOT NULL REFERENCES computed_traits ON DELETE CASCADE,
    version     bigint      NOT NULL,
    definition  bytea       NOT NULL,
    create_time timestamptz NOT NULL,
    requester   text        NOT NULL,
    PRIMARY KEY (name, version)
);

-- One row per customer with at least one event of the trait's type when it was computed
-- (a customer without one reads the aggregate over nothing: 0 for COUNT and SUM, unset
-- otherwise). At most one of the value columns is set (the one of the measure's type; none
-- when the aggregate is unset). `compute_time` is the evaluation time of the computation that
-- stored this value: later ones that found the same value do not rewrite the row.
CREATE TABLE customer_computed_traits (
    customer_id  text        NOT NULL,
    name         text        NOT NULL REFERENCES computed_traits ON DELETE CASCADE,
    version      bigint      NOT NULL,
    integer_value bigint,
    double_value double precision,
    time_value   timestamptz,
    string_value text,
    compute_time timestamptz NOT NULL,
    PRIMARY KEY (customer_id, name)
);
CREATE INDEX customer_computed_traits_name ON customer_computed_traits (name);

-- COMPUTED_TRAITS and ALL jobs: stored values that changed.
ALTER TABLE recompute_jobs
    ADD COLUMN computed_trait_changed_count bigint NOT NULL DEFAULT 0;

-- Predicted customer value and churn (issue 19): fitted BG/NBD and Gamma-Gamma models, and each
-- customer's predictions from the current one. The config lives in `configs` (name
-- 'prediction'), like RFM's and lifecycle's.

-- One row per fit. The current model is the one with the highest version.
CREATE TABLE prediction_models (
    version                bigint PRIMARY KEY,
    as_of_time             timestamptz NOT NULL,
    currency               text NOT NULL,
    customer_count         bigint NOT NULL,
    repeat_customer_count  bigint NOT NULL,
    bg_r                   double precision NOT NULL,
    bg_alpha               double precision NOT NULL,
    bg_a                   double precision NOT NULL,
    bg_b                   double precision NOT NULL,
    bg_log_likelihood      double precision NOT NULL,
    bg_converged           boolean NOT NULL,
    bg_iterations          integer NOT NULL,
    gg_p                   double precision NOT NULL,
    gg_q                   double precision NOT NULL,
    gg_gamma               double precision NOT NULL,
    gg_log_likelihood      double precision NOT NULL,
    gg_converged           boolean NOT NULL,
    gg_iterations          integer NOT NULL,
    fit_time               timestamptz NOT NULL,
    fit_millis             bigint NOT NULL,
    recompute_job_id       uuid NOT NULL
);

-- Each customer's summary and predictions, from the model `model_version`.
CREATE TABLE customer_predictions (
    customer_id            text PRIMARY KEY,
    model_version          bigint NOT NULL,
    as_of_time             timestamptz NOT NULL,
    repeat_transactions    bigint NOT NULL,
    recency_weeks          double precision NOT NULL,
    age_weeks              double precision NOT NULL,
    mean_value             double precision NOT NULL,
    probability_alive      double precision NOT NULL,
    expected_purchases_90d double precision NOT NULL,
    -- In the model's currency, minor units.
    expected_value_minor   bigint NOT NULL,
    clv_minor              bigint NOT NULL,
    churn_risk             boolean NOT NULL
);

-- A PREDICTION job's T0 (NULL: its start) and, once it succeeded, the version it fitted.
ALTER TABLE recompute_jobs
    ADD COLUMN prediction_as_of_time timestamptz,
    ADD COLUMN prediction_model_version bigint NOT NULL DEFAULT 0;

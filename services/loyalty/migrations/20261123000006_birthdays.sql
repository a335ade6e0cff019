-- Birth months learned from the profiles feed, for the birthday-month earning bonus. Only the
-- month is kept: it is all the rule needs.

CREATE TABLE customer_birthdays (
    customer_id uuid PRIMARY KEY,
    birth_month smallint NOT NULL CHECK (birth_month BETWEEN 1 AND 12)
);

-- Age and days until the next birthday for compiled rules (store::compile), computed exactly
-- as the in-process evaluator does (domain::eval): a 29 February birthday falls on
-- 28 February in years without one. `today` is the evaluation date in the deployment's zone.
CREATE FUNCTION rule_birthday_in(birth date, year integer) RETURNS date
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN extract(month FROM birth) = 2 AND extract(day FROM birth) = 29
             AND NOT (year % 4 = 0 AND (year % 100 <> 0 OR year % 400 = 0))
        THEN make_date(year, 2, 28)
        ELSE make_date(year, extract(month FROM birth)::integer, extract(day FROM birth)::integer)
    END
$$;

CREATE FUNCTION rule_age(birth date, today date) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT extract(year FROM today)::integer - extract(year FROM birth)::integer
         - CASE WHEN today < rule_birthday_in(birth, extract(year FROM today)::integer)
                THEN 1 ELSE 0 END
$$;

CREATE FUNCTION rule_days_until_birthday(birth date, today date) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN rule_birthday_in(birth, extract(year FROM today)::integer) >= today
        THEN rule_birthday_in(birth, extract(year FROM today)::integer) - today
        ELSE rule_birthday_in(birth, extract(year FROM today)::integer + 1) - today
    END
$$;

//! Shared shape rules for identifiers and text fields (slugs, keys, lengths), each returning
//! the description a field violation carries.

/// A lower-case slug of 1–64 characters of a–z, 0–9 and '_' (categories, channels).
pub fn slug(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 64 {
        return Err("must be 1-64 characters of a-z, 0-9 and '_'".to_owned());
    }
    if value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(())
    } else {
        Err("must be 1-64 characters of a-z, 0-9 and '_'".to_owned())
    }
}

/// A key (question or option id): a slug that starts with a letter.
pub fn key(value: &str) -> Result<(), String> {
    slug(value)?;
    if value.bytes().next().is_some_and(|b| b.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err("must start with a letter a-z".to_owned())
    }
}

/// Text of `min`–`max` characters (Unicode scalar values).
pub fn length(value: &str, min: usize, max: usize) -> Result<(), String> {
    let n = value.chars().count();
    if n < min || n > max {
        Err(format!("must be {min}-{max} characters, got {n}"))
    } else {
        Ok(())
    }
}

/// 1–128 printable ASCII characters (request ids, customer ids, assignee ids).
pub fn printable_id(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Err("must be 1-128 printable ASCII characters".to_owned())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_keys() {
        assert!(slug("product_quality").is_ok());
        assert!(slug("Bad").is_err());
        assert!(slug("").is_err());
        assert!(key("nps").is_ok());
        assert!(key("1nps").is_err());
        assert!(printable_id("req-1").is_ok());
        assert!(printable_id("tab\t").is_err());
    }
}

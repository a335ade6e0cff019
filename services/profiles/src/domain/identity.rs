//! External identities and their normalisation, so that "A@Example.com " and "a@example.com"
//! are one identity, stored once and found by either spelling.

use chrono::{DateTime, Utc};

/// Kind of identifier (`IdentityType` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityType {
    /// E-mail address.
    Email = 1,
    /// Phone number, E.164.
    Phone = 2,
    /// Order-system customer id.
    OrderSystemId = 3,
    /// WeChat openid.
    WechatOpenid = 4,
    /// WeChat unionid.
    WechatUnionid = 5,
    /// Loyalty card number.
    LoyaltyCard = 6,
    /// Anything else, namespaced.
    Other = 7,
}

impl IdentityType {
    /// From the proto number; `None` for unspecified or unknown.
    pub fn from_number(n: i32) -> Option<Self> {
        Some(match n {
            1 => Self::Email,
            2 => Self::Phone,
            3 => Self::OrderSystemId,
            4 => Self::WechatOpenid,
            5 => Self::WechatUnionid,
            6 => Self::LoyaltyCard,
            7 => Self::Other,
            _ => return None,
        })
    }

    /// The proto number.
    pub fn number(self) -> i16 {
        self as i16
    }
}

/// A normalised identity: (type, namespace, value) is unique across customers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Kind.
    pub kind: IdentityType,
    /// Issuing system; empty for e-mail and phone.
    pub namespace: String,
    /// The normalised value. Personal data: never log it.
    pub value: String,
    /// When it was attached (set by the store).
    pub create_time: Option<DateTime<Utc>>,
}

/// Which part of an identity is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityViolation {
    /// `identity_type`, `namespace` or `value`.
    pub field: &'static str,
    /// What is accepted.
    pub description: &'static str,
}

fn violation(field: &'static str, description: &'static str) -> IdentityViolation {
    IdentityViolation { field, description }
}

impl Identity {
    /// Normalises and validates an identity as the contract describes, collecting every
    /// violation.
    pub fn parse(kind: i32, namespace: &str, value: &str) -> Result<Self, Vec<IdentityViolation>> {
        let mut violations = Vec::new();
        let kind = IdentityType::from_number(kind);
        if kind.is_none() {
            violations.push(violation("identity_type", "must be a known identity type"));
        }
        let namespace_ok = namespace.len() <= 64
            && namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !namespace_ok {
            violations.push(violation(
                "namespace",
                "must be 1-64 characters of [A-Za-z0-9_.-]",
            ));
        }
        let value = match kind {
            Some(IdentityType::Email) => {
                if !namespace.is_empty() {
                    violations.push(violation(
                        "namespace",
                        "must be empty for e-mail identities",
                    ));
                }
                let email = value.trim().to_lowercase();
                if !is_email(&email) {
                    violations.push(violation(
                        "value",
                        "must be an e-mail address (local@domain, at most 254 characters)",
                    ));
                }
                email
            }
            Some(IdentityType::Phone) => {
                if !namespace.is_empty() {
                    violations.push(violation("namespace", "must be empty for phone identities"));
                }
                let phone: String = value
                    .chars()
                    .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
                    .collect();
                if !is_e164(&phone) {
                    violations.push(violation(
                        "value",
                        "must be an E.164 phone number: + and 8-15 digits, the first not 0",
                    ));
                }
                phone
            }
            Some(IdentityType::WechatOpenid | IdentityType::WechatUnionid) => {
                let v = value.trim().to_owned();
                let ok = !v.is_empty()
                    && v.len() <= 128
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
                if !ok {
                    violations.push(violation(
                        "value",
                        "must be 1-128 characters of [A-Za-z0-9_-]",
                    ));
                }
                v
            }
            Some(other) => {
                if other == IdentityType::Other && namespace.is_empty() {
                    violations.push(violation(
                        "namespace",
                        "is required for IDENTITY_TYPE_OTHER",
                    ));
                }
                let v = value.trim().to_owned();
                let ok =
                    !v.is_empty() && v.chars().count() <= 256 && !v.chars().any(char::is_control);
                if !ok {
                    violations.push(violation("value", "must be 1-256 printable characters"));
                }
                v
            }
            None => value.trim().to_owned(),
        };
        match kind {
            Some(kind) if violations.is_empty() => Ok(Self {
                kind,
                namespace: namespace.to_owned(),
                value,
                create_time: None,
            }),
            _ => Err(violations),
        }
    }

    /// The uniqueness key.
    pub fn key(&self) -> (IdentityType, &str, &str) {
        (self.kind, &self.namespace, &self.value)
    }
}

fn is_email(email: &str) -> bool {
    if email.len() > 254 {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && email.chars().all(|c| !c.is_whitespace() && !c.is_control())
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
}

fn is_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// The mailbox an address reaches, for duplicate detection: Gmail ignores dots and `+tags`
/// in the local part, most providers ignore `+tags`.
pub fn canonical_email(email: &str) -> String {
    let Some((local, domain)) = email.split_once('@') else {
        return email.to_owned();
    };
    let local = local.split('+').next().unwrap_or(local);
    let (local, domain) = if matches!(domain, "gmail.com" | "googlemail.com") {
        (local.replace('.', ""), "gmail.com")
    } else {
        (local.to_owned(), domain)
    };
    format!("{local}@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: i32, namespace: &str, value: &str, expected: Result<&str, &[&str]>) {
        let got = Identity::parse(kind, namespace, value)
            .map(|i| i.value)
            .map_err(|v| v.into_iter().map(|v| v.field).collect::<Vec<_>>());
        match expected {
            Ok(value) => assert_eq!(got, Ok(value.to_owned()), "{value}"),
            Err(fields) => assert_eq!(got.err().as_deref(), Some(fields), "{value}"),
        }
    }

    #[test]
    fn identities_are_normalised_and_checked() {
        check(1, "", " A@Example.COM ", Ok("a@example.com"));
        check(1, "", "not-an-email", Err(&["value"]));
        check(1, "x", "a@b.co", Err(&["namespace"]));
        check(2, "", "+86 138-0013-8000", Ok("+8613800138000"));
        check(2, "", "13800138000", Err(&["value"]));
        check(2, "", "+0123456789", Err(&["value"]));
        check(4, "wx1", " openid_1 ", Ok("openid_1"));
        check(7, "", "abc", Err(&["namespace"]));
        check(0, "", "abc", Err(&["identity_type"]));
    }

    #[test]
    fn canonical_emails_reach_the_same_mailbox() {
        assert_eq!(canonical_email("li.wei+shop@gmail.com"), "liwei@gmail.com");
        assert_eq!(canonical_email("ana+x@example.com"), "ana@example.com");
    }
}

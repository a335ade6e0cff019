//! Service-to-service authentication: signed bearer tokens that name the calling service and
//! its scopes, and the per-method scope policy the auth layer enforces.
//!
//! Tokens are HS256 JWTs (`jsonwebtoken`) signed with the suite's shared key
//! (`CUSTOPS_AUTH_JWT_SECRET`): `sub` is the calling service, `scope` a space-separated list,
//! `aud` the suite's audience, `iss` "custops", `exp` a few minutes ahead. Services mint their
//! own short-lived tokens for outgoing calls ([`TokenIssuer`]); `custops token` mints one for a
//! person at a terminal.
//!
//! Which scope each RPC needs is declared once, in the RPC's doc comment in `proto/`, and
//! compiled into [`custops_contracts::METHOD_SCOPES`]. Health and reflection are open.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Environment};
use crate::service::ServiceKind;

/// The issuer every custops token names.
pub const ISSUER: &str = "custops";
/// The audience tokens name unless `CUSTOPS_AUTH_AUDIENCE` says otherwise.
pub const DEFAULT_AUDIENCE: &str = "custops";
/// Shortest accepted signing key: HS256 is only as strong as its key.
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated between services when checking `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;
/// Longest a token may be valid (`exp` − `iat`) unless `CUSTOPS_AUTH_MAX_TOKEN_LIFETIME_SECS`
/// says otherwise: a leaked token stops working within a day.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Bounds of `CUSTOPS_AUTH_MAX_TOKEN_LIFETIME_SECS`: a minute to 30 days.
const MAX_TOKEN_LIFETIME_RANGE: (u64, u64) = (60, 30 * 24 * 3600);

/// RPC paths that need no token: health checks (load balancers, Kubernetes probes) and
/// reflection (grpcurl, `buf curl`).
const OPEN_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Whether and how calls are authenticated.
#[derive(Clone)]
pub enum AuthSettings {
    /// Every call (but health and reflection) needs a valid token with the method's scope.
    Jwt {
        /// The shared HS256 key.
        secret: SecretString,
        /// The audience tokens must name.
        audience: String,
        /// Longest validity (`exp` − `iat`) a token may claim; longer ones are refused, and
        /// the issuer will not mint them.
        max_lifetime: Duration,
    },
    /// No checks at all. Only by explicit choice (`CUSTOPS_AUTH_MODE=disabled`, `custops dev`,
    /// tests), and logged loudly at start-up.
    Disabled,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthSettings::Jwt {
                audience,
                max_lifetime,
                ..
            } => f
                .debug_struct("Jwt")
                .field("secret", &"[redacted]")
                .field("audience", audience)
                .field("max_lifetime", max_lifetime)
                .finish(),
            AuthSettings::Disabled => f.write_str("Disabled"),
        }
    }
}

impl AuthSettings {
    /// Reads `CUSTOPS_AUTH_MODE` (`jwt`, the default, or `disabled`), `CUSTOPS_AUTH_JWT_SECRET`
    /// (required for `jwt`), `CUSTOPS_AUTH_AUDIENCE` and `CUSTOPS_AUTH_MAX_TOKEN_LIFETIME_SECS`.
    pub fn from_env(env: &Environment) -> Result<Self, ConfigError> {
        let mode = env.get("CUSTOPS_AUTH_MODE").unwrap_or("jwt").trim();
        match mode.to_ascii_lowercase().as_str() {
            "disabled" => Ok(AuthSettings::Disabled),
            "jwt" => {
                let secret = env
                    .get("CUSTOPS_AUTH_JWT_SECRET")
                    .ok_or(ConfigError::Missing {
                        var: "CUSTOPS_AUTH_JWT_SECRET".to_owned(),
                        hint: "set the shared token key (at least 32 bytes), or CUSTOPS_AUTH_MODE=disabled for local use",
                    })?;
                let max_lifetime = match env.get("CUSTOPS_AUTH_MAX_TOKEN_LIFETIME_SECS") {
                    None => DEFAULT_MAX_TOKEN_LIFETIME,
                    Some(text) => text
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|secs| {
                            (MAX_TOKEN_LIFETIME_RANGE.0..=MAX_TOKEN_LIFETIME_RANGE.1).contains(secs)
                        })
                        .map(Duration::from_secs)
                        .ok_or_else(|| ConfigError::Invalid {
                            var: "CUSTOPS_AUTH_MAX_TOKEN_LIFETIME_SECS".to_owned(),
                            reason: format!(
                                "`{text}` is not a number of seconds from {} to {}",
                                MAX_TOKEN_LIFETIME_RANGE.0, MAX_TOKEN_LIFETIME_RANGE.1
                            ),
                        })?,
                };
                let settings = Self::jwt(
                    secret,
                    env.get("CUSTOPS_AUTH_AUDIENCE").unwrap_or(DEFAULT_AUDIENCE),
                )
                .map_err(|reason| ConfigError::Invalid {
                    var: "CUSTOPS_AUTH_JWT_SECRET".to_owned(),
                    reason,
                })?;
                Ok(settings.with_max_lifetime(max_lifetime))
            }
            other => Err(ConfigError::Invalid {
                var: "CUSTOPS_AUTH_MODE".to_owned(),
                reason: format!("`{other}` is not an auth mode (use jwt or disabled)"),
            }),
        }
    }

    /// JWT auth with this key and audience; the key must be at least 32 bytes.
    pub fn jwt(secret: &str, audience: &str) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the key is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                secret.len()
            ));
        }
        Ok(AuthSettings::Jwt {
            secret: SecretString::from(secret.to_owned()),
            audience: audience.to_owned(),
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        })
    }

    /// The same settings with another longest token validity (no effect when disabled).
    pub fn with_max_lifetime(self, lifetime: Duration) -> Self {
        match self {
            AuthSettings::Jwt {
                secret, audience, ..
            } => AuthSettings::Jwt {
                secret,
                audience,
                max_lifetime: lifetime,
            },
            AuthSettings::Disabled => AuthSettings::Disabled,
        }
    }

    /// Whether calls are checked.
    pub fn is_enabled(&self) -> bool {
        matches!(self, AuthSettings::Jwt { .. })
    }
}

/// The claims of a custops token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The calling service (or person, for tokens minted by `custops token`).
    pub sub: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Audience: one, or several (RFC 7519 allows both forms).
    pub aud: Audience,
    /// Issuer.
    pub iss: String,
    /// Issued at, seconds since the epoch. Required: the token's lifetime is measured from it.
    pub iat: u64,
    /// Not valid before, seconds since the epoch; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// The `aud` claim, a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "custops"`.
    One(String),
    /// `"aud": ["custops", "other"]`.
    Many(Vec<String>),
}

/// The service name of every caller of a server with auth disabled.
pub const ANONYMOUS_SERVICE: &str = "anonymous";

/// Who is calling, as the auth layer established it. Handlers read it from the request's
/// extensions (`request.extensions().get::<Caller>()`); loyalty keys idempotency records by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The calling service's name from the token, or `anonymous` when auth is disabled.
    pub service: String,
    /// The scopes the token grants (empty when auth is disabled).
    pub scopes: Vec<String>,
}

impl Caller {
    /// The identity of calls on a server with auth disabled.
    pub fn anonymous() -> Self {
        Self {
            service: ANONYMOUS_SERVICE.to_owned(),
            scopes: Vec::new(),
        }
    }

    /// The name of the service calling `request`, as the auth layer established it;
    /// "anonymous" on a server with auth disabled. Idempotency keys are scoped by it.
    pub fn service_of<T>(request: &tonic::Request<T>) -> String {
        request
            .extensions()
            .get::<Caller>()
            .map_or_else(|| Self::anonymous().service, |c| c.service.clone())
    }

    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a token was refused. The `Display` text is what the caller sees.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `authorization: Bearer …` metadata.
    #[error("missing bearer token (metadata `authorization: Bearer <token>`)")]
    MissingToken,
    /// The token is expired.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, wrong audience or issuer, not yet valid, issued in the future, valid for
    /// longer than allowed, malformed.
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// Valid token, but without the method's scope.
    #[error("the caller `{caller}` lacks scope `{scope}`")]
    MissingScope {
        /// Who called.
        caller: String,
        /// What the method needs.
        scope: String,
    },
    /// The method has no declared scope: refused rather than left open.
    #[error("the method declares no scope")]
    Undeclared,
}

impl AuthError {
    /// UNAUTHENTICATED for missing or bad credentials, PERMISSION_DENIED for missing rights.
    pub fn code(&self) -> tonic::Code {
        match self {
            AuthError::MissingToken | AuthError::Expired | AuthError::Invalid(_) => {
                tonic::Code::Unauthenticated
            }
            AuthError::MissingScope { .. } | AuthError::Undeclared => tonic::Code::PermissionDenied,
        }
    }
}

/// Checks tokens.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    max_lifetime: Duration,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for tokens signed with `secret` for `audience`, valid for at most
    /// [`DEFAULT_MAX_TOKEN_LIFETIME`].
    pub fn new(secret: &SecretString, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }

    /// The same verifier refusing tokens valid for longer than `lifetime`.
    pub fn with_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// The caller a token proves, or why it proves nothing.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |error| match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".to_owned()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".to_owned()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".to_owned()),
                ErrorKind::InvalidAlgorithm => {
                    AuthError::Invalid("unsupported algorithm".to_owned())
                }
                ErrorKind::ImmatureSignature => {
                    AuthError::Invalid("not yet valid (nbf)".to_owned())
                }
                _ => AuthError::Invalid("malformed token".to_owned()),
            },
        )?;
        // jsonwebtoken checks `exp` and `nbf`; `iat` and the lifetime are ours to check.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        if data.claims.iat > now + LEEWAY_SECS {
            return Err(AuthError::Invalid("issued in the future (iat)".to_owned()));
        }
        if data.claims.exp.saturating_sub(data.claims.iat) > self.max_lifetime.as_secs() {
            return Err(AuthError::Invalid(format!(
                "valid for longer than {} s (exp - iat)",
                self.max_lifetime.as_secs()
            )));
        }
        Ok(Caller {
            service: data.claims.sub,
            scopes: data
                .claims
                .scope
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// Mints tokens: for a service's own outgoing calls, and for `custops token`.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    audience: String,
    max_lifetime: Duration,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer signing with `secret` for `audience`.
    pub fn new(secret: &SecretString, audience: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.expose_secret().as_bytes()),
            audience: audience.to_owned(),
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }

    /// The issuer for these settings, or `None` when auth is disabled.
    pub fn from_settings(settings: &AuthSettings) -> Option<Self> {
        match settings {
            AuthSettings::Jwt {
                secret,
                audience,
                max_lifetime,
            } => Some(Self {
                max_lifetime: *max_lifetime,
                ..Self::new(secret, audience)
            }),
            AuthSettings::Disabled => None,
        }
    }

    /// A token for `subject` with `scopes`, valid for `ttl` from now; refused when `ttl` is
    /// longer than the services accept.
    pub fn mint(&self, subject: &str, scopes: &[&str], ttl: Duration) -> Result<String, AuthError> {
        if ttl > self.max_lifetime {
            return Err(AuthError::Invalid(format!(
                "a token may be valid for at most {} s (CUSTOPS_AUTH_MAX_TOKEN_LIFETIME_SECS)",
                self.max_lifetime.as_secs()
            )));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AuthError::Invalid("the system clock is before 1970".to_owned()))?
            .as_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            scope: scopes.join(" "),
            aud: Audience::One(self.audience.clone()),
            iss: ISSUER.to_owned(),
            iat: now,
            nbf: None,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|error| AuthError::Invalid(format!("could not sign: {error}")))
    }
}

/// What a method requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health, reflection).
    Open,
    /// A token with this scope.
    Scope(String),
    /// A method of a served API without a declared scope: refused.
    Undeclared,
    /// Not a method of this server; tonic answers UNIMPLEMENTED after authentication.
    Unknown,
}

/// The scope each method of one server requires, from the contracts' declarations.
#[derive(Debug, Clone)]
pub struct ScopePolicy {
    scopes: Arc<HashMap<String, String>>,
    served: Arc<Vec<String>>,
}

impl ScopePolicy {
    /// The policy of `service` serving the APIs named in `api_names` (full service names).
    /// The event feed's `{service}` placeholder becomes this service's name.
    pub fn for_service(service: ServiceKind, api_names: &[&str]) -> Self {
        let scopes = custops_contracts::METHOD_SCOPES
            .iter()
            .map(|(path, scope)| {
                (
                    (*path).to_owned(),
                    scope.replace("{service}", service.name()),
                )
            })
            .collect();
        Self {
            scopes: Arc::new(scopes),
            served: Arc::new(api_names.iter().map(|name| format!("/{name}/")).collect()),
        }
    }

    /// What calling `path` (`/package.Service/Method`) requires.
    pub fn access(&self, path: &str) -> Access {
        if OPEN_PREFIXES.iter().any(|prefix| path.starts_with(prefix)) {
            return Access::Open;
        }
        match self.scopes.get(path) {
            Some(scope) => Access::Scope(scope.clone()),
            None if self.served.iter().any(|prefix| path.starts_with(prefix)) => Access::Undeclared,
            None => Access::Unknown,
        }
    }
}

/// Every scope some method of some service requires, sorted: the names a token may usefully
/// carry (`custops token` refuses others). The event feed's `{service}` placeholder is
/// expanded for each service.
pub fn known_scopes() -> Vec<String> {
    let mut scopes: Vec<String> = custops_contracts::METHOD_SCOPES
        .iter()
        .flat_map(|(_, scope)| {
            ServiceKind::ALL
                .into_iter()
                .map(move |service| scope.replace("{service}", service.name()))
        })
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

/// The check the auth layer runs on every call: the caller `authorization` proves, if it may
/// call `path`.
#[derive(Debug, Clone)]
pub struct Authenticator {
    verifier: Option<TokenVerifier>,
    policy: ScopePolicy,
}

impl Authenticator {
    /// Checks tokens per `settings` against `policy`.
    pub fn new(settings: &AuthSettings, policy: ScopePolicy) -> Self {
        let verifier = match settings {
            AuthSettings::Jwt {
                secret,
                audience,
                max_lifetime,
            } => Some(TokenVerifier::new(secret, audience).with_max_lifetime(*max_lifetime)),
            AuthSettings::Disabled => None,
        };
        Self { verifier, policy }
    }

    /// The caller, or why the call is refused. `authorization` is the raw metadata value.
    pub fn authorize(&self, path: &str, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Caller::anonymous());
        };
        let access = self.policy.access(path);
        if access == Access::Open {
            return Ok(Caller::anonymous());
        }
        let token = authorization
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::MissingToken)?;
        let caller = verifier.verify(token)?;
        match access {
            Access::Scope(scope) if caller.has_scope(&scope) => Ok(caller),
            Access::Scope(scope) => Err(AuthError::MissingScope {
                caller: caller.service,
                scope,
            }),
            Access::Undeclared => Err(AuthError::Undeclared),
            Access::Open | Access::Unknown => Ok(caller),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const EARN: &str = "/custops.loyalty.v1.LoyaltyService/EarnPoints";

    fn secret() -> SecretString {
        SecretString::from(SECRET.to_owned())
    }

    fn authenticator() -> Authenticator {
        let settings =
            AuthSettings::jwt(SECRET, DEFAULT_AUDIENCE).unwrap_or(AuthSettings::Disabled);
        Authenticator::new(
            &settings,
            ScopePolicy::for_service(
                ServiceKind::Loyalty,
                &[
                    "custops.loyalty.v1.LoyaltyService",
                    "custops.common.v1.EventFeedService",
                ],
            ),
        )
    }

    fn bearer(scopes: &[&str]) -> String {
        let token = TokenIssuer::new(&secret(), DEFAULT_AUDIENCE)
            .mint("feedback", scopes, Duration::from_secs(60))
            .unwrap_or_default();
        format!("Bearer {token}")
    }

    #[test]
    fn every_rpc_of_the_contracts_declares_a_scope() {
        let policy = ScopePolicy::for_service(ServiceKind::Loyalty, &[]);
        assert_eq!(
            policy.access(EARN),
            Access::Scope("loyalty.points.write".to_owned())
        );
        assert_eq!(
            policy.access("/custops.common.v1.EventFeedService/Subscribe"),
            Access::Scope("loyalty.events.read".to_owned())
        );
        assert!(custops_contracts::METHOD_SCOPES.len() > 100);
    }

    #[test]
    fn the_right_scope_lets_the_caller_in_and_names_it() {
        let caller = authenticator().authorize(EARN, Some(&bearer(&["loyalty.points.write"])));
        assert_eq!(caller.map(|c| c.service), Ok("feedback".to_owned()));
    }

    #[test]
    fn refusals_say_unauthenticated_or_permission_denied() {
        let auth = authenticator();
        let code = |header: Option<&str>| auth.authorize(EARN, header).map_err(|e| e.code()).err();
        use tonic::Code::{PermissionDenied, Unauthenticated};
        assert_eq!(code(None), Some(Unauthenticated));
        assert_eq!(code(Some("Bearer not-a-jwt")), Some(Unauthenticated));
        assert_eq!(
            code(Some(&bearer(&["loyalty.read"]))),
            Some(PermissionDenied)
        );

        let other_key = SecretString::from("another-key-another-key-another-key".to_owned());
        let forged = TokenIssuer::new(&other_key, DEFAULT_AUDIENCE)
            .mint(
                "feedback",
                &["loyalty.points.write"],
                Duration::from_secs(60),
            )
            .unwrap_or_default();
        assert_eq!(
            code(Some(&format!("Bearer {forged}"))),
            Some(Unauthenticated)
        );

        let wrong_audience = TokenIssuer::new(&secret(), "elsewhere")
            .mint(
                "feedback",
                &["loyalty.points.write"],
                Duration::from_secs(60),
            )
            .unwrap_or_default();
        assert_eq!(
            code(Some(&format!("Bearer {wrong_audience}"))),
            Some(Unauthenticated)
        );
    }

    #[test]
    fn an_expired_token_is_refused_beyond_the_leeway() {
        let issuer = TokenIssuer::new(&secret(), DEFAULT_AUDIENCE);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = Claims {
            sub: "feedback".to_owned(),
            scope: "loyalty.points.write".to_owned(),
            aud: Audience::One(DEFAULT_AUDIENCE.to_owned()),
            iss: ISSUER.to_owned(),
            iat: now - 600,
            nbf: None,
            exp: now - LEEWAY_SECS - 60,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &issuer.key)
            .unwrap_or_default();
        let result = authenticator().authorize(EARN, Some(&format!("Bearer {token}")));
        assert_eq!(result, Err(AuthError::Expired));
    }

    #[test]
    fn health_and_reflection_need_no_token() {
        let auth = authenticator();
        assert!(auth.authorize("/grpc.health.v1.Health/Check", None).is_ok());
        assert!(
            auth.authorize(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn settings_need_an_explicit_choice_and_a_long_key() {
        let env = |pairs: &[(&str, &str)]| {
            AuthSettings::from_env(&Environment::from_pairs(pairs.iter().copied()))
                .map_err(|e| e.var().to_owned())
                .map(|s| s.is_enabled())
        };
        assert_eq!(env(&[]), Err("CUSTOPS_AUTH_JWT_SECRET".to_owned()));
        assert_eq!(
            env(&[("CUSTOPS_AUTH_JWT_SECRET", "short")]),
            Err("CUSTOPS_AUTH_JWT_SECRET".to_owned())
        );
        assert_eq!(env(&[("CUSTOPS_AUTH_JWT_SECRET", SECRET)]), Ok(true));
        assert_eq!(env(&[("CUSTOPS_AUTH_MODE", "disabled")]), Ok(false));
        assert_eq!(
            env(&[("CUSTOPS_AUTH_MODE", "off")]),
            Err("CUSTOPS_AUTH_MODE".to_owned())
        );
    }
}

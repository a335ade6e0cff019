//! Keyset paging, one way for every List method: [`PageTokens::page`] reads a request's
//! `page_size` and `page_token` into a [`Page`], the handler reads [`Page::fetch`] rows after
//! [`Page::after`], and [`Page::finish`] cuts them to the page and makes the next token — only
//! when more rows followed, so a listing never ends on an empty page. A token is bound to the
//! request minus its paging fields ([`PagedRequest`]).
//!
//! A list answers the first page and a `next_page_token` holding the keyset cursor where the
//! next page starts (e.g. the last row's `(create_time, id)`). The token must be opaque to
//! callers and tamper-evident: a caller who edits it could otherwise skip rows, or replay a
//! cursor against different filters and page through rows the filters exclude. So a token is
//!
//! ```text
//! base64url_nopad( version(1 byte) ‖ cursor as JSON ‖ HMAC-SHA256 tag (32 bytes) )
//! tag = HMAC(k, version ‖ len(fingerprint) as u32 BE ‖ fingerprint ‖ cursor JSON)
//! k   = HMAC(secret, "custops page token key v1")
//! ```
//!
//! The *query fingerprint* is a string the list method builds from its filters (and order);
//! it is not stored in the token but covered by the tag, so a token only decodes for the
//! query that issued it. Tokens are signed, not encrypted: the cursor is readable to a caller
//! who base64-decodes it, which is fine for keys the caller has already seen in the previous
//! page. They carry no expiry, and survive restarts and replicas only when every replica has
//! the same `CUSTOPS_PAGE_TOKEN_SECRET`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;
use tonic::Status;

use crate::config::{ConfigError, Environment};
use crate::error::{ServiceError, Violations};

/// Name of the request field a bad token is reported on.
pub const PAGE_TOKEN_FIELD: &str = "page_token";
/// Name of the request field a bad page size is reported on.
pub const PAGE_SIZE_FIELD: &str = "page_size";
/// `page_size` used when the caller sends 0 (proto3's "not set").
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest `page_size` accepted.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The variable holding the signing secret.
pub const SECRET_VAR: &str = "CUSTOPS_PAGE_TOKEN_SECRET";
/// Shortest accepted secret, in bytes: HMAC-SHA256 wants at least its output size of entropy.
pub const MIN_SECRET_LEN: usize = 32;

/// First byte of every token; a new layout gets a new version so old tokens fail cleanly.
const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
/// Tokens longer than this are refused before any decoding work (a cursor is a few keys).
const MAX_TOKEN_LEN: usize = 4096;
/// Separates this use of the secret from any other use of the same bytes.
const KEY_CONTEXT: &[u8] = b"custops page token key v1";

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks page tokens. Cheap to clone; one per process is enough.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret.
        f.debug_struct("PageTokens").finish_non_exhaustive()
    }
}

/// Whether this is the process's first key made for want of the secret: the warning is said
/// once, not once per service of a process hosting several (`custops dev`).
fn first_unset_secret() -> bool {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
}

impl PageTokens {
    /// Tokens signed with a key derived from `secret`. Every replica that may receive a token
    /// another issued must use the same secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = new_mac(secret);
        mac.update(KEY_CONTEXT);
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// Reads `CUSTOPS_PAGE_TOKEN_SECRET` (at least 32 bytes). When it is unset, a random key is
    /// made for this process and a warning says that tokens will not survive a restart or work
    /// across replicas: fine for development, wrong for a scaled deployment.
    pub fn from_env(env: &Environment) -> Result<Self, ConfigError> {
        match env.get(SECRET_VAR) {
            Some(secret) if secret.len() < MIN_SECRET_LEN => Err(ConfigError::Invalid {
                var: SECRET_VAR.to_owned(),
                reason: format!("must be at least {MIN_SECRET_LEN} bytes long"),
            }),
            Some(secret) => Ok(Self::new(secret.as_bytes())),
            None => {
                if first_unset_secret() {
                    tracing::warn!(
                        "{SECRET_VAR} is not set: page tokens are signed with a random \
                         per-process key and will not survive a restart or work across replicas"
                    );
                }
                Ok(Self::random())
            }
        }
    }

    /// Tokens signed with a random key, valid only in this process.
    pub fn random() -> Self {
        // Two v4 UUIDs are 244 bits from the operating system's CSPRNG (uuid uses getrandom),
        // which spares a dependency on a random-number crate for one key.
        let mut secret = [0_u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self::new(&secret)
    }

    /// The token for `cursor` under the query `query_fingerprint`.
    ///
    /// Fails only if `cursor`'s `Serialize` implementation fails (e.g. a map with non-string
    /// keys): a programming error, for `ServiceError::internal`.
    pub fn encode<C: Serialize>(
        &self,
        query_fingerprint: &str,
        cursor: &C,
    ) -> Result<String, serde_json::Error> {
        let json = serde_json::to_vec(cursor)?;
        let tag = self.tag(query_fingerprint, &json);
        let mut raw = Vec::with_capacity(1 + json.len() + TAG_LEN);
        raw.push(VERSION);
        raw.extend_from_slice(&json);
        raw.extend_from_slice(&tag);
        Ok(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The cursor in `token`, if this service issued it for the query `query_fingerprint`.
    pub fn decode<C: DeserializeOwned>(
        &self,
        query_fingerprint: &str,
        token: &str,
    ) -> Result<C, PageTokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(PageTokenError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| PageTokenError::Malformed)?;
        let (&version, rest) = raw.split_first().ok_or(PageTokenError::Malformed)?;
        if version != VERSION {
            return Err(PageTokenError::Malformed);
        }
        let json_len = rest
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(PageTokenError::Malformed)?;
        let (json, tag) = rest.split_at(json_len);
        let mac = self.mac(query_fingerprint, json);
        // Constant-time comparison: the tag must not be guessable byte by byte.
        mac.verify_slice(tag)
            .map_err(|_| PageTokenError::NotIssuedForThisQuery)?;
        // A signed cursor that no longer parses was issued by a build with another cursor type.
        serde_json::from_slice(json).map_err(|_| PageTokenError::Malformed)
    }

    fn mac(&self, query_fingerprint: &str, json: &[u8]) -> HmacSha256 {
        let mut mac = new_mac(&self.key);
        mac.update(&[VERSION]);
        // The length prefix keeps (fingerprint, cursor) pairs from sliding into each other.
        let fingerprint_len = u32::try_from(query_fingerprint.len()).unwrap_or(u32::MAX);
        mac.update(&fingerprint_len.to_be_bytes());
        mac.update(query_fingerprint.as_bytes());
        mac.update(json);
        mac
    }

    fn tag(&self, query_fingerprint: &str, json: &[u8]) -> [u8; TAG_LEN] {
        self.mac(query_fingerprint, json)
            .finalize()
            .into_bytes()
            .into()
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed), so this cannot fail; the
    // fallback only satisfies the type.
    <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()))
}

/// A `page_token` that cannot be used: `INVALID_ARGUMENT` on the field `page_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    /// Not a token this service issues: bad encoding, unknown version, truncated.
    #[error("page_token is not a valid page token; pass the next_page_token of a previous page")]
    Malformed,
    /// Edited, signed with another key, or issued for a list call with other filters.
    #[error(
        "page_token was not issued for this request; list calls must repeat the filters of \
         the call that returned the token"
    )]
    NotIssuedForThisQuery,
}

impl PageTokenError {
    /// The request field at fault: always `page_token`.
    pub fn field(&self) -> &'static str {
        PAGE_TOKEN_FIELD
    }

    /// What the caller should do, in words.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl From<PageTokenError> for ServiceError {
    fn from(error: PageTokenError) -> Self {
        ServiceError::invalid_argument(error.field(), error.message())
    }
}

/// For handlers that use `?` on a token directly: the same status as through `ServiceError`.
impl From<PageTokenError> for Status {
    fn from(error: PageTokenError) -> Self {
        ServiceError::from(error).into()
    }
}

/// A `page_size` outside 0–1000: `INVALID_ARGUMENT` on the field `page_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "page_size must be between 0 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}), got {requested}"
)]
pub struct PageSizeError {
    /// What the caller sent.
    pub requested: i32,
}

impl PageSizeError {
    /// The request field at fault: always `page_size`.
    pub fn field(&self) -> &'static str {
        PAGE_SIZE_FIELD
    }

    /// What the caller should do, in words.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl From<PageSizeError> for ServiceError {
    fn from(error: PageSizeError) -> Self {
        ServiceError::invalid_argument(error.field(), error.message())
    }
}

/// For handlers that use `?` on a page size directly.
impl From<PageSizeError> for Status {
    fn from(error: PageSizeError) -> Self {
        ServiceError::from(error).into()
    }
}

/// Applies the suite's `page_size` convention (`proto/README.md`): 0 means 50, 1–1000 are
/// taken as given, anything else is refused.
pub fn page_size(requested: i32) -> Result<usize, PageSizeError> {
    match usize::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(PageSizeError { requested }),
    }
}

/// A list request: its paging fields, and the rest of it, which a page token is bound to.
pub trait PagedRequest: prost::Message + Clone + Sized {
    /// The `page_size` field.
    fn page_size(&self) -> i32;
    /// The `page_token` field.
    fn page_token(&self) -> &str;
    /// The request without its paging fields: what every page of one listing repeats.
    fn without_paging(&self) -> Self;
}

/// Implements [`PagedRequest`] for list requests with `page_size` and `page_token` fields.
macro_rules! paged_requests {
    ($($request:ty),* $(,)?) => {$(
        impl PagedRequest for $request {
            fn page_size(&self) -> i32 {
                self.page_size
            }
            fn page_token(&self) -> &str {
                &self.page_token
            }
            fn without_paging(&self) -> Self {
                let mut request = self.clone();
                request.page_size = 0;
                request.page_token.clear();
                request
            }
        }
    )*};
}

mod paged {
    use super::PagedRequest;
    use custops_contracts::custops::{common, feedback, loyalty, profiles, segmentation};

    paged_requests!(
        common::v1::ListFeedConsumersRequest,
        profiles::v1::ListCustomersRequest,
        profiles::v1::ListActivitiesRequest,
        profiles::v1::ListAttributeDefinitionsRequest,
        profiles::v1::ListEventTypesRequest,
        profiles::v1::ListConsentChangesRequest,
        profiles::v1::ListMergesRequest,
        segmentation::v1::ListSegmentsRequest,
        segmentation::v1::ListSegmentVersionsRequest,
        segmentation::v1::ListRecomputeJobsRequest,
        segmentation::v1::ListFieldsRequest,
        segmentation::v1::ListComputedTraitsRequest,
        loyalty::v1::ListProgramsRequest,
        loyalty::v1::ListMembersRequest,
        loyalty::v1::ListPointLotsRequest,
        loyalty::v1::ListLedgerEntriesRequest,
        loyalty::v1::ListTierChangesRequest,
        loyalty::v1::ListRewardsRequest,
        loyalty::v1::ListRewardRedemptionsRequest,
        feedback::v1::ListSurveysRequest,
        feedback::v1::ListInvitationsRequest,
        feedback::v1::ListResponsesRequest,
        feedback::v1::ListTicketsRequest,
        feedback::v1::ListTicketHistoryRequest,
        feedback::v1::ListReviewsRequest,
    );
}

/// One page of a keyset listing: where it starts and how many rows it holds. Made by
/// [`PageTokens::page`] from the request; [`Page::finish`] cuts the rows read and makes the
/// next page's token.
///
/// Every list pages one way: read [`Page::fetch`] rows (one more than the page holds) after
/// [`Page::after`]; if the extra row came, another page follows and the token holds the
/// cursor of the page's last row. So a listing never ends with an empty page, and a token is
/// bound to the request minus its paging fields: sent with other filters, it is refused.
#[derive(Debug)]
pub struct Page<'t, C> {
    /// The cursor of the previous page's last row; `None` on the first page.
    pub after: Option<C>,
    /// Rows the page holds.
    pub size: usize,
    tokens: &'t PageTokens,
    query: String,
}

impl PageTokens {
    /// The page `request` asks for: its `page_size` checked and its `page_token` decoded for
    /// this request; INVALID_ARGUMENT naming each of the two that is bad.
    pub fn page<R: PagedRequest, C: DeserializeOwned>(
        &self,
        request: &R,
    ) -> Result<Page<'_, C>, ServiceError> {
        let mut violations = Violations::new();
        let size = violations.take(
            PAGE_SIZE_FIELD,
            page_size(request.page_size()).map_err(|e| e.message()),
        );
        let query = query_fingerprint(request);
        let after = match request.page_token() {
            "" => None,
            token => violations.take(
                PAGE_TOKEN_FIELD,
                self.decode(&query, token).map_err(|e| e.message()),
            ),
        };
        violations.into_result()?;
        Ok(Page {
            after,
            size: size.unwrap_or(DEFAULT_PAGE_SIZE),
            tokens: self,
            query,
        })
    }
}

impl<C: Serialize> Page<'_, C> {
    /// How many rows to read: one more than the page holds, to know whether more follow.
    pub fn fetch(&self) -> usize {
        self.size + 1
    }

    /// [`Page::fetch`] as SQL's `LIMIT` takes it.
    pub fn limit(&self) -> i64 {
        i64::try_from(self.fetch()).unwrap_or(i64::MAX)
    }

    /// Cuts `rows` (read with [`Page::fetch`]) to the page and returns the next page's token:
    /// the cursor of the page's last row when more rows followed, else empty.
    pub fn finish<T>(
        &self,
        rows: &mut Vec<T>,
        cursor: impl FnOnce(&T) -> C,
    ) -> Result<String, ServiceError> {
        if rows.len() <= self.size {
            return Ok(String::new());
        }
        rows.truncate(self.size);
        match rows.last() {
            Some(last) => self
                .tokens
                .encode(&self.query, &cursor(last))
                .map_err(ServiceError::internal),
            None => Ok(String::new()),
        }
    }
}

/// What a token is bound to: the request type and its encoding without the paging fields.
fn query_fingerprint<R: PagedRequest>(request: &R) -> String {
    use sha2::Digest as _;
    let mut hash = Sha256::new();
    hash.update(std::any::type_name::<R>().as_bytes());
    hash.update([0]);
    hash.update(request.without_paging().encode_to_vec());
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn the_unset_secret_is_warned_of_once_per_process() {
        // Whatever an earlier test did, after one key made without the secret no other warns.
        let _ = first_unset_secret();
        assert!(!first_unset_secret());
        assert!(!first_unset_secret());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Cursor {
        create_time_micros: i64,
        id: String,
    }

    fn cursor() -> Cursor {
        Cursor {
            create_time_micros: 1_754_000_000_000_000,
            id: "0198a1b2-0000-7000-8000-000000000001".to_owned(),
        }
    }

    const QUERY: &str = "customers|tier=gold|order=create_time";

    fn tokens() -> PageTokens {
        PageTokens::new(b"a test secret that is long enough to sign with")
    }

    fn issued() -> String {
        tokens().encode(QUERY, &cursor()).unwrap_or_default()
    }

    #[test]
    fn a_token_round_trips_and_is_url_safe() {
        let token = issued();
        assert!(!token.is_empty());
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert_eq!(tokens().decode::<Cursor>(QUERY, &token), Ok(cursor()));
    }

    #[test]
    fn any_changed_byte_is_detected() {
        let raw = URL_SAFE_NO_PAD.decode(issued()).unwrap_or_default();
        assert!(raw.len() > TAG_LEN + 1);
        for i in 0..raw.len() {
            let mut tampered = raw.clone();
            tampered[i] ^= 0x01;
            let token = URL_SAFE_NO_PAD.encode(&tampered);
            let decoded = tokens().decode::<Cursor>(QUERY, &token);
            assert!(decoded.is_err(), "byte {i} changed and still accepted");
        }
    }

    #[test]
    fn a_token_only_decodes_for_its_query_and_key() {
        let token = issued();
        assert_eq!(
            tokens().decode::<Cursor>("customers|tier=silver|order=create_time", &token),
            Err(PageTokenError::NotIssuedForThisQuery)
        );
        let other_key = PageTokens::new(b"another secret, also long enough to sign with");
        assert_eq!(
            other_key.decode::<Cursor>(QUERY, &token),
            Err(PageTokenError::NotIssuedForThisQuery)
        );
        assert!(
            PageTokens::random()
                .decode::<Cursor>(QUERY, &token)
                .is_err()
        );
    }

    #[test]
    fn fingerprint_and_cursor_cannot_trade_bytes() {
        // Same concatenation, different split: must give different tags.
        let t = tokens();
        let a = t.tag("ab", b"c");
        let b = t.tag("a", b"bc");
        assert_ne!(a, b);
    }

    #[test]
    fn garbage_is_malformed() {
        let check = |token: &str| {
            assert_eq!(
                tokens().decode::<Cursor>(QUERY, token),
                Err(PageTokenError::Malformed),
                "{token:?}"
            );
        };
        check("");
        check("not base64 at all!");
        check("AAAA");
        check(&"A".repeat(MAX_TOKEN_LEN + 1));
        // Right length, wrong version.
        let mut raw = URL_SAFE_NO_PAD.decode(issued()).unwrap_or_default();
        raw[0] = 2;
        check(&URL_SAFE_NO_PAD.encode(raw));
    }

    #[test]
    fn a_signed_cursor_of_another_shape_is_malformed() {
        let token = tokens().encode(QUERY, &42_u32).unwrap_or_default();
        assert_eq!(
            tokens().decode::<Cursor>(QUERY, &token),
            Err(PageTokenError::Malformed)
        );
    }

    #[test]
    fn page_size_follows_the_convention() {
        let check = |requested: i32, expected: Option<usize>| {
            assert_eq!(page_size(requested).ok(), expected, "{requested}");
        };
        check(0, Some(50));
        check(1, Some(1));
        check(50, Some(50));
        check(1000, Some(1000));
        check(1001, None);
        check(-1, None);
        check(i32::MIN, None);
        check(i32::MAX, None);
    }

    fn bad_fields(status: Status) -> (Code, Vec<String>) {
        let fields = status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
            .unwrap_or_default();
        (status.code(), fields)
    }

    #[test]
    fn errors_are_invalid_argument_on_the_field() {
        let via_service_error = page_size(2000)
            .err()
            .map(|e| Status::from(ServiceError::from(e)));
        assert_eq!(
            via_service_error.map(bad_fields),
            Some((Code::InvalidArgument, vec!["page_size".to_owned()]))
        );
        let token_error = tokens()
            .decode::<Cursor>(QUERY, "garbage")
            .err()
            .map(Status::from);
        assert_eq!(
            token_error.map(bad_fields),
            Some((Code::InvalidArgument, vec!["page_token".to_owned()]))
        );
        let size_error = page_size(-5).err().map(Status::from);
        assert_eq!(
            size_error.map(bad_fields),
            Some((Code::InvalidArgument, vec!["page_size".to_owned()]))
        );
    }

    #[test]
    fn the_secret_comes_from_the_environment() {
        let env = |secret: &str| Environment::from_pairs([(SECRET_VAR, secret)]);
        let secret = "0123456789abcdef0123456789abcdef";
        let from_env = PageTokens::from_env(&env(secret)).ok();
        let token = from_env.and_then(|t| t.encode(QUERY, &cursor()).ok());
        let decoded = token.map(|token| PageTokens::new(secret.as_bytes()).decode(QUERY, &token));
        assert_eq!(decoded, Some(Ok(cursor())));

        let short = PageTokens::from_env(&env("hunter2")).err();
        let line = short.as_ref().map(ToString::to_string).unwrap_or_default();
        assert_eq!(short.as_ref().map(ConfigError::var), Some(SECRET_VAR));
        assert!(!line.contains("hunter2"), "{line}");

        let unset = PageTokens::from_env(&Environment::from_pairs::<&str, &str>([]));
        assert!(unset.is_ok());
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", tokens()), "PageTokens { .. }");
    }

    mod pages {
        use custops_contracts::custops::loyalty::v1::{ListProgramsRequest, ListRewardsRequest};

        use super::*;

        fn request(states: Vec<i32>, page_size: i32, page_token: String) -> ListProgramsRequest {
            ListProgramsRequest {
                states,
                page_size,
                page_token,
            }
        }

        /// Pages through `rows` (sorted ids) `size` at a time with `request`'s filters, as a
        /// list handler does; returns the pages.
        fn list_all(rows: &[u32], size: i32) -> Result<Vec<Vec<u32>>, ServiceError> {
            let tokens = tokens();
            let mut pages = Vec::new();
            let mut token = String::new();
            loop {
                let req = request(vec![1], size, token);
                let page = tokens.page::<_, u32>(&req)?;
                let mut read: Vec<u32> = rows
                    .iter()
                    .copied()
                    .filter(|r| page.after.is_none_or(|after| *r > after))
                    .take(page.fetch())
                    .collect();
                token = page.finish(&mut read, |last| *last)?;
                pages.push(read);
                if token.is_empty() {
                    return Ok(pages);
                }
            }
        }

        #[test]
        fn a_listing_pages_through_every_row_once_and_never_ends_on_an_empty_page()
        -> Result<(), ServiceError> {
            let rows: Vec<u32> = (1..=7).collect();
            assert_eq!(list_all(&rows, 3)?, [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
            // Exactly full pages: the last page is full, not followed by an empty one.
            assert_eq!(list_all(&rows[..6], 3)?, [vec![1, 2, 3], vec![4, 5, 6]]);
            assert_eq!(list_all(&[], 3)?, [Vec::<u32>::new()]);
            Ok(())
        }

        #[test]
        fn page_size_zero_means_the_default_and_out_of_range_is_refused() {
            let tokens = tokens();
            let default = tokens.page::<_, u32>(&request(vec![], 0, String::new()));
            assert_eq!(default.map(|p| (p.size, p.fetch())).ok(), Some((50, 51)));
            let refused = tokens
                .page::<_, u32>(&request(vec![], 1001, String::new()))
                .err()
                .map(|e| bad_fields(Status::from(e)));
            assert_eq!(
                refused,
                Some((Code::InvalidArgument, vec!["page_size".to_owned()]))
            );
        }

        #[test]
        fn a_bad_page_size_and_a_bad_token_are_both_named() {
            let refused = tokens()
                .page::<_, u32>(&request(vec![], -1, "garbage".to_owned()))
                .err()
                .map(|e| bad_fields(Status::from(e)));
            assert_eq!(
                refused,
                Some((
                    Code::InvalidArgument,
                    vec!["page_size".to_owned(), "page_token".to_owned()]
                ))
            );
        }

        #[test]
        fn a_token_is_bound_to_the_request_without_its_paging_fields() -> Result<(), ServiceError> {
            // Arrange: a token issued for all states at page size 2.
            let tokens = tokens();
            let first = request(vec![], 2, String::new());
            let page = tokens.page::<_, u32>(&first)?;
            let token = page.finish(&mut vec![10, 11, 12], |last| *last)?;

            // Act
            let other_size = tokens.page::<_, u32>(&request(vec![], 7, token.clone()));
            let other_filter = tokens.page::<_, u32>(&request(vec![2], 2, token.clone()));
            // Another list whose request, without its paging fields, encodes to the same (no)
            // bytes.
            let other_list = tokens.page::<_, u32>(&ListRewardsRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            });

            // Assert: another page size pages on from the same row; other filters or another
            // list are INVALID_ARGUMENT on page_token.
            assert_eq!(other_size?.after, Some(11));
            for refused in [other_filter.err(), other_list.err()] {
                assert_eq!(
                    refused.map(|e| bad_fields(Status::from(e))),
                    Some((Code::InvalidArgument, vec!["page_token".to_owned()]))
                );
            }
            Ok(())
        }
    }
}

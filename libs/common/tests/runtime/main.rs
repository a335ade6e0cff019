//! The shared server runtime, exercised over real gRPC connections: auth, load shedding,
//! deadlines, panics, TLS/mTLS, the client builder, and database error mapping against a real
//! Postgres.

#[path = "../test_api/mod.rs"]
mod test_api;

mod auth;
mod client;
mod db_errors;
mod limits;
mod tls;

//! TLS between services (rustls through tonic), configured by file paths:
//!
//! - `CUSTOPS_TLS_CERT_FILE` + `CUSTOPS_TLS_KEY_FILE`: the service's certificate chain and key.
//!   The server serves TLS with them, and outgoing calls present them as the client identity
//!   (so for mTLS the certificate needs both the serverAuth and clientAuth usages).
//! - `CUSTOPS_TLS_CLIENT_CA_FILE`: when set, the server requires a client certificate signed by
//!   this CA (mTLS); a client without one cannot complete the handshake.
//! - `CUSTOPS_TLS_CA_FILE`: the CA outgoing calls trust for the other services' certificates;
//!   setting it switches the shared client builder to TLS.
//!
//! Files are read once at start-up; a missing or unreadable file is a configuration error
//! naming its variable.

use std::fmt;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{ConfigError, Environment};

/// A PEM certificate chain and its private key.
#[derive(Clone)]
pub struct PemIdentity {
    /// Certificate chain, PEM.
    pub cert: Vec<u8>,
    /// Private key, PEM (never logged).
    pub key: Vec<u8>,
}

impl fmt::Debug for PemIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemIdentity")
            .field("cert_bytes", &self.cert.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl PemIdentity {
    fn to_identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }
}

/// The server side: serve TLS, optionally demanding client certificates.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// What the server presents.
    pub identity: PemIdentity,
    /// CA that client certificates must chain to; `None` means no client certificate asked.
    pub client_ca: Option<Vec<u8>>,
}

impl ServerTls {
    /// The tonic configuration.
    pub fn to_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.identity.to_identity());
        match &self.client_ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }
}

/// The client side: whom to trust, and what to present.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// CA the other services' certificates chain to.
    pub ca: Vec<u8>,
    /// Certificate to present for mTLS.
    pub identity: Option<PemIdentity>,
}

impl ClientTls {
    /// The tonic configuration for a call to `domain` (the name in the server certificate).
    pub fn to_config(&self, domain: &str) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name(domain);
        match &self.identity {
            Some(identity) => config.identity(identity.to_identity()),
            None => config,
        }
    }
}

/// Both sides, as read from the environment.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// `Some` when the server serves TLS.
    pub server: Option<ServerTls>,
    /// `Some` when outgoing calls use TLS.
    pub client: Option<ClientTls>,
}

impl TlsSettings {
    /// Reads the `CUSTOPS_TLS_*` variables (see the module docs).
    pub fn from_env(env: &Environment) -> Result<Self, ConfigError> {
        let cert = read_file(env, "CUSTOPS_TLS_CERT_FILE")?;
        let key = read_file(env, "CUSTOPS_TLS_KEY_FILE")?;
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(PemIdentity { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(missing_pair("CUSTOPS_TLS_KEY_FILE")),
            (None, Some(_)) => return Err(missing_pair("CUSTOPS_TLS_CERT_FILE")),
        };
        let client_ca = read_file(env, "CUSTOPS_TLS_CLIENT_CA_FILE")?;
        if client_ca.is_some() && identity.is_none() {
            return Err(ConfigError::Invalid {
                var: "CUSTOPS_TLS_CLIENT_CA_FILE".to_owned(),
                reason:
                    "mTLS needs the server's own CUSTOPS_TLS_CERT_FILE and CUSTOPS_TLS_KEY_FILE"
                        .to_owned(),
            });
        }
        let server = identity.clone().map(|identity| ServerTls {
            identity,
            client_ca,
        });
        let client = read_file(env, "CUSTOPS_TLS_CA_FILE")?.map(|ca| ClientTls { ca, identity });
        Ok(Self { server, client })
    }
}

fn missing_pair(var: &str) -> ConfigError {
    ConfigError::Missing {
        var: var.to_owned(),
        hint: "the TLS certificate and key are set together",
    }
}

fn read_file(env: &Environment, var: &str) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = env.get(var) else {
        return Ok(None);
    };
    let bytes = std::fs::read(path.trim()).map_err(|error| ConfigError::Invalid {
        var: var.to_owned(),
        reason: format!("cannot read `{}`: {error}", path.trim()),
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(ConfigError::Invalid {
            var: var.to_owned(),
            reason: format!("`{}` is not a PEM file", path.trim()),
        });
    }
    Ok(Some(bytes))
}

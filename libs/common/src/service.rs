//! The four custops services as a closed set: their names, Postgres schemas and default ports
//! are decided here once, so config, migrations and the suite binary agree.

use std::fmt;
use std::str::FromStr;

/// One of the four custops services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKind {
    /// The single customer record (`custops.profiles.v1`).
    Profiles,
    /// Segments, RFM and lifecycle (`custops.segmentation.v1`).
    Segmentation,
    /// Points ledger, tiers and rewards (`custops.loyalty.v1`).
    Loyalty,
    /// Surveys, metrics, tickets and reviews (`custops.feedback.v1`).
    Feedback,
}

impl ServiceKind {
    /// Every service, in the order the suite starts them.
    pub const ALL: [ServiceKind; 4] = [
        ServiceKind::Profiles,
        ServiceKind::Segmentation,
        ServiceKind::Loyalty,
        ServiceKind::Feedback,
    ];

    /// Lower-case name, used in logs, config variable names and the `custops` CLI.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Profiles => "profiles",
            ServiceKind::Segmentation => "segmentation",
            ServiceKind::Loyalty => "loyalty",
            ServiceKind::Feedback => "feedback",
        }
    }

    /// The Postgres schema the service owns. Equal to its name; spelled out so a rename of
    /// one cannot silently move the other.
    pub fn schema(self) -> &'static str {
        match self {
            ServiceKind::Profiles => "profiles",
            ServiceKind::Segmentation => "segmentation",
            ServiceKind::Loyalty => "loyalty",
            ServiceKind::Feedback => "feedback",
        }
    }

    /// The gRPC port the service listens on unless configured otherwise (50051–50054).
    pub fn default_port(self) -> u16 {
        match self {
            ServiceKind::Profiles => 50051,
            ServiceKind::Segmentation => 50052,
            ServiceKind::Loyalty => 50053,
            ServiceKind::Feedback => 50054,
        }
    }

    /// Prefix of this service's own configuration variables, e.g. `CUSTOPS_PROFILES_`.
    pub fn env_prefix(self) -> String {
        format!("CUSTOPS_{}_", self.name().to_ascii_uppercase())
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A service name that is not one of the four.
#[derive(Debug, thiserror::Error)]
#[error("unknown service `{0}` (expected profiles, segmentation, loyalty or feedback)")]
pub struct UnknownService(String);

impl FromStr for ServiceKind {
    type Err = UnknownService;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| UnknownService(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ports_are_distinct() {
        let mut ports = Vec::new();
        for kind in ServiceKind::ALL {
            assert_eq!(kind.name().parse::<ServiceKind>().ok(), Some(kind));
            ports.push(kind.default_port());
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports, vec![50051, 50052, 50053, 50054]);
        assert!("billing".parse::<ServiceKind>().is_err());
    }
}

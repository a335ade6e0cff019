//! What `custops dev` prints once the services are up: where each listens, and first calls
//! that work with what the project installs. `buf` is the client the checkout brings
//! (`make tools` puts it in `.local/venv`, and `make run` runs that first); grpcurl is offered
//! only when it is on `PATH`. With authentication on, the calls carry a token minted by this
//! very binary.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use custops_common::service::ServiceKind;

use super::reachable_addr;

/// The method every banner calls: it needs a token when authentication is on, so the token
/// line is shown working.
const LIST_CUSTOMERS: &str = "custops.profiles.v1.ProfilesService/ListCustomers";
/// Its request: a few of the sample customers.
const LIST_BODY: &str = r#"{"page_size": 3}"#;

/// How to run the tools the calls are written for, as a user at this prompt types them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// buf: the project's copy in `.local/venv`, else `buf` from `PATH`; when neither exists,
    /// where `make tools` will put it.
    pub buf: String,
    /// Whether `buf` names a program that exists.
    pub buf_installed: bool,
    /// Whether grpcurl is on `PATH`.
    pub grpcurl: bool,
    /// This binary, for `custops token`.
    pub custops: String,
}

impl Tools {
    /// Looks for the tools: buf in the checkout this binary was built from (whatever the
    /// current directory), then on `PATH`; paths are shown relative to the current directory
    /// when they lie under it.
    pub fn find() -> Self {
        let cwd = std::env::current_dir().ok();
        let shown = |path: &Path| match cwd.as_deref().and_then(|cwd| path.strip_prefix(cwd).ok()) {
            Some(relative) => relative.display().to_string(),
            None => path.display().to_string(),
        };
        // The workspace root: this crate lives in services/suite.
        let checkout_buf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .map(|root| root.join(".local/venv/bin/buf"));
        let (buf, buf_installed) = match checkout_buf {
            Some(path) if path.is_file() => (shown(&path), true),
            _ if on_path("buf").is_some() => ("buf".to_owned(), true),
            Some(path) => (shown(&path), false),
            None => ("buf".to_owned(), false),
        };
        let custops = std::env::current_exe()
            .map(|exe| shown(&exe))
            .unwrap_or_else(|_| "custops".to_owned());
        Self {
            buf,
            buf_installed,
            grpcurl: on_path("grpcurl").is_some(),
            custops,
        }
    }
}

/// `program` in a directory of `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The banner: every service and its address, then calls to profiles that work as printed
/// (addresses a client here can reach, the real path of buf, a token when `auth` is on).
pub fn how_to_call(addrs: &[(ServiceKind, SocketAddr)], auth: bool, tools: &Tools) -> String {
    let mut text = String::from("custops is running:\n");
    for (service, addr) in addrs {
        let _ = writeln!(text, "  {service:<13} {addr}");
    }
    let Some(profiles) = addrs
        .iter()
        .find(|(service, _)| *service == ServiceKind::Profiles)
        .map(|(_, addr)| reachable_addr(*addr))
    else {
        return text;
    };
    let buf = format!("{} curl --protocol grpc --http2-prior-knowledge", tools.buf);
    let bearer = if auth {
        r#" -H "authorization: Bearer $TOKEN""#
    } else {
        ""
    };
    text.push_str("\nTry it (reflection is on: no .proto files needed):\n");
    if !tools.buf_installed {
        let _ = writeln!(
            text,
            "  (buf is not installed yet: `make tools` puts it at {})",
            tools.buf
        );
    }
    if auth {
        let _ = writeln!(
            text,
            "  # authentication is on: health and reflection answer anyone, other calls need a\n\
             \x20 # token signed with the services' CUSTOPS_AUTH_JWT_SECRET (have it in this shell)\n\
             \x20 TOKEN=$({} token --service me --scopes profiles.read)",
            tools.custops
        );
    }
    let _ = writeln!(text, "  {buf} --list-methods http://{profiles}");
    let _ = writeln!(
        text,
        "  {buf} http://{profiles}/grpc.health.v1.Health/Check"
    );
    let _ = writeln!(
        text,
        "  {buf}{bearer} -d '{LIST_BODY}' http://{profiles}/{LIST_CUSTOMERS}"
    );
    if tools.grpcurl {
        text.push_str("or with grpcurl:\n");
        let _ = writeln!(text, "  grpcurl -plaintext {profiles} list");
        let _ = writeln!(
            text,
            "  grpcurl -plaintext{bearer} -d '{LIST_BODY}' {profiles} {LIST_CUSTOMERS}"
        );
    }
    text.push_str("Stop with Ctrl-C.\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(buf_installed: bool, grpcurl: bool) -> Tools {
        Tools {
            buf: ".local/venv/bin/buf".to_owned(),
            buf_installed,
            grpcurl,
            custops: "target/debug/custops".to_owned(),
        }
    }

    fn suite_on(host: [u8; 4]) -> Vec<(ServiceKind, SocketAddr)> {
        ServiceKind::ALL
            .into_iter()
            .zip(56051..)
            .map(|(service, port)| (service, SocketAddr::from((host, port))))
            .collect()
    }

    #[test]
    fn without_auth_the_calls_are_buf_curl_at_the_real_path_and_carry_no_token() {
        let text = how_to_call(&suite_on([127, 0, 0, 1]), false, &tools(true, false));
        assert!(text.contains("  feedback      127.0.0.1:56054\n"), "{text}");
        assert!(
            text.contains(
                "  .local/venv/bin/buf curl --protocol grpc --http2-prior-knowledge \
                 --list-methods http://127.0.0.1:56051\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  .local/venv/bin/buf curl --protocol grpc --http2-prior-knowledge \
                 -d '{\"page_size\": 3}' \
                 http://127.0.0.1:56051/custops.profiles.v1.ProfilesService/ListCustomers\n"
            ),
            "{text}"
        );
        for absent in ["grpcurl", "TOKEN", "token", "make tools"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
    }

    #[test]
    fn grpcurl_is_offered_only_when_on_path_and_a_missing_buf_says_how_to_get_it() {
        let text = how_to_call(&suite_on([127, 0, 0, 1]), false, &tools(false, true));
        assert!(
            text.contains("`make tools` puts it at .local/venv/bin/buf"),
            "{text}"
        );
        assert!(
            text.contains("or with grpcurl:\n  grpcurl -plaintext 127.0.0.1:56051 list\n"),
            "{text}"
        );
    }

    #[test]
    fn with_auth_every_call_but_reflection_and_health_carries_a_minted_token() {
        let text = how_to_call(&suite_on([127, 0, 0, 1]), true, &tools(true, true));
        assert!(
            text.contains(
                "  TOKEN=$(target/debug/custops token --service me --scopes profiles.read)\n"
            ),
            "{text}"
        );
        let lists: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("ListCustomers"))
            .collect();
        assert_eq!(lists.len(), 2, "{text}");
        for line in lists {
            assert!(
                line.contains(r#"-H "authorization: Bearer $TOKEN""#),
                "{line}"
            );
        }
        // The token line comes before the first call that uses it.
        let token = text.find("TOKEN=$(").unwrap_or(usize::MAX);
        let first_use = text.find("$TOKEN\"").unwrap_or(0);
        assert!(token < first_use, "{text}");
    }

    #[test]
    fn a_suite_on_every_address_is_called_on_loopback() {
        let text = how_to_call(&suite_on([0, 0, 0, 0]), false, &tools(true, false));
        assert!(text.contains("  profiles      0.0.0.0:56051\n"), "{text}");
        assert!(
            text.contains("--list-methods http://127.0.0.1:56051\n"),
            "{text}"
        );
        assert!(!text.contains("http://0.0.0.0"), "{text}");
    }
}

//! The invariants that would otherwise hold only by discipline, checked over the source tree
//! (rust-analyzer's tidy test is the model): every file says why it exists, the domain stays
//! free of transport and storage, a `Status` is built only where a service maps its errors,
//! and no lower layer reaches up into the API.

use std::fs;
use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "target" && name != "node_modules" && name != ".git" {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The four service crates' `src` folders.
fn service_sources() -> Vec<(String, PathBuf)> {
    ["profiles", "segmentation", "loyalty", "feedback"]
        .iter()
        .map(|s| ((*s).to_owned(), root().join("services").join(s).join("src")))
        .collect()
}

/// Source text with comments removed, so a doc comment naming `Status::internal` or
/// `crate::api` does not count. Line comments only: the code base does not use block comments.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal ("http://") is kept: only a comment starting the
            // line's code, or after code with whitespace before it, is cut.
            Some(at) if line[..at].trim().is_empty() || line[..at].ends_with(' ') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn report(rule: &str, offenders: &[String]) -> Result<(), String> {
    if offenders.is_empty() {
        Ok(())
    } else {
        Err(format!("{rule}:\n  {}", offenders.join("\n  ")))
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc_comment() -> Result<(), String> {
    let mut offenders = Vec::new();
    for dir in ["libs", "services", "tests"] {
        for path in rust_files(&root().join(dir)) {
            let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                offenders.push(relative(&path));
            }
        }
    }
    report(
        "files that do not open with a `//!` line saying why they exist",
        &offenders,
    )
}

#[test]
fn the_domain_imports_neither_transport_nor_storage_nor_the_status_mapping() -> Result<(), String> {
    let forbidden = [
        "tonic",
        "prost",
        "sqlx",
        "ServiceError",
        "custops_contracts",
    ];
    let mut offenders = Vec::new();
    for (service, src) in service_sources() {
        let mut files = rust_files(&src.join("domain"));
        files.push(src.join("domain.rs"));
        for path in files.into_iter().filter(|p| p.exists()) {
            let code = code_of(&fs::read_to_string(&path).map_err(|e| e.to_string())?);
            for word in forbidden {
                let used = code
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|w| w == word);
                if used {
                    offenders.push(format!("{service}: {} uses {word}", relative(&path)));
                }
            }
        }
    }
    report(
        "domain modules reaching for transport or storage",
        &offenders,
    )
}

#[test]
fn only_a_services_error_module_builds_a_status() -> Result<(), String> {
    let mut offenders = Vec::new();
    for (_, src) in service_sources() {
        for path in rust_files(&src) {
            let rel = relative(&path);
            if rel.ends_with("api/error.rs") {
                continue;
            }
            let code = code_of(&fs::read_to_string(&path).map_err(|e| e.to_string())?);
            // A bare `Status` is tonic's only where the file imports it (a domain may have a
            // `Status` of its own).
            let imports_status = code.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with("use tonic::") && l.contains("Status")
            });
            for (n, line) in code.lines().enumerate() {
                // `Status::new(..)`, `Status::internal(..)`, `tonic::Status::not_found(..)` …:
                // a constructor is `Status::` followed by a lower-case name (`from` converts
                // through a mapping, it builds nothing).
                let builds = line.match_indices("Status::").any(|(at, _)| {
                    let before = &line[..at];
                    let tonic = before.ends_with("tonic::");
                    let bare =
                        !before.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':');
                    let name: String = line[at + "Status::".len()..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    (tonic || (bare && imports_status))
                        && name.starts_with(|c: char| c.is_ascii_lowercase())
                        && name != "from"
                });
                if builds {
                    offenders.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    report(
        "a Status built outside the service's api/error.rs (map a named error there instead)",
        &offenders,
    )
}

#[test]
fn no_lower_layer_imports_the_api() -> Result<(), String> {
    let mut offenders = Vec::new();
    for (_, src) in service_sources() {
        for path in rust_files(&src) {
            let rel = relative(&path);
            let inside_api = path.starts_with(src.join("api"))
                || [src.join("api.rs"), src.join("lib.rs"), src.join("main.rs")].contains(&path);
            if inside_api {
                continue;
            }
            let code = code_of(&fs::read_to_string(&path).map_err(|e| e.to_string())?);
            if code.contains("crate::api") {
                offenders.push(rel);
            }
        }
    }
    report("modules below the API that import crate::api", &offenders)
}

/// A service's service code: each file under `src/` as (path relative to `src/`, code
/// without comments, cut where its unit tests start — they sit at the end of their file).
fn service_code(service: &str) -> Result<Vec<(String, String)>, String> {
    let src = root().join("services").join(service).join("src");
    let mut files = Vec::new();
    for path in rust_files(&src) {
        let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let code = code_of(&text);
        let code = code
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .to_owned();
        let rel = path
            .strip_prefix(&src)
            .unwrap_or(&path)
            .display()
            .to_string();
        files.push((rel, code));
    }
    if files.len() < 20 {
        return Err(format!("found only {} files of {service}", files.len()));
    }
    Ok(files)
}

/// The lines of `files` outside `allowed` (path prefixes) holding any of `needles`, as
/// `path: line`.
fn lines_with(files: &[(String, String)], allowed: &[&str], needles: &[&str]) -> Vec<String> {
    files
        .iter()
        .filter(|(path, _)| !allowed.iter().any(|a| path.starts_with(a)))
        .flat_map(|(path, code)| {
            code.lines()
                .filter(|line| needles.iter().any(|n| line.contains(n)))
                .map(move |line| format!("{path}: {}", line.trim()))
        })
        .collect()
}

/// What a query looks like in the code.
const SQL: [&str; 4] = ["sqlx::query", "query_as(", "query_scalar(", "AssertSqlSafe"];
/// What reading the time without the injected clock looks like.
const WALL_CLOCK: [&str; 7] = [
    "Utc::now",
    "SystemTime::now",
    "SELECT now()",
    "= now()",
    ", now()",
    "(now()",
    "current_timestamp",
];

#[test]
fn the_layout_checks_see_what_they_look_for() {
    let files = [
        (
            "workflow/z.rs".to_owned(),
            code_of("let n = sqlx::query_scalar(\"SELECT 1\");\n// sqlx::query in a comment"),
        ),
        (
            "store/y.rs".to_owned(),
            "sqlx::query(\"SELECT 1\")".to_owned(),
        ),
    ];
    assert_eq!(
        lines_with(&files, &["store"], &SQL),
        ["workflow/z.rs: let n = sqlx::query_scalar(\"SELECT 1\");"]
    );
}

#[test]
fn sql_lives_only_in_the_store() -> Result<(), String> {
    // Held by profiles, loyalty and feedback; segmentation's job worker, scheduler and scale
    // fixture still query outside its `store/` (issue 18's note).
    let mut offenders = Vec::new();
    for service in ["profiles", "loyalty", "feedback"] {
        offenders.extend(lines_with(&service_code(service)?, &["store"], &SQL));
    }
    report("SQL outside store/", &offenders)
}

#[test]
fn time_comes_from_the_injected_clock() -> Result<(), String> {
    // Profiles' `demo` is a client of the API (its sample activities count back from today).
    // Held by profiles and loyalty; segmentation's job heartbeats and feedback's metrics
    // time zone probe still read SQL now() (issue 18's note).
    let mut offenders = lines_with(&service_code("profiles")?, &["demo.rs"], &WALL_CLOCK);
    offenders.extend(lines_with(&service_code("loyalty")?, &[], &WALL_CLOCK));
    report("time read without the injected clock", &offenders)
}

#[test]
fn only_loyaltys_use_cases_open_transactions_and_append_events() -> Result<(), String> {
    // `events.rs` builds the outbox rows the use cases append.
    let offenders = lines_with(
        &service_code("loyalty")?,
        &["workflow", "events.rs"],
        &[
            ".begin()",
            "begin_snapshot(",
            "events::append(",
            "outbox_events(",
            "outbox::append",
            "idempotency::run(",
        ],
    );
    report(
        "loyalty: a transaction or outbox append outside workflow/",
        &offenders,
    )
}

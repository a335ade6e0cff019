//! The crate's layout rules (ARCHITECTURE.md, issue 18 item 5), held by reading its sources:
//! lower modules never import `api`; SQL lives only in `store`; transactions are opened and
//! outbox events appended only by the use cases in `workflow`; service code reads time only
//! from the injected clock. Unit tests (`#[cfg(test)]` modules) are not service code.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Every `.rs` file under `dir`, with its path relative to `root`.
fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("Failed to list {dir:?}"))? {
        let path = entry?.path();
        if path.is_dir() {
            sources(&path, root, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("Failed to read {path:?}"))?;
            let relative = path
                .strip_prefix(root)?
                .to_string_lossy()
                .replace('\\', "/");
            out.push((relative, text));
        }
    }
    Ok(())
}

/// The crate's sources (`src/`), relative paths and text.
fn all_sources() -> anyhow::Result<Vec<(String, String)>> {
    let root: PathBuf = [env!("CARGO_MANIFEST_DIR"), "src"].iter().collect();
    let mut out = Vec::new();
    sources(&root, &root, &mut out)?;
    anyhow::ensure!(out.len() > 40, "found only {} source files", out.len());
    Ok(out)
}

/// Lines of `text` containing any of `needles`, leaving out `//` comments and everything from
/// the file's `#[cfg(test)]` on (unit tests sit at the end of their file).
fn offending(text: &str, needles: &[&str]) -> Vec<String> {
    text.lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .filter(|line| !line.trim_start().starts_with("//"))
        .filter(|line| needles.iter().any(|n| line.contains(n)))
        .map(|line| line.trim().to_owned())
        .collect()
}

/// Files outside `allowed` (path prefixes) with lines containing any of `needles`.
fn violations(
    files: &[(String, String)],
    allowed: &[&str],
    needles: &[&str],
) -> Vec<(String, Vec<String>)> {
    files
        .iter()
        .filter(|(path, _)| !allowed.iter().any(|a| path.starts_with(a)))
        .map(|(path, text)| (path.clone(), offending(text, needles)))
        .filter(|(_, lines)| !lines.is_empty())
        .collect()
}

#[test]
fn the_checks_see_what_they_look_for() {
    let files = vec![
        (
            "store/x.rs".to_owned(),
            "use crate::api::parse;\n// crate::api in a comment\n#[cfg(test)]\nmod tests {\n    use crate::api::parse;\n}"
                .to_owned(),
        ),
        ("api/y.rs".to_owned(), "use crate::api::parse;".to_owned()),
        (
            "workflow/z.rs".to_owned(),
            "    let n = sqlx::query_scalar(\"SELECT 1\");".to_owned(),
        ),
    ];
    let found = violations(&files, &["api"], &["crate::api"]);
    assert_eq!(
        found,
        [(
            "store/x.rs".to_owned(),
            vec!["use crate::api::parse;".to_owned()]
        )]
    );
    let sql = violations(&files, &["store"], &["query_scalar("]);
    assert_eq!(
        sql,
        [(
            "workflow/z.rs".to_owned(),
            vec!["let n = sqlx::query_scalar(\"SELECT 1\");".to_owned()]
        )]
    );
}

#[test]
fn lower_modules_never_import_the_api() -> anyhow::Result<()> {
    let files = all_sources()?;
    let found = violations(&files, &["api", "lib.rs"], &["crate::api", "super::api"]);
    assert!(found.is_empty(), "{found:#?}");
    Ok(())
}

#[test]
fn sql_lives_only_in_the_store() -> anyhow::Result<()> {
    let files = all_sources()?;
    let found = violations(
        &files,
        &["store"],
        &["sqlx::query", "query_as(", "query_scalar(", "AssertSqlSafe"],
    );
    assert!(found.is_empty(), "{found:#?}");
    Ok(())
}

#[test]
fn only_the_use_cases_open_transactions_and_append_events() -> anyhow::Result<()> {
    let files = all_sources()?;
    // `events.rs` builds the outbox rows the use cases append.
    let found = violations(
        &files,
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
    assert!(found.is_empty(), "{found:#?}");
    Ok(())
}

#[test]
fn time_comes_from_the_injected_clock() -> anyhow::Result<()> {
    let files = all_sources()?;
    let found = violations(
        &files,
        &[],
        &[
            "Utc::now",
            "SystemTime::now",
            "SELECT now()",
            "= now()",
            ", now()",
            "(now()",
            "current_timestamp",
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
    Ok(())
}

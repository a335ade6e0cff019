//! Start-up checks shared by the four service binaries: a missing or malformed `DATABASE_URL`
//! must stop the binary at once with a non-zero exit and one line naming the variable, and an
//! unreachable database must fail start-up rather than serve.

use std::process::Output;
use std::time::Duration;

use anyhow::{Context, ensure};

/// Runs `binary` with only the given environment (plus `PATH`) and returns its output. The
/// binary is killed if it has not exited after `timeout`, which fails the check.
pub async fn run_with_env(
    binary: &str,
    env: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::new(binary);
    command.env_clear().kill_on_drop(true);
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().copied());
    tokio::time::timeout(timeout, command.output())
        .await
        .with_context(|| format!("{binary} did not exit within {timeout:?}"))?
        .with_context(|| format!("Failed to run {binary}"))
}

/// Asserts the binary rejects a missing, a non-Postgres and a malformed `DATABASE_URL` with
/// exit code 2 and a one-line message naming `DATABASE_URL`, refuses to start without the token
/// key while auth is on (the default), and fails (exit 1) when the database cannot be reached.
pub async fn assert_rejects_bad_database_url(binary: &str) -> anyhow::Result<()> {
    let cases: [(&str, &[(&str, &str)]); 3] = [
        ("missing", &[]),
        (
            "not postgres",
            &[("DATABASE_URL", "mysql://u:hunter2@localhost/db")],
        ),
        (
            "malformed",
            &[("DATABASE_URL", "postgres://u:hunter2@localhost:port/db")],
        ),
    ];
    for (case, env) in cases {
        let out = run_with_env(binary, env, Duration::from_secs(10)).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2),
            "{case}: exit {:?}, stderr: {stderr}",
            out.status
        );
        ensure!(
            stderr.trim().lines().count() == 1,
            "{case}: not one line: {stderr}"
        );
        ensure!(
            stderr.contains("DATABASE_URL"),
            "{case}: variable not named: {stderr}"
        );
        ensure!(
            !stderr.contains("hunter2"),
            "{case}: password echoed: {stderr}"
        );
    }

    // Auth is on unless switched off explicitly: without the token key the binary refuses to
    // start, naming the variable.
    let no_key = [("DATABASE_URL", "postgres://postgres@127.0.0.1:1/custops")];
    let out = run_with_env(binary, &no_key, Duration::from_secs(10)).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2) && stderr.contains("CUSTOPS_AUTH_JWT_SECRET"),
        "auth key missing: exit {:?}, stderr: {stderr}",
        out.status
    );

    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let unreachable = [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/custops"),
        ("CUSTOPS_DB_CONNECT_TIMEOUT_SECS", "1"),
        ("CUSTOPS_AUTH_MODE", "disabled"),
    ];
    let out = run_with_env(binary, &unreachable, Duration::from_secs(20)).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "unreachable: exit {:?}, stderr: {stderr}",
        out.status
    );
    ensure!(
        stderr.contains("Failed to connect to Postgres"),
        "unreachable: {stderr}"
    );
    // stderr is a pipe here, as in a redirected log: no colour codes.
    ensure!(
        !stderr.contains('\u{1b}'),
        "unreachable: terminal colour codes in a redirected log: {stderr:?}"
    );
    Ok(())
}

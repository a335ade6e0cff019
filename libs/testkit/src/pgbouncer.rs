//! A PgBouncer of a test's own, in transaction pooling mode, in front of the test's database:
//! the pooler the suite is documented to run behind (ARCHITECTURE.md, "Postgres behind a
//! pooler").
//!
//! [`TestPgBouncer::start`] writes a `pgbouncer.ini` into a temporary directory and runs
//! `pgbouncer` (Debian's package; `scripts/dev-env.sh` installs it) on a free
//! loopback port, killed when the value drops. Without the program `start` fails with that hint
//! rather than letting a test pass untested.
//!
//! Each service schema gets a database alias of its own (in one database, or each in its own)
//! whose server connections start with
//! `search_path` set to that schema (`connect_query`): behind a transaction pooler, a
//! connection's session settings cannot come from the client's start-up packet, so they come
//! from the pooler (or from the service's role). The pool is configured as the suite requires
//! of a production PgBouncer 1.18 (the version Debian ships): `pool_mode = transaction`,
//! `server_reset_query = DEALLOCATE ALL` run after every transaction
//! (`server_reset_query_always`), which also makes any statement a service sends outside a
//! transaction fail at once instead of passing by luck, and `extra_float_digits` (which sqlx
//! sends) ignored. Eight server connections per alias: a pooler's point is that many clients
//! (here up to two replicas' pools of ten) share few server connections, and the tests of
//! one `cargo test` share one Postgres's `max_connections`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long PgBouncer may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `pgbouncer` process owned by one test.
#[derive(Debug)]
pub struct TestPgBouncer {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl TestPgBouncer {
    /// Starts PgBouncer with one alias per `(schema, server_url)`, named after the schema:
    /// the database `server_url` names, with `search_path` set to the schema and then each of
    /// `session_settings` (e.g. the services' statement and lock timeouts; plain values, no
    /// quotes) on every server connection. Clients connect as the server URLs' user, with no
    /// password (the pooler logs in to Postgres with the URL's).
    pub async fn start(
        aliases: &[(&str, &str)],
        session_settings: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let program = find_program().await?;
        let mut databases = String::new();
        let mut users = std::collections::BTreeSet::new();
        for (schema, server_url) in aliases {
            let server = url::Url::parse(server_url).context("a server URL is not a URL")?;
            let user = match server.username() {
                "" => "postgres",
                user => user,
            };
            users.insert(user.to_owned());
            let mut target = format!(
                "host={} port={} user={user} dbname={}",
                server.host_str().unwrap_or("127.0.0.1"),
                server.port().unwrap_or(5432),
                server.path().trim_start_matches('/'),
            );
            if let Some(password) = server.password() {
                target.push_str(&format!(" password={password}"));
            }
            let mut connect_query = format!("SET search_path TO {schema}");
            for (name, value) in session_settings {
                if value.contains('\'') {
                    bail!("session setting {name}: a quote cannot be passed through connect_query");
                }
                connect_query.push_str(&format!("; SET {name} = {value}"));
            }
            databases.push_str(&format!(
                "{schema} = {target} connect_query='{connect_query}'\n"
            ));
        }

        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "custops-test-pgbouncer-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("Failed to create {}", dir.display()))?;
        let users: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        write(&dir.join("users.txt"), &users)?;
        write(
            &dir.join("pgbouncer.ini"),
            &format!(
                "[databases]\n{databases}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 server_reset_query = DEALLOCATE ALL\n\
                 server_reset_query_always = 1\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 max_client_conn = 1000\n\
                 default_pool_size = 8\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n",
                users = dir.join("users.txt").display(),
            ),
        )?;

        let mut command = Command::new(program);
        // PgBouncer refuses to run as root; as root, it is told to drop to `nobody`.
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("pgbouncer.log"))
                    .context("Failed to create the PgBouncer log")?,
            ))
            .kill_on_drop(true)
            .spawn()
            .context("Failed to start pgbouncer")?;
        let bouncer = Self { port, child, dir };
        bouncer.wait_until_accepting().await?;
        Ok(bouncer)
    }

    /// The URL of the alias for `schema`, as `user`.
    pub fn url(&self, schema: &str, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{schema}", self.port)
    }

    /// The port PgBouncer listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What PgBouncer logged so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    async fn wait_until_accepting(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "pgbouncer did not listen on {} within {START_TIMEOUT:?}: {}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestPgBouncer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes a file PgBouncer (perhaps running as `nobody`) can read.
fn write(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("Failed to write {}", path.display()))
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `pgbouncer` from `PATH`, else Debian's `/usr/sbin/pgbouncer` (not on a non-root `PATH`).
async fn find_program() -> anyhow::Result<&'static str> {
    for program in ["pgbouncer", "/usr/sbin/pgbouncer"] {
        if crate::program_runs(program).await {
            return Ok(program);
        }
    }
    bail!(
        "pgbouncer is not installed: install it (Debian: apt-get install pgbouncer; \
         scripts/dev-env.sh, which make test runs, does)"
    )
}

/// A loopback port nothing listens on now.
fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).context("Failed to find a free port")?;
    Ok(listener.local_addr()?.port())
}

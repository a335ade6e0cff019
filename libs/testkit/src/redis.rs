//! A Redis server of a test's own, for tests that stop Redis to show what happens then.
//!
//! The machine's shared Redis (127.0.0.1:6379, or `REDIS_URL`) must never be stopped by a
//! test, so [`TestRedis`] runs `redis-server` from `PATH` on a free loopback port, with no
//! persistence, in a temporary directory, and kills it when stopped or dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a fresh server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at a free port: another process may take the one we found before Redis binds it.
const PORT_ATTEMPTS: usize = 5;

/// A `redis-server` process that belongs to one test.
#[derive(Debug)]
pub struct TestRedis {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl TestRedis {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it answers PING.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "custops-test-redis-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("Failed to create {}", dir.display()))?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut redis = Self {
                port,
                child: Some(spawn(&dir, port)?),
                dir: dir.clone(),
            };
            match redis.wait_until_ready().await {
                Ok(()) => return Ok(redis),
                Err(error) => {
                    redis.stop().await?;
                    last_error = Some(error);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt was made")))
            .context("Failed to start a test redis-server")
    }

    /// Starts the server again on the same port (killing it first if it runs), empty: for
    /// tests of what happens when Redis comes back.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.child = Some(spawn(&self.dir, self.port)?);
        self.wait_until_ready()
            .await
            .context("Failed to restart the test redis-server")
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL, as a crash would) and waits until the process is gone, so
    /// the port refuses connections when this returns. Stopping twice is fine.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .context("Failed to kill the test redis-server")?;
        }
        Ok(())
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "redis-server exited at start-up ({status}); is port {} taken?",
                    self.port
                );
            }
            if ping(self.port).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("redis-server did not answer PING within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // `kill_on_drop` is set too; this makes the intent explicit and reaps early.
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago: bind port 0, read the port, release it.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("Failed to find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

fn spawn(dir: &PathBuf, port: u16) -> anyhow::Result<Child> {
    Command::new("redis-server")
        .current_dir(dir)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--dir", &dir.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("Failed to run redis-server (is it installed and on PATH?)")
}

/// Sends an inline PING and expects `+PONG`.
async fn ping(port: u16) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"PING\r\n").await?;
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).await?;
    if &reply != b"+PONG\r\n" {
        bail!(
            "unexpected reply to PING: {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(())
}

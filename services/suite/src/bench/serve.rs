//! `custops bench-serve SERVICE`: one service in this process exactly as `custops dev` runs
//! it (same `dev::start`, same layers and settings from the environment), as the process
//! `custops bench` measures. It announces its address on stdout and stops on SIGTERM/SIGINT
//! or when its standard input closes, so it never outlives the benchmark that started it.

use anyhow::Context;
use custops_common::config::ServiceSettings;
use custops_common::shutdown;
use tokio_util::sync::CancellationToken;

use crate::dev;

/// Serves the service until asked to stop; fails if it stops by itself.
pub async fn run(settings: ServiceSettings) -> anyhow::Result<()> {
    let service = settings.service;
    let mut suite = dev::start(vec![settings]).await?;
    let addr = suite
        .addr(service)
        .with_context(|| format!("{service} did not start"))?;
    announce(addr);
    let stdin_closed = stdin_closed();
    tokio::select! {
        () = shutdown::shutdown_signal() => suite.stop().await,
        () = stdin_closed.cancelled() => suite.stop().await,
        failed = suite.any_stopped() => {
            let stopped = suite.stop().await;
            failed.and(stopped)
        }
    }
}

/// Tells the parent where to connect: the one line a child writes on stdout.
pub fn announce(addr: std::net::SocketAddr) {
    #[allow(clippy::print_stdout, reason = "the parent reads this line")]
    {
        println!("listening {addr}");
    }
}

/// Cancelled when standard input reaches its end (the parent closed it, or died). Read on a
/// plain thread: a blocking read needs no runtime feature and holds no worker.
pub fn stdin_closed() -> CancellationToken {
    let closed = CancellationToken::new();
    let cancel = closed.clone();
    std::thread::spawn(move || {
        std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink()).ok();
        cancel.cancel();
    });
    closed
}

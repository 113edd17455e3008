//! The `sse-broker` binary: parse flags, load configuration, start logging,
//! run the application until SIGINT/SIGTERM.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use sse_broker::{config::Settings, startup::Application};

/// A Server-Sent Events broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration overlay on top of the built-in defaults (config/default.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:0 for any free port.
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Turn the demo publisher on or off.
    #[arg(long, value_name = "BOOL")]
    demo: Option<bool>,
    /// Join a cluster through this Redis, e.g. redis://127.0.0.1:6379.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Keep history on disk in this folder (durable history), e.g. /var/lib/sse-broker.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let mut settings = Settings::load(cli.config.as_deref())?;
    if let Some(bind) = cli.bind {
        settings.server.bind = bind;
    }
    if let Some(demo) = cli.demo {
        settings.demo.enabled = demo;
    }
    if let Some(redis) = cli.redis {
        settings.cluster.redis_url = redis;
    }
    if let Some(data_dir) = cli.data_dir {
        settings.history.data_dir = data_dir;
    }
    // Flags can combine what the files alone could not (e.g. --redis with
    // a data_dir): check again.
    settings.validate()?;
    Application::build(settings)?
        .run_until_stopped(true)
        .await?;
    Ok(())
}

//! The `sse-broker` binary: parse flags, load configuration, start logging,
//! run the application until SIGINT/SIGTERM. `sse-broker token …` mints a
//! token instead (see docs/security.md).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};
use sse_broker::{
    auth::{self, Permissions},
    config::Settings,
    startup::Application,
};

/// A Server-Sent Events broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration overlay on top of the built-in defaults (config/default.toml).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:0 for any free port.
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Turn the demo publisher on or off.
    #[arg(long, value_name = "BOOL")]
    demo: Option<bool>,
    /// Join a cluster through this Redis, e.g. redis://127.0.0.1:6379 (a comma-separated
    /// list of seeds with cluster.redis_mode = "cluster" or "sentinel").
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Keep history on disk in this folder (durable history), e.g. /var/lib/sse-broker.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a token signed with the configured HS256/384/512 secret.
    Token {
        /// Channel pattern the bearer may publish to (repeatable), e.g. 'orders.*'.
        #[arg(long, value_name = "PATTERN")]
        publish: Vec<String>,
        /// Channel pattern the bearer may subscribe to (repeatable).
        #[arg(long, value_name = "PATTERN")]
        subscribe: Vec<String>,
        /// Let the bearer see every channel in listings and the pulse book
        /// (an operator's console); it reads no channel's events.
        #[arg(long)]
        monitor: bool,
        /// Lifetime of the token, e.g. 30s, 1h, 7days.
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        ttl: humantime::Duration,
        /// The bearer's name (`sub`), which the publish rate limit counts by.
        #[arg(long, value_name = "NAME")]
        sub: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Some(Command::Token {
            publish,
            subscribe,
            monitor,
            ttl,
            sub,
        }) => {
            let token = auth::mint(
                &settings.auth,
                Permissions {
                    publish,
                    subscribe,
                    monitor,
                },
                ttl.into(),
                sub,
            )?;
            println!("{token}");
            Ok(())
        }
        None => serve(settings, cli.bind, cli.demo, cli.redis, cli.data_dir),
    }
}

#[actix_web::main]
async fn serve(
    mut settings: Settings,
    bind: Option<SocketAddr>,
    demo: Option<bool>,
    redis: Option<String>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Some(bind) = bind {
        settings.server.bind = bind;
    }
    if let Some(demo) = demo {
        settings.demo.enabled = demo;
    }
    if let Some(redis) = redis {
        settings.cluster.redis_url = redis;
    }
    if let Some(data_dir) = data_dir {
        settings.history.data_dir = data_dir;
    }
    // Flags can combine what the files alone could not (e.g. --redis with
    // a data_dir): check again.
    settings.validate()?;
    let app = match Application::build(settings) {
        Ok(app) => app,
        Err(err) => {
            // Actors started before the failure (e.g. a port in use) get
            // their first poll, which sets up their timers, while the runtime
            // still runs, and not during its teardown (a panic there).
            actix_web::rt::task::yield_now().await;
            return Err(err);
        }
    };
    app.run_until_stopped(true).await?;
    Ok(())
}

//! `Application`: binds the listener, starts the broker actors and the HTTP
//! server, and shuts both down cleanly. Tests build it on port 0 and read
//! [`Application::port`]; `main` runs it until SIGINT/SIGTERM.

use std::{net::TcpListener, sync::Arc};

use actix::{Actor, Addr, Arbiter};
use actix_cors::Cors;
use actix_web::{
    App, HttpServer,
    dev::{Server, ServerHandle},
    http::{Method, header},
    middleware::{ErrorHandlers, Logger},
    web,
};
use log::{info, warn};

use crate::{
    broker::{ChannelName, RegistryActor, demo::DemoPublisher, registry::Shutdown},
    cluster::{self, Cluster},
    config::{CorsSettings, Settings},
    error::problem_for_framework_errors,
    http::{self, AppState},
};

pub struct Application {
    port: u16,
    server: Server,
    registry: Addr<RegistryActor>,
    arbiters: Vec<Arbiter>,
    cluster: Option<Cluster>,
}

impl Application {
    /// Binds `settings.server.bind` and prepares everything; nothing is
    /// served until [`Self::run_until_stopped`] is awaited.
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.server.bind)
            .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", settings.server.bind))?;
        let local = listener.local_addr()?;
        let settings = Arc::new(settings);

        let arbiters: Vec<Arbiter> = (0..settings.broker.arbiters)
            .map(|_| Arbiter::new())
            .collect();
        let cluster = match settings.cluster.enabled() {
            true => Some(Cluster::new(
                &settings.cluster,
                &settings.history,
                &settings.pulses,
            )?),
            false => None,
        };
        let mut registry = RegistryActor::new(&settings)
            .with_arbiters(arbiters.iter().map(Arbiter::handle).collect());
        if let Some(cluster) = &cluster {
            registry = registry.with_cluster(cluster.clone());
        }
        let registry = registry.start();
        if let Some(cluster) = &cluster {
            cluster.start(registry.clone());
            info!(
                "cluster mode node={} redis={}",
                cluster.node_id(),
                cluster::redacted(&settings.cluster.redis_url)
            );
        }
        if settings.demo.enabled {
            let channel = ChannelName::parse(&settings.demo.channel)
                .map_err(|err| anyhow::anyhow!("demo.channel: {err}"))?;
            DemoPublisher {
                registry: registry.clone(),
                channel,
                interval: settings.demo.interval,
            }
            .start();
        }
        if !settings.server.public_dir.is_dir() {
            warn!(
                "public_dir not found path={} (the debug console at / will answer 404)",
                settings.server.public_dir.display()
            );
        }

        let state = web::Data::new(AppState {
            registry: registry.clone(),
            settings: Arc::clone(&settings),
            cluster: cluster.clone(),
        });
        let app_settings = Arc::clone(&settings);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(cors(&app_settings.cors))
                .wrap(ErrorHandlers::new().default_handler(problem_for_framework_errors))
                .wrap(
                    Logger::new("access remote=%a request=\"%r\" status=%s bytes=%b ms=%D")
                        .exclude_regex("^/stream"),
                )
                .configure(http::configure)
                .service(
                    actix_files::Files::new("/", &app_settings.server.public_dir)
                        .index_file("index.html"),
                )
        })
        .listen(listener)?
        // A browser that goes away closes its side; without this the stream
        // would stay registered until the next write (up to a heartbeat).
        .h1_allow_half_closed(false)
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs().max(1));
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        info!(
            "listening addr={local} demo={} heartbeat={:?}",
            settings.demo.enabled, settings.stream.heartbeat
        );
        Ok(Self {
            port: local.port(),
            server: server.run(),
            registry,
            arbiters,
            cluster,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the application (see [`stop`]).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            registry: self.registry.clone(),
            cluster: self.cluster.clone(),
        }
    }

    /// Serves until stopped through a [`Stopper`] or, when `signals` is set,
    /// SIGINT/SIGTERM.
    pub async fn run_until_stopped(self, signals: bool) -> std::io::Result<()> {
        if signals {
            let stopper = self.stopper();
            actix_web::rt::spawn(async move {
                wait_for_signal().await;
                stopper.stop().await;
            });
        }
        let result = self.server.await;
        for arbiter in self.arbiters {
            arbiter.stop();
        }
        info!("stopped");
        result
    }
}

/// Stops a running application: new subscriptions are refused, open streams
/// end cleanly (clients reconnect elsewhere or later), then the server stops
/// accepting and finishes in-flight requests.
#[derive(Clone)]
pub struct Stopper {
    server: ServerHandle,
    registry: Addr<RegistryActor>,
    cluster: Option<Cluster>,
}

impl Stopper {
    pub async fn stop(&self) {
        let streams = self.registry.send(Shutdown).await.unwrap_or(0);
        info!("shutting down open_streams={streams}");
        if let Some(cluster) = &self.cluster {
            cluster.shutdown();
        }
        self.server.stop(true).await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => info!("signal received signal=SIGINT"),
                    _ = term.recv() => info!("signal received signal=SIGTERM"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// CORS from the configuration: listed origins (a `:*` port matches any
/// port), preflight answered, credentials only when configured.
fn cors(settings: &CorsSettings) -> Cors {
    let patterns = settings.allowed_origins.clone();
    let mut cors = if patterns.iter().any(|p| p == "*") {
        Cors::default().allow_any_origin()
    } else {
        Cors::default().allowed_origin_fn(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|origin| patterns.iter().any(|p| origin_matches(p, origin)))
        })
    };
    cors = cors
        .allowed_methods([Method::GET, Method::POST, Method::DELETE])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::CACHE_CONTROL,
        ])
        .allowed_header("last-event-id")
        .max_age(3600);
    if settings.allow_credentials {
        cors = cors.supports_credentials();
    }
    cors
}

/// `http://localhost:*` matches `http://localhost:` followed by a port.
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with(':') => origin
            .strip_prefix(prefix)
            .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())),
        _ => pattern == origin,
    }
}

#[cfg(test)]
mod tests {
    use super::origin_matches;

    /// Port wildcards match ports only.
    #[test]
    fn origin_patterns() {
        assert!(origin_matches(
            "http://localhost:*",
            "http://localhost:3000"
        ));
        assert!(!origin_matches("http://localhost:*", "http://localhost:"));
        assert!(!origin_matches(
            "http://localhost:*",
            "http://localhost:30/x"
        ));
        assert!(!origin_matches(
            "http://localhost:*",
            "http://localhost.evil.com:80"
        ));
        assert!(origin_matches(
            "https://app.example.com",
            "https://app.example.com"
        ));
        assert!(!origin_matches(
            "https://app.example.com",
            "https://app.example.com.evil"
        ));
    }
}

//! `Application`: binds the listener, starts the broker actors and the HTTP
//! server, and shuts both down cleanly. Tests build it on port 0 and read
//! [`Application::port`]; `main` runs it until SIGINT/SIGTERM.

use std::sync::{Arc, Mutex, PoisonError};

use actix::{Actor, Addr, Arbiter};
use actix_cors::Cors;
use actix_web::{
    App, HttpServer,
    dev::{Server, ServerHandle},
    http::{Method, header},
    middleware::{Condition, ErrorHandlers, Logger},
    web,
};
use log::{info, warn};

use crate::{
    auth::Auth,
    broker::{
        ChannelName, RegistryActor,
        demo::DemoPublisher,
        registry::{Homes, Shutdown},
    },
    cluster::{self, Cluster},
    config::{CorsSettings, LogSettings, Settings},
    error::problem_for_framework_errors,
    http::{self, AppState, guard::Limits},
    mercure::{HubActor, MercureState, auth::TokenChecker, hub::CloseStreams},
    metrics::Metrics,
    readiness::{Readiness, RegistryCheck},
    store::Store,
};

/// Pending connections the kernel queues for us. std's default of 128
/// overflows when thousands of EventSource clients reconnect at once (e.g.
/// after a deploy); Linux caps it at net.core.somaxconn (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// Mailbox size of the Mercure hub, as actix's default. Only `try_send`
/// heeds it; the broker sends with `do_send`, which does not wait.
const HUB_MAILBOX: usize = 16;

pub struct Application {
    port: u16,
    server: Server,
    registry: Addr<RegistryActor>,
    arbiters: Vec<Arbiter>,
    cluster: Option<Cluster>,
    mercure: Option<Addr<HubActor>>,
    store: Option<Store>,
}

impl Application {
    /// Binds `settings.server.bind` and prepares everything; nothing is
    /// served until [`Self::run_until_stopped`] is awaited.
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        // Keys first: a broken auth setup must not start anything.
        let auth = Auth::from_settings(&settings.auth)?;
        let settings = Arc::new(settings);

        let arbiters: Vec<Arbiter> = (0..settings.broker.arbiters)
            .map(|_| Arbiter::new())
            .collect();
        // Where channel actors run; with no dedicated arbiter, the HTTP
        // workers join as they start (see the server factory below).
        let homes = Homes::default();
        for arbiter in &arbiters {
            homes.add(arbiter.handle());
        }
        let metrics = Metrics::new(&settings.metrics);
        let cluster = match settings.cluster.enabled() {
            true => Some(Cluster::new(
                &settings.cluster,
                &settings.history,
                &settings.pulses,
            )?),
            false => None,
        };
        // A damaged or unreadable store stops the start here, naming the file.
        let store = match settings.history.durable() {
            true => Some(Store::open(&settings.history, &metrics)?),
            false => None,
        };
        // The hub and the registry know each other: the hub's address exists
        // before it runs.
        let hub = settings.mercure.enabled.then(|| {
            let (tx, mailbox) = actix::dev::channel::channel::<HubActor>(HUB_MAILBOX);
            (Addr::new(tx), mailbox)
        });
        let mut registry = RegistryActor::new(&settings)
            .with_arbiters(homes.clone())
            .with_metrics(Arc::clone(&metrics));
        if let Some((hub, _)) = &hub
            && settings.mercure.channel_updates
        {
            registry = registry.with_mercure(hub.clone().recipient());
        }
        if let Some(cluster) = &cluster {
            registry = registry.with_cluster(cluster.clone());
        }
        if let Some(store) = &store {
            registry = registry.with_store(store.clone());
        }
        let directory = registry.directory();
        let total_subscribers = registry.total_subscribers();
        let registry = registry.start();
        let pending_hub = Arc::new(Mutex::new(None));
        let mercure = match hub {
            Some((hub, mailbox)) => {
                let tokens = TokenChecker::from_settings(&settings.mercure)
                    .map_err(|err| anyhow::anyhow!("mercure: {err}"))?;
                let actor = HubActor::new(&settings, registry.clone(), Arc::clone(&metrics));
                // With channels on the HTTP workers, on the first worker (no
                // thread hop for its channels' events); otherwise here, with
                // the registry: on the channels' own arbiter it cost ~15 % of
                // the publish rate (BENCHMARKS.md, optimisations).
                match arbiters.is_empty() {
                    true => {
                        *pending_hub.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some((mailbox, actor))
                    }
                    false => {
                        actix::Context::with_receiver(mailbox).run(actor);
                    }
                }
                Some(web::Data::new(MercureState {
                    hub,
                    total_subscribers,
                    tokens,
                    settings: Arc::clone(&settings),
                    metrics: Arc::clone(&metrics),
                }))
            }
            None => None,
        };
        let mut readiness = Readiness::new(settings.health.ready_timeout).with(RegistryCheck {
            registry: registry.clone(),
        });
        if let Some(store) = &store {
            readiness = readiness.with(store.clone());
            info!(
                "durable history path={} sync={:?}",
                store.path().display(),
                settings.history.sync
            );
        }
        if let Some(cluster) = &cluster {
            cluster.start(registry.clone());
            readiness = readiness.with(cluster.clone());
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
            directory,
            settings: Arc::clone(&settings),
            metrics,
            readiness,
            cluster: cluster.clone(),
            auth,
            limits: Limits::new(&settings.limits),
        });
        let app_settings = Arc::clone(&settings);
        let hub = mercure.as_ref().map(|state| state.hub.clone());
        let app_mercure = mercure;
        let worker_homes = arbiters.is_empty().then_some(homes);
        // Only when its lines would be written: the middleware formats every
        // request's line (peer address, request line) before the log filter
        // sees it, ~7 % of the instructions of a publish with RUST_LOG=warn.
        let access_log_on = settings.log.access_log
            && log::log_enabled!(target: "actix_web::middleware::logger", log::Level::Info);
        let mut server = HttpServer::new(move || {
            // Runs once on each worker thread, as it starts.
            if let Some(homes) = &worker_homes {
                homes.add(Arbiter::current());
                let hub = pending_hub
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some((mailbox, actor)) = hub {
                    actix::Context::with_receiver(mailbox).run(actor);
                }
            }
            App::new()
                .app_data(state.clone())
                .wrap(cors(&app_settings.cors))
                .wrap(ErrorHandlers::new().default_handler(problem_for_framework_errors))
                .wrap(Condition::new(access_log_on, access_log(&app_settings.log)))
                .configure(http::configure)
                .configure(|cfg| http::configure_operations(cfg, &app_settings))
                .configure(|cfg| {
                    if let Some(state) = &app_mercure {
                        crate::mercure::routes::configure(cfg, state.clone());
                    }
                })
                .service(
                    actix_files::Files::new("/", &app_settings.server.public_dir)
                        .index_file("index.html"),
                )
        })
        .backlog(LISTEN_BACKLOG)
        // A browser that goes away closes its side; without this the stream
        // would stay registered until the next write (up to a heartbeat).
        .h1_allow_half_closed(false)
        .keep_alive(settings.server.keep_alive)
        .client_request_timeout(settings.server.client_request_timeout)
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs().max(1));
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let bind = settings.server.bind;
        let server = server
            .bind(bind)
            .map_err(|err| anyhow::anyhow!("cannot listen on {bind}: {err}"))?;
        let local = *server
            .addrs()
            .first()
            .ok_or_else(|| anyhow::anyhow!("no address bound for {bind}"))?;
        info!(
            "listening addr={local} demo={} heartbeat={:?} auth={}",
            settings.demo.enabled, settings.stream.heartbeat, settings.auth.enabled
        );
        Ok(Self {
            port: local.port(),
            server: server.run(),
            registry,
            arbiters,
            cluster,
            mercure: hub,
            store,
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
            mercure: self.mercure.clone(),
            store: self.store.clone(),
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

/// Stops a running application (the graceful drain):
/// 1. the server stops accepting connections (the listener closes, so new
///    clients and reconnecting subscribers reach another instance, or this
///    one's successor on the same port);
/// 2. the registry refuses new subscriptions and publishes (503 with
///    Retry-After; `/readyz` turns 503) and tells every channel to let go of
///    its subscribers: each open stream writes the events already queued,
///    then a reconnect hint, and ends;
/// 3. in-flight requests finish; publishes that reached the registry before
///    step 2 were fanned out to the subscribers before their streams closed;
/// 4. whatever is still open after `server.shutdown_timeout` is cut.
///
/// A publish is thus either answered 202 and delivered to every stream that
/// was open, or answered 503 — never accepted and then dropped by the drain.
/// With durable history, the store's writer then commits what it holds and
/// stops; the history outlives the process.
#[derive(Clone)]
pub struct Stopper {
    server: ServerHandle,
    registry: Addr<RegistryActor>,
    cluster: Option<Cluster>,
    mercure: Option<Addr<HubActor>>,
    store: Option<Store>,
}

impl Stopper {
    pub async fn stop(&self) {
        // `stop` sends its command at once; the future only awaits the end.
        let stopped = self.server.stop(true);
        let mut streams = self.registry.send(Shutdown).await.unwrap_or(0);
        if let Some(hub) = &self.mercure {
            streams += hub.send(CloseStreams).await.unwrap_or(0);
        }
        info!("draining open_streams={streams}");
        stopped.await;
        if let Some(cluster) = &self.cluster {
            cluster.shutdown();
        }
        if let Some(store) = &self.store {
            store.close().await;
        }
    }
}

/// The access log middleware: one `access …` line per request; event streams
/// only when `access_log_streams` is set (the line is written once the
/// response head is out: the connection then belongs to the stream's writer).
fn access_log(settings: &LogSettings) -> Logger {
    let logger = Logger::new("access remote=%a request=\"%r\" status=%s bytes=%b ms=%D");
    if settings.access_log_streams {
        logger
    } else {
        logger.exclude_regex("^/stream")
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

//! `Application`: binds the listener (plain HTTP, HTTPS with `crate::tls`,
//! or plain with h2c), starts the broker actors and the HTTP server, and
//! shuts both down cleanly. Tests build it on port 0 and read
//! [`Application::port`]; `main` runs it until SIGINT/SIGTERM (and reloads
//! the certificate files on SIGHUP). The middleware every route is wrapped
//! in is built in `middleware` (access log, CORS).

mod middleware;

use std::sync::Arc;

use actix::{Actor, Arbiter};
use actix_web::{
    App, HttpServer,
    dev::{Server, ServerHandle},
    middleware::{Condition, ErrorHandlers},
    web,
};
use log::{info, warn};

use self::middleware::{access_log, cors};

use crate::{
    auth::{AccessPolicy, Auth},
    broker::{
        Broker, RegistryActor,
        demo::DemoPublisher,
        directory::Homes,
        log::{DurableStore, SharedLog},
        occupancy::{OccupancyWatch, SharedOccupancy},
        peers::Peers,
        presence::PresenceShare,
    },
    cluster::{self, Cluster},
    config::{Settings, StreamWriter, secrets},
    error::problem_for_framework_errors,
    hooks::Hooks,
    http::{self, AppState, access::Limits, stream::slots::StreamSlots, users::ForgetAnswers},
    mercure::{
        self, MercureState,
        auth::TokenChecker,
        bridge::ChannelBridge,
        hub::{HubCodec, hub_channel},
    },
    metrics::Metrics,
    names::ChannelName,
    readiness::Readiness,
    store::Store,
    tls::{self, Reloader, Tls},
    webhooks::Webhooks,
};

/// Pending connections the kernel queues for us. std's default of 128
/// overflows when thousands of EventSource clients reconnect at once (e.g.
/// after a deploy); Linux caps it at net.core.somaxconn (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

pub struct Application {
    port: u16,
    server: Server,
    broker: Broker,
    arbiters: Vec<Arbiter>,
    cluster: Option<Cluster>,
    store: Option<Store>,
    /// Reads the certificate files again on SIGHUP (HTTPS with files).
    reloader: Option<Reloader>,
    /// The plain-HTTP listener that redirects to HTTPS, if configured.
    redirect: Option<ServerHandle>,
}

/// What must be right before anything starts: our token keys and the
/// access policy, the Mercure issuers' keys, the TLS certificate. A broken
/// one stops the start here, with nothing left running.
struct Keys {
    auth: Auth,
    access: Arc<AccessPolicy>,
    tls: Option<Tls>,
    /// The Mercure hub's token checks; `None` when the hub is off.
    mercure: Option<TokenChecker>,
    /// The application's hook; `None` when it is off.
    hooks: Option<Arc<Hooks>>,
    /// The application's publish hook; `None` when it is off.
    publish_hook: Option<Arc<Hooks>>,
}

impl Keys {
    fn load(settings: &Settings) -> anyhow::Result<Self> {
        let auth = Auth::from_settings(&settings.auth)?;
        let access = Arc::new(settings.auth.policy()?);
        let tls = Tls::build(&settings.server.tls)
            .map_err(|err| anyhow::anyhow!("invalid configuration: server.tls: {err}"))?;
        let accept_development_key = settings
            .mercure
            .accepts_development_key(settings.auth.enabled);
        let mercure = match settings.mercure.enabled {
            true => Some(
                TokenChecker::from_settings(&settings.mercure, accept_development_key)
                    .map_err(|err| anyhow::anyhow!("invalid configuration: mercure: {err}"))?,
            ),
            false => None,
        };
        for warning in secrets::warnings(settings) {
            warn!("{warning}");
        }
        if settings.mercure.enabled
            && settings.mercure.resource_identifier.is_empty()
            && !accept_development_key
        {
            warn!(
                "mercure.resource_identifier is not set: the audience tokens must carry is \
                 derived from each request (Host, or what a proxy of \
                 limits.trusted_proxies forwards); pin it to your hub's public URL"
            );
        }
        // The hook's client speaks rustls (an https:// hook) on the
        // broker's provider; installing it twice is harmless.
        let _ = tls::provider().as_ref().clone().install_default();
        let invalid = |err| anyhow::anyhow!("invalid configuration: {err}");
        let hooks = Hooks::subscribe(&settings.hooks)
            .map_err(invalid)?
            .map(Arc::new);
        let publish_hook = Hooks::publish(&settings.hooks)
            .map_err(invalid)?
            .map(Arc::new);
        for (hook, url) in [
            (&hooks, &settings.hooks.subscribe_url),
            (&publish_hook, &settings.hooks.publish_url),
        ] {
            if let Some(hook) = hook {
                info!(
                    "authorization hook url={} failure_policy={:?}",
                    url.trim(),
                    hook.failure_policy()
                );
            }
        }
        // `true` is refused by validation; `false` said what the default says.
        if settings.limits.trust_forwarded_for.is_some() {
            warn!(
                "limits.trust_forwarded_for is obsolete and ignored: remove it \
                 (limits.trusted_proxies lists the proxies whose headers count)"
            );
        }
        Ok(Self {
            auth,
            access,
            tls,
            mercure,
            hooks,
            publish_hook,
        })
    }
}

/// Where history lives besides memory: the shared log (cluster mode) or
/// the durable store. A damaged store or a bad Redis URL stops the start
/// here, naming it.
struct Backends {
    cluster: Option<Cluster>,
    store: Option<Store>,
}

impl Backends {
    fn open(settings: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<Self> {
        let cluster = match settings.cluster.enabled() {
            true => Some(Cluster::new(
                &settings.cluster,
                &settings.history,
                &settings.publish,
                &settings.pulses,
            )?),
            false => None,
        };
        let store = match settings.history.durable() {
            true => Some(Store::open(&settings.history, &settings.publish, metrics)?),
            false => None,
        };
        Ok(Self { cluster, store })
    }
}

/// The running broker core: its actors, where they live, and what the
/// readiness probe asks.
struct Core {
    broker: Broker,
    arbiters: Vec<Arbiter>,
    /// Where channel actors run; with no dedicated arbiter the HTTP workers
    /// join as they start (see [`serve`]).
    homes: Homes,
    readiness: Readiness,
}

impl Core {
    /// Starts the registry with the backends, the Mercure hub's codec and
    /// the bridge that copies channel events to it, and the occupancy
    /// webhooks, then the cluster's tasks and the demo publisher.
    fn start(
        settings: &Arc<Settings>,
        access: &Arc<AccessPolicy>,
        backends: &Backends,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let arbiters: Vec<Arbiter> = (0..settings.broker.arbiters)
            .map(|_| Arbiter::new())
            .collect();
        let homes = Homes::default();
        for arbiter in &arbiters {
            homes.add(arbiter.handle());
        }
        let mut registry = RegistryActor::new(settings)
            .with_homes(homes.clone())
            .with_metrics(Arc::clone(metrics));
        // The Mercure hub is a channel of the broker: its codec, and the
        // bridge that copies channel events to it, go in before the start.
        let bridge = (settings.mercure.enabled && settings.mercure.channel_updates)
            .then(|| Arc::new(ChannelBridge::new(Arc::clone(access))));
        if settings.mercure.enabled {
            let codec = HubCodec {
                access: Arc::clone(access),
            };
            registry = registry.with_codec(hub_channel(), Arc::new(codec));
        }
        if let Some(bridge) = &bridge {
            registry = registry.with_bridge(bridge.clone());
        }
        if let Some(cluster) = &backends.cluster {
            registry = registry
                .with_shared(Arc::new(cluster.clone()) as Arc<dyn SharedLog>)
                .with_presence_share(Arc::new(cluster.clone()) as Arc<dyn PresenceShare>);
        }
        if let Some(store) = &backends.store {
            registry = registry.with_durable(Arc::new(store.clone()) as Arc<dyn DurableStore>);
        }
        let data_dir = settings
            .history
            .durable()
            .then_some(settings.history.data_dir.as_path());
        let shared = match &backends.cluster {
            Some(cluster) if settings.webhooks.enabled() => {
                cluster.track_occupancy(cluster::occupancy::Tracking {
                    grace: settings.webhooks.vacated_after,
                    max_queue: settings.webhooks.max_pending,
                });
                let shared = Arc::new(cluster.clone()) as Arc<dyn SharedOccupancy>;
                Some((shared, settings.cluster.presence_interval))
            }
            _ => None,
        };
        let webhooks = Webhooks::start(&settings.webhooks, data_dir, metrics, shared)
            .map_err(|err| anyhow::anyhow!("webhooks: {err}"))?;
        if let Some(webhooks) = webhooks {
            registry = registry.with_occupancy_watch(webhooks as Arc<dyn OccupancyWatch>);
        }
        let peers = backends
            .cluster
            .clone()
            .map(|cluster| Arc::new(cluster) as Arc<dyn Peers>);
        let broker = Broker::start(registry, peers);
        if let Some(bridge) = &bridge {
            bridge.connect(broker.clone());
        }
        let mut readiness =
            Readiness::new(settings.health.ready_timeout).with(broker.readiness_check());
        if let Some(store) = &backends.store {
            readiness = readiness.with(store.clone());
            info!(
                "durable history path={} sync={:?}",
                store.path().display(),
                settings.history.sync
            );
        }
        if let Some(cluster) = &backends.cluster {
            cluster.start(broker.clone());
            readiness = readiness.with(cluster.clone());
            info!(
                "cluster mode node={} redis_mode={:?} redis={}",
                cluster.node_id(),
                settings.cluster.redis_mode,
                cluster::redacted(&settings.cluster.redis_url)
            );
        }
        if settings.demo.enabled {
            let channel = ChannelName::parse(&settings.demo.channel)
                .map_err(|err| anyhow::anyhow!("demo.channel: {err}"))?;
            DemoPublisher {
                broker: broker.clone(),
                channel,
                interval: settings.demo.interval,
            }
            .start();
        }
        Ok(Self {
            broker,
            arbiters,
            homes,
            readiness,
        })
    }
}

/// The HTTP side, bound and running: the server and, if configured, the
/// plain-HTTP redirect listener.
struct Serving {
    server: Server,
    port: u16,
    redirect: Option<ServerHandle>,
    /// Reads the certificate files again on SIGHUP (HTTPS with files).
    reloader: Option<Reloader>,
}

/// Builds the HTTP server over the broker (our routes, the Mercure hub, the
/// operations endpoints, the console's files), binds it (plain, HTTPS or
/// h2c) and the redirect listener, and starts serving.
fn serve(
    settings: &Arc<Settings>,
    keys: Keys,
    core: &Core,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Serving> {
    let Keys {
        auth,
        access,
        tls,
        mercure,
        hooks,
        publish_hook,
    } = keys;
    for hook in [&hooks, &publish_hook].into_iter().flatten() {
        core.broker
            .listen_for_revocations(Arc::new(ForgetAnswers(Arc::clone(hook))));
    }
    let mercure = mercure.map(|tokens| {
        web::Data::new(MercureState {
            tokens,
            access: Arc::clone(&access),
            settings: Arc::clone(settings),
            metrics: Arc::clone(&metrics),
            subscriptions: Arc::default(),
        })
    });
    if !settings.server.public_dir.is_dir() {
        warn!(
            "public_dir not found path={} (the debug console at / will answer 404)",
            settings.server.public_dir.display()
        );
    }
    let state = web::Data::new(AppState {
        broker: core.broker.clone(),
        settings: Arc::clone(settings),
        metrics,
        readiness: core.readiness.clone(),
        auth,
        access,
        limits: Limits::new(&settings.limits),
        stream_slots: StreamSlots::new(&settings.limits),
        hooks,
        publish_hook,
    });
    let app_settings = Arc::clone(settings);
    let worker_homes = core.arbiters.is_empty().then(|| core.homes.clone());
    // Only when its lines would be written: the middleware formats every
    // request's line (peer address, request line) before the log filter
    // sees it, ~7 % of the instructions of a publish with RUST_LOG=warn.
    let access_log_on = settings.log.access_log
        && log::log_enabled!(target: "actix_web::middleware::logger", log::Level::Info);
    let mut server = HttpServer::new(move || {
        // Runs once on each worker thread, as it starts.
        if let Some(homes) = &worker_homes {
            homes.add(Arbiter::current());
        }
        App::new()
            .app_data(state.clone())
            .wrap(cors(&app_settings.cors))
            .wrap(ErrorHandlers::new().default_handler(problem_for_framework_errors))
            .wrap(Condition::new(
                access_log_on,
                access_log(&app_settings.log, &app_settings.limits),
            ))
            .configure(http::configure)
            .configure(|cfg| http::configure_operations(cfg, &app_settings))
            .configure(|cfg| {
                if let Some(state) = &mercure {
                    mercure::configure(cfg, state.clone());
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
    let h2c = settings.server.tls.h2c;
    if settings.stream.writer == StreamWriter::Body || tls.is_some() || h2c {
        // The body writer (every TLS and HTTP/2 stream) bounds the end
        // of an HTTP/1 stream with the socket.
        server = server.on_connect(http::stream::socket::remember_socket);
    }
    let bind = settings.server.bind;
    let server = match &tls {
        Some(tls) => server.bind_rustls_0_23(bind, tls.server_config()),
        None if h2c => server.bind_auto_h2c(bind),
        None => server.bind(bind),
    }
    .map_err(|err| anyhow::anyhow!("cannot listen on {bind}: {err}"))?;
    let local = *server
        .addrs()
        .first()
        .ok_or_else(|| anyhow::anyhow!("no address bound for {bind}"))?;
    let scheme = match (&tls, h2c) {
        (Some(_), _) => "https",
        (None, true) => "http+h2c",
        (None, false) => "http",
    };
    info!(
        "listening addr={local} scheme={scheme} demo={} heartbeat={:?} auth={}",
        settings.demo.enabled, settings.stream.heartbeat, settings.auth.enabled
    );
    // The redirect listener binds before anything runs: a port it cannot
    // have stops the start with nothing left behind.
    let redirect = match settings.server.tls.redirect_bind {
        Some(bind) => {
            let (redirect, addr) = tls::redirect::server(bind, local.port())?;
            info!("redirecting to https addr={addr}");
            let handle = redirect.handle();
            actix_web::rt::spawn(redirect);
            Some(handle)
        }
        None => None,
    };
    Ok(Serving {
        server: server.run(),
        port: local.port(),
        redirect,
        reloader: tls.as_ref().map(Tls::start),
    })
}

impl Application {
    /// Binds `settings.server.bind` and prepares everything; nothing is
    /// served until [`Self::run_until_stopped`] is awaited. In four steps:
    /// the keys, the backends, the broker core, the HTTP server.
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let keys = Keys::load(&settings)?;
        let settings = Arc::new(settings);
        let metrics = Metrics::new(&settings.metrics);
        let backends = Backends::open(&settings, &metrics)?;
        let core = Core::start(&settings, &keys.access, &backends, &metrics)?;
        let serving = serve(&settings, keys, &core, metrics)?;
        Ok(Self {
            port: serving.port,
            server: serving.server,
            broker: core.broker,
            arbiters: core.arbiters,
            cluster: backends.cluster,
            store: backends.store,
            reloader: serving.reloader,
            redirect: serving.redirect,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the application (see [`stop`]).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            redirect: self.redirect.clone(),
            broker: self.broker.clone(),
            cluster: self.cluster.clone(),
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
            if let Some(reloader) = self.reloader.clone() {
                reload_on_sighup(reloader);
            }
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
    redirect: Option<ServerHandle>,
    broker: Broker,
    cluster: Option<Cluster>,
    store: Option<Store>,
}

impl Stopper {
    pub async fn stop(&self) {
        // `stop` sends its command at once; the future only awaits the end.
        let stopped = self.server.stop(true);
        if let Some(redirect) = &self.redirect {
            redirect.stop(false).await;
        }
        let streams = self.broker.shutdown().await;
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

/// SIGHUP reads the TLS certificate files again (`systemctl reload`).
fn reload_on_sighup(reloader: Reloader) {
    #[cfg(unix)]
    actix_web::rt::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            warn!("SIGHUP cannot be handled: the certificate files reload on change only");
            return;
        };
        while hangup.recv().await.is_some() {
            info!("signal received signal=SIGHUP (reloading the TLS certificate)");
            reloader.reload();
        }
    });
}

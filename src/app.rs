//! The composition root: the one place that names concrete implementations.
//!
//! [`start`] brings a node up: metrics, tokens, the media workers, TLS, the HTTP listener(s) and
//! the metrics listener;
//! [`RunningNode::stop`] takes it down in reverse (not ready → drain HTTP → close media → stop
//! the table actors, which closes their logs).
//! [`run`] is `start`, then wait for the shutdown future (or a listener failing), then `stop`.

use crate::api::{self, ApiState, BehindProxy, DemoPolicy, Readiness, ReadyState, RouterOptions};
use crate::auth::{TokenRole, TokenSetupError, Tokens};
use crate::certs::{self, CertError, CertOrigin};
use crate::config::Config;
use crate::control::ControlPlane;

mod cluster;
use crate::ids::UserId;
use crate::media::{Media, StartError};
use crate::metrics::Metrics;
use axum_server::Handle;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long open HTTP connections get to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// Why the node could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Tokens(#[from] TokenSetupError),
    #[error(transparent)]
    Media(#[from] StartError),
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error("cannot open the table logs: {0}")]
    Store(Box<crate::store::StoreError>),
    #[error(transparent)]
    Control(Box<crate::control::StartError>),
    #[error("cannot listen on {addr}: {source}; choose another {key} or stop the process using it")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("the {listener} listener failed: {source}")]
    Serve {
        listener: &'static str,
        source: std::io::Error,
    },
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        AppError::Store(Box::new(e))
    }
}

impl From<crate::control::StartError> for AppError {
    fn from(e: crate::control::StartError) -> Self {
        AppError::Control(Box::new(e))
    }
}

/// A started node. Drop without [`RunningNode::stop`] leaves its tasks running until the
/// runtime ends.
pub struct RunningNode {
    http_addr: SocketAddr,
    plain_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    tls: bool,
    tokens: Arc<Tokens>,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    handles: Vec<Handle<SocketAddr>>,
    servers: Vec<JoinHandle<()>>,
    exited: mpsc::UnboundedReceiver<(&'static str, std::io::Result<()>)>,
    media: Media,
    control: Arc<ControlPlane>,
    placement: Option<cluster::PlacementTask>,
    /// Turns true on `POST /api/v1/cluster/nodes/{me}/drain`.
    drain_requested: tokio::sync::watch::Receiver<bool>,
    drain_timeout: Duration,
}

impl RunningNode {
    /// The bound address of the main listener (`[http] listen`; the real port when it was 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound address of the extra plain-HTTP listener, if configured.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_addr
    }

    /// The bound address of the `[metrics] listen` listener, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `http://addr` or `https://addr` of the main listener (a wildcard address becomes loopback).
    pub fn base_url(&self) -> String {
        base_url(self.http_addr, self.tls)
    }

    /// Signs a token with this node's secret (`table` may be `*` for an operator).
    pub fn issue_token(
        &self,
        role: TokenRole,
        table: &str,
        user: &str,
        ttl: Duration,
    ) -> Result<String, TokenSetupError> {
        let user = UserId::parse(user).map_err(|e| TokenSetupError::BadRequest(e.to_string()))?;
        self.tokens.issue(role, table, &user, ttl)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// In a cluster, hands this node's tables to other nodes first (at most `[cluster]
    /// drain_timeout_secs`, with the whole stop), then stops: players connected here are told
    /// to move and resume elsewhere.
    pub async fn drain_and_stop(mut self) {
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        if let Some(placement) = &mut self.placement {
            placement.drain.send_replace(true);
            let drained =
                tokio::time::timeout_at(deadline, placement.drained.wait_for(|d| *d)).await;
            if drained.is_err() {
                tracing::warn!(
                    "drain deadline reached before every table moved; their leases lapse by themselves"
                );
            }
        }
        if tokio::time::timeout_at(deadline, self.stop())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline reached while stopping; exiting anyway");
        }
    }

    /// Not ready → drain HTTP connections (at most 5 s) → close every media session → stop the
    /// table writers (their logs are closed and unlocked when this returns).
    pub async fn stop(self) {
        self.readiness.set(ReadyState::Stopping);
        // Players on WebSockets are told to reconnect (to another node, in a cluster).
        self.control.close_connections();
        for handle in &self.handles {
            handle.graceful_shutdown(Some(HTTP_DRAIN));
        }
        for server in self.servers {
            let _ = server.await;
        }
        self.media.shutdown().await;
        if let Some(placement) = self.placement {
            placement.stop.send_replace(true);
            let _ = placement.task.await;
        }
        // Last: the tables' logs are closed (and unlocked) once their writers have ended.
        self.control.stop().await;
        tracing::info!("stopped");
    }
}

/// Runs a node until `shutdown` completes (or a listener fails), then stops it gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
    let mut node = start(config).await?;
    let mut drain = node.drain_requested.clone();
    let failed = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            None
        }
        _ = drain.wait_for(|d| *d) => {
            tracing::info!("draining on request");
            None
        }
        Some((listener, result)) = node.exited.recv() => Some((listener, result)),
    };
    node.drain_and_stop().await;
    match failed {
        Some((listener, Err(source))) => Err(AppError::Serve { listener, source }),
        Some((listener, Ok(()))) => Err(AppError::Serve {
            listener,
            source: std::io::Error::other("stopped unexpectedly"),
        }),
        None => Ok(()),
    }
}

/// Starts a node and returns once every listener is bound and it is ready.
pub async fn start(config: Config) -> Result<RunningNode, AppError> {
    certs::install_crypto_provider();
    let metrics = Metrics::new();
    let tokens = Arc::new(Tokens::from_config(&config.auth, &config.data.dir)?);
    let tables: Arc<std::collections::BTreeSet<_>> =
        Arc::new(config.table_ids().into_iter().collect());
    let readiness = Readiness::default();

    // Bind before starting anything that would need tearing down on a busy port.
    let main = bind(config.http.listen, "[http] listen")?;
    let plain = config
        .http
        .plain_listen
        .map(|addr| bind(addr, "[http] plain_listen"))
        .transpose()?;
    let metrics_listener = config
        .metrics
        .listen
        .map(|addr| bind(addr, "[metrics] listen"))
        .transpose()?;
    let tls = if config.http.tls {
        let (tls, origin) = certs::rustls_config(&config.http, &config.media.announce_ips)?;
        if origin == CertOrigin::Configured {
            tracing::info!(cert = %config.http.cert.display(), "serving HTTPS");
        }
        Some(tls)
    } else {
        None
    };

    let http_addr = local_addr(&main, config.http.listen, "[http] listen")?;
    let public_url = match config.node.public_url.trim_end_matches('/') {
        "" => base_url(http_addr, tls.is_some()),
        url => url.to_owned(),
    };
    let cluster::Started {
        control,
        view,
        placement,
    } = cluster::start(&config, tokens.clone(), metrics.clone(), public_url).await?;
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let media = Media::start(
        &config.media,
        view.me.clone(),
        metrics.clone(),
        control.clone(),
    )?;
    control.attach_media(media.handle.clone());
    let cascade = view.clustered.then(|| {
        crate::media::relay::Cascade::new(
            media.handle.clone(),
            view.clone() as Arc<dyn crate::media::relay::Origins>,
            metrics.clone(),
            // `[media] relay_bind_ip` is announced as it is; else the workers' bind address.
            config.media.relay_bind_ip.unwrap_or(config.media.bind_ip),
            config.media.relay_bind_ip.filter(|ip| !ip.is_unspecified()),
        )
    });
    if let Some(cascade) = &cascade {
        // Weak: the view holds this closure, and must not keep itself alive through it.
        let (cascade, names) = (Arc::downgrade(cascade), Arc::downgrade(&view));
        view.set_relay_list(Box::new(move || {
            let (Some(cascade), Some(names)) = (cascade.upgrade(), names.upgrade()) else {
                return Default::default();
            };
            let relays = cascade
                .list()
                .into_iter()
                .map(|r| crate::cluster::RelayRef {
                    from: r.origin.as_deref().and_then(|u| names.node_at(u)),
                    table: r.table,
                    camera: r.camera,
                    layers: r.layers,
                })
                .collect();
            let unreachable = cascade
                .unreachable()
                .into_iter()
                .map(|(table, u)| crate::cluster::UnreachableOrigin {
                    origin: names.node_at(&u.origin),
                    table,
                    since_ms: u.since_ms,
                    error: u.error,
                })
                .collect();
            crate::control::placement::Pulls {
                relays,
                unreachable,
            }
        }));
    }
    let state = ApiState {
        media: media.handle.clone(),
        tokens: tokens.clone(),
        metrics: metrics.clone(),
        tables: tables.clone(),
        readiness: readiness.clone(),
        max_sdp_bytes: config.http.max_sdp_bytes,
        control: control.clone(),
        admission: crate::limits::Admission::new(config.limits.clone(), metrics.clone()),
        cluster: view.clone(),
        cascade: cascade.clone(),
        drain: Arc::new(drain_tx),
        turn: crate::turn::TurnServers::from_config(&config.turn).map(Arc::new),
    };
    if let Some(turn) = &state.turn {
        tracing::info!(
            urls = %turn.urls().join(" "),
            ttl_secs = config.turn.ttl_secs,
            "TURN: WHIP/WHEP replies carry these servers, with credentials from [turn] secret"
        );
    }
    let demo = config
        .auth
        .demo
        .then(|| DemoPolicy::from_config(&config.auth));
    if let Some(policy) = &demo {
        tracing::warn!(
            "DEMO MODE ([auth] demo = true): {}. Set [auth] demo = false (TABLECAST_AUTH_DEMO=false) for anything but a demo.",
            policy.describe()
        );
        for table in policy.tables.iter().filter(|t| !tables.contains(*t)) {
            tracing::warn!(%table, "[auth] demo_tables lists a table this node does not serve");
        }
    }
    let router = api::router(
        state,
        &RouterOptions {
            web_root: config.http.web_root.clone(),
            demo,
        },
    );

    let (exit_tx, exited) = mpsc::unbounded_channel();
    let mut node = RunningNode {
        http_addr,
        plain_addr: None,
        metrics_addr: None,
        tls: tls.is_some(),
        tokens,
        metrics,
        readiness,
        handles: Vec::new(),
        servers: Vec::new(),
        exited,
        media,
        control,
        placement,
        drain_requested: drain_rx,
        drain_timeout: Duration::from_secs(config.cluster.drain_timeout_secs),
    };
    let listeners = Listeners {
        main,
        plain,
        metrics: metrics_listener,
    };
    let serve_result = serve_all(&mut node, &config, router, listeners, tls, exit_tx);
    if let Err(e) = serve_result {
        node.stop().await;
        return Err(e);
    }
    node.readiness.set(ReadyState::Ready);
    tracing::info!(
        node = %config.node_id(),
        url = %node.base_url(),
        plain = ?node.plain_addr,
        metrics = ?node.metrics_addr,
        tables = ?tables.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "tablecast is ready"
    );
    Ok(node)
}

/// The bound sockets, before they are served.
struct Listeners {
    main: TcpListener,
    plain: Option<TcpListener>,
    metrics: Option<TcpListener>,
}

/// Serves every listener. The main and plain listeners hand each request its TCP peer address
/// (`ConnectInfo<SocketAddr>`), which demo mode checks; the plain listener's requests are also
/// marked as coming through a proxy.
fn serve_all(
    node: &mut RunningNode,
    config: &Config,
    router: axum::Router,
    listeners: Listeners,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    exit_tx: mpsc::UnboundedSender<(&'static str, std::io::Result<()>)>,
) -> Result<(), AppError> {
    let Listeners {
        main,
        plain,
        metrics,
    } = listeners;
    let serve_err = |listener, source| AppError::Serve { listener, source };
    let handle = Handle::new();
    let app = router
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    let task = match tls {
        Some(tls) => {
            // TCP_NODELAY: control events and link messages are small writes in a row; with
            // Nagle each waited for the peer's delayed ACK.
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
                .acceptor(axum_server::accept::NoDelayAcceptor::new());
            let server = axum_server::from_tcp(main)
                .map_err(|e| serve_err("https", e))?
                .acceptor(acceptor)
                .handle(handle.clone());
            spawn_server("https", server.serve(app), exit_tx.clone())
        }
        None => {
            let server = axum_server::from_tcp(main)
                .map_err(|e| serve_err("http", e))?
                .acceptor(axum_server::accept::NoDelayAcceptor::new())
                .handle(handle.clone());
            spawn_server("http", server.serve(app), exit_tx.clone())
        }
    };
    node.handles.push(handle);
    node.servers.push(task);

    if let (Some(listener), Some(configured)) = (plain, config.http.plain_listen) {
        node.plain_addr = Some(local_addr(&listener, configured, "[http] plain_listen")?);
        let handle = Handle::new();
        let server = axum_server::from_tcp(listener)
            .map_err(|e| serve_err("plain http", e))?
            .acceptor(axum_server::accept::NoDelayAcceptor::new())
            .handle(handle.clone());
        let app = router
            .layer(axum::Extension(BehindProxy))
            .into_make_service_with_connect_info::<SocketAddr>();
        node.servers.push(spawn_server(
            "plain http",
            server.serve(app),
            exit_tx.clone(),
        ));
        node.handles.push(handle);
    }

    if let (Some(listener), Some(configured)) = (metrics, config.metrics.listen) {
        node.metrics_addr = Some(local_addr(&listener, configured, "[metrics] listen")?);
        let handle = Handle::new();
        let server = axum_server::from_tcp(listener)
            .map_err(|e| serve_err("metrics", e))?
            .handle(handle.clone());
        let app = api::metrics_only(node.metrics.clone()).into_make_service();
        node.servers
            .push(spawn_server("metrics", server.serve(app), exit_tx));
        node.handles.push(handle);
    }
    Ok(())
}

fn spawn_server(
    name: &'static str,
    serve: impl Future<Output = std::io::Result<()>> + Send + 'static,
    exit_tx: mpsc::UnboundedSender<(&'static str, std::io::Result<()>)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let result = serve.await;
        if let Err(e) = &result {
            tracing::error!(listener = name, error = %e, "listener failed");
        }
        let _ = exit_tx.send((name, result));
    })
}

/// `http://addr` or `https://addr` (a wildcard address becomes loopback).
fn base_url(mut addr: SocketAddr, tls: bool) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("{}://{}", if tls { "https" } else { "http" }, addr)
}

fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, AppError> {
    let listener =
        TcpListener::bind(addr).map_err(|source| AppError::Bind { addr, key, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| AppError::Bind { addr, key, source })?;
    Ok(listener)
}

fn local_addr(
    listener: &TcpListener,
    addr: SocketAddr,
    key: &'static str,
) -> Result<SocketAddr, AppError> {
    listener
        .local_addr()
        .map_err(|source| AppError::Bind { addr, key, source })
}

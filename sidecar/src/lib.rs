//! `whouses-sidecar`: a forward proxy that counts, exactly, every call per upstream host,
//! and ships the counts to a whouses collector.
//!
//! Module map, in the order a request meets them:
//!
//! * [`config`] — flags (`WHOUSES_*` env), checked once.
//! * [`proxy`] — accept loop ([`proxy::server`]), the request path of one connection, top
//!   to bottom ([`proxy::relay`]), routing, head parsing, tunnels, dialing.
//! * [`capture`] — transparent mode: the `iptables` subcommand, original destinations,
//!   protocol detection, opaque connections named by DNS.
//! * [`dns`], [`bypass`] — the DNS forwarder and the bypass detector (explicit mode).
//! * [`counters`] — **where a request is counted**: sharded atomic counters per key.
//! * [`inbound`] — inbound mode (issue 14): in front of the service, HTTP, TLS and opaque
//!   TCP counted per name dialed and caller address ([`inbound::peers`]); this instance's
//!   addresses for the collector's address book. Its transparent capture shares
//!   [`capture`]'s iptables subcommand, original destination and protocol detection.
//! * [`shipper`] — numbered batches to the collector, retries, spool, final flush.
//! * [`admin`] — `/healthz`, `/readyz`, `/shipping`, `/metrics`, `/stats`, and the
//!   probe-only listener.
//! * [`metrics`] — Prometheus metrics.
//!
//! [`run`] wires them together and owns the shutdown order: stop accepting → drain
//! in-flight requests and tunnels → final flush → exit.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use whouses_wire::Timestamp;

pub mod admin;
pub mod bypass;
pub mod capture;
pub mod config;
pub mod counters;
pub mod dns;
pub mod inbound;
pub mod metrics;
pub mod proxy;
pub mod shipper;

pub use config::Config;

/// Who is calling: the identity every batch carries.
#[derive(Debug, Clone)]
pub struct Identity {
    pub service: String,
    pub environment: String,
    pub instance: String,
    pub started_at: Timestamp,
    /// The owning team (`--owner`), sent with every batch.
    pub owner: Option<String>,
}

/// Bind the DNS forwarder's UDP socket and TCP listener on one address (with port 0, the
/// TCP listener takes the port the UDP socket got) and find its upstream.
async fn bind_dns(
    addr: std::net::SocketAddr,
    upstream: Option<std::net::SocketAddr>,
) -> anyhow::Result<(tokio::net::UdpSocket, TcpListener, std::net::SocketAddr)> {
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --dns-listen {addr} (UDP)"))?;
    let bound = udp.local_addr()?;
    let tcp = TcpListener::bind(bound)
        .await
        .with_context(|| format!("cannot listen on --dns-listen {bound} (TCP)"))?;
    let upstream = dns::forwarder::upstream(upstream, "/etc/resolv.conf", bound)?;
    tracing::info!(listen = %bound, %upstream, "DNS forwarder started.");
    Ok((udp, tcp, upstream))
}

/// The listeners the sidecar serves, already bound.
pub struct Listeners {
    /// `--listen`: the forward proxy.
    pub proxy: TcpListener,
    /// `--admin-listen`: health, readiness, shipping, metrics, stats.
    pub admin: TcpListener,
    /// `--probe-listen`: only `/healthz` and `/readyz`.
    pub probe: Option<TcpListener>,
}

/// Run the sidecar on already-bound listeners until `shutdown` completes, then drain and
/// ship a final flush. Installs no global state, so several can run in one process.
/// `--probe-listen`, when set, is bound here.
pub async fn run(
    config: Config,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let probe = match config.probe_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --probe-listen {addr}"))?,
        ),
        None => None,
    };
    run_with(
        config,
        Listeners {
            proxy: proxy_listener,
            admin: admin_listener,
            probe,
        },
        shutdown,
    )
    .await
}

/// [`run`] with every listener bound by the caller.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Listeners {
        proxy: proxy_listener,
        admin: admin_listener,
        probe: probe_listener,
    } = listeners;
    config.validate().map_err(anyhow::Error::msg)?;
    let identity = Identity {
        service: config.service.clone(),
        environment: config.environment.clone(),
        instance: config.instance_id(),
        started_at: Timestamp::now(),
        owner: config.owner_name().map(String::from),
    };
    let counters = Arc::new(counters::Counters::new(config.max_hosts as usize));
    let dns = match config.dns_listen {
        Some(addr) => Some(bind_dns(addr, config.dns_upstream).await?),
        None => None,
    };
    // Issue 14: inbound mode counts calls to the service per caller address.
    let inbound = (config.mode == config::Mode::Inbound).then(|| {
        Arc::new(inbound::Inbound {
            peers: Arc::new(inbound::Peers::new(
                config.max_hosts as usize,
                config.max_peers as usize,
            )),
            upstream: config.upstream,
            hosts: config.inbound_hosts(),
            protocol: config.inbound_protocol,
        })
    });
    let observers = shipper::Observers {
        names: dns
            .as_ref()
            .map(|_| Arc::new(dns::Names::new(config.max_dns_names as usize))),
        bypass: config
            .bypass_scan_interval
            .map(|_| Arc::new(bypass::Bypass::new(config.max_hosts as usize))),
        inbound: inbound.as_ref().map(|i| i.peers.clone()),
        inbound_hosts: config.inbound_hosts(),
        addresses: Some(Arc::new(inbound::addresses::Addresses::new(
            &config.advertise_address,
        ))),
    };
    let mut registry = Registry::default();
    let shipper = shipper::Shipper::start(
        &config,
        identity.clone(),
        counters.clone(),
        observers.clone(),
        &mut registry,
    )?;
    let proxy_metrics = metrics::ProxyMetrics::register(&mut registry, counters.clone());
    if let Some(i) = &inbound {
        registry.register_collector(Box::new(inbound::InboundMetrics(i.peers.clone())));
    }

    let pool = Arc::new(proxy::upstream::Pool::new(config.idle_timeout.0));
    pool.sweep_idle();
    let slots = Arc::new(Semaphore::new(config.max_connections as usize));
    // Explicit mode: upstream connections leave from the advertised addresses (those that
    // are local), so a callee's inbound sidecar sees the address the address book holds.
    let source = match &inbound {
        Some(_) => proxy::connect::Source::default(),
        None => inbound::addresses::local_source(&config.advertise_address),
    };
    let relay = Arc::new(proxy::relay::Relay {
        counters: counters.clone(),
        router: Box::new(proxy::route::ExplicitProxy),
        dialer: proxy::connect::Dialer::new(&config.resolve, config.connect_timeout.0)
            .with_source(source)
            .own_connections(observers.bypass.clone()),
        pool,
        max_header_bytes: config.max_header_bytes as usize,
        header_read_timeout: config.header_read_timeout.0,
        tunnel_splice: config.tunnel_splice,
        // Redirected connections (transparent capture), and inbound mode's protocol
        // detection.
        capture: Some(Arc::new(capture::Capture {
            names: observers.names.clone(),
            opaque_ports: config.opaque_ports.iter().copied().collect(),
            detect_timeout: config.detect_timeout.0,
        })),
        inbound: inbound.clone(),
    });

    let admin_state = Arc::new(admin::AdminState {
        identity: identity.clone(),
        counters: counters.clone(),
        registry,
        shipping: shipper.as_ref().map(|s| s.status_handle()),
        observers: observers.clone(),
        serving: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    });
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let probe_addr = match &probe_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        admin::Surface::Admin,
        stopped(admin_stop_rx.clone()),
    ));
    let mut observer_tasks = Vec::new();
    let mut dns_addr = None;
    if let (Some((udp, tcp, upstream)), Some(names)) = (dns, observers.names.clone()) {
        dns_addr = Some(udp.local_addr()?);
        observer_tasks.push(tokio::spawn(dns::forwarder::serve_udp(
            udp,
            upstream,
            names.clone(),
            stopped(admin_stop_rx.clone()),
        )));
        observer_tasks.push(tokio::spawn(dns::forwarder::serve_tcp(
            tcp,
            upstream,
            names,
            stopped(admin_stop_rx.clone()),
        )));
    }
    if let (Some(b), Some(every)) = (observers.bypass.clone(), config.bypass_scan_interval) {
        observer_tasks.push(tokio::spawn(bypass::run(
            b,
            observers.names.clone(),
            every.0,
            stopped(admin_stop_rx.clone()),
        )));
    }
    let probe_task = probe_listener.map(|l| {
        tokio::spawn(admin::serve(
            l,
            admin_state.clone(),
            admin::Surface::Probe,
            stopped(admin_stop_rx.clone()),
        ))
    });

    tracing::info!(
        service = %identity.service,
        environment = %identity.environment,
        instance = %identity.instance,
        listen = %proxy_addr,
        admin = %admin_addr,
        probe = %probe_addr.map(|a| a.to_string()).unwrap_or_else(|| "none".into()),
        collector = config.collector_url.as_deref().unwrap_or("none (count only)"),
        mode = ?config.mode,
        upstream = %config.upstream.map(|u| u.to_string()).unwrap_or_else(|| "original destination".into()),
        "Sidecar started."
    );
    // The proxy listener is bound, so connections queue from here on and the accept
    // loop below takes them: ready before anyone is told where to connect.
    admin_state.serving.store(true, Ordering::Release);
    if config.announce {
        let mut listeners = vec![("proxy", proxy_addr), ("admin", admin_addr)];
        listeners.extend(probe_addr.map(|p| ("probe", p)));
        listeners.extend(dns_addr.map(|d| ("dns", d)));
        whouses_plumbing::listening::announce(
            &listeners,
            &[("instance", identity.instance.clone().into())],
        );
    }
    let admin_ref = admin_state.clone();
    let mut proxy_listeners = vec![proxy_listener];
    proxy_listeners.extend(capture::redirect::ipv6_loopback_twin(proxy_addr).await);
    proxy::server::serve_all(
        proxy_listeners,
        relay,
        slots,
        proxy::server::Limits {
            allow_from: config.allowed_networks(),
            own_addresses: config
                .allow_own_addresses()
                .then(capture::redirect::OwnAddresses::default),
            header_read_timeout: config.header_read_timeout.0,
            drain_timeout: config.drain_timeout.0,
        },
        proxy_metrics,
        async move {
            shutdown.await;
            admin_ref.draining.store(true, Ordering::Release);
        },
    )
    .await;

    if let Some(shipper) = shipper {
        shipper.shutdown(config.final_flush_timeout.0).await;
    }
    let _ = admin_stop.send(true);
    let _ = admin_task.await;
    if let Some(t) = probe_task {
        let _ = t.await;
    }
    for t in observer_tasks {
        let _ = t.await;
    }
    tracing::info!("Sidecar stopped.");
    Ok(())
}

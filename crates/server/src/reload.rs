//! Configuration generations: what a reload (SIGHUP) builds and what it keeps.
//!
//! A running server has one current [`ServerContext`]; a new connection takes the current
//! one and keeps it for its whole life, so a session never sees half of one configuration
//! and half of another. A reload builds the next generation from new [`ServerOptions`] and
//! swaps it in when every part of it could be built; otherwise the current one stays and
//! the error says why. Some parts are carried over rather than rebuilt:
//!
//! | part | on reload |
//! |---|---|
//! | listeners (address, TLS mode) | kept: a restart is needed ([`ReloadReport::needs_restart`]) |
//! | storage | kept (the binary reports a changed `[storage]` as needing a restart) |
//! | TLS context | kept when its settings did not change (sessions issued before still resume), its certificate files read again; rebuilt otherwise |
//! | passive port pool | kept unless the range or the reuse delay changed (open sessions return their ports to the pool they took them from) |
//! | passive-address rules | replaced for every session, open ones included (read at each PASV) |
//! | session caps | changed in place |
//! | defender (scores, bans) | kept; its new policy (weights, threshold, allowlist) applies at once |
//! | everything else | the new generation's, for new sessions |

use std::sync::{Arc, Mutex, RwLock};

use ferroftp_backend::{Authenticator, Storage};
use tracing::info;

use crate::advertise::PassiveAddressPolicy;
use crate::defender::Defender;
use crate::drain::Drain;
use crate::limits::SessionLimiter;
use crate::passive::{PassiveLimits, PassivePortPool};
use crate::status::ServerStatus;
use crate::{ListenerTls, ServerContext, ServerError, ServerOptions, tls};

/// A value that is replaced as a whole while readers hold on to the one they took.
#[derive(Debug)]
pub(crate) struct Swappable<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Swappable<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The value now.
    pub(crate) fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the value; readers that took the previous one keep it.
    pub(crate) fn replace(&self, value: Arc<T>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
}

/// Builds a generation from `options`; `previous` is the running one on a reload.
pub(crate) async fn build_context(
    options: ServerOptions,
    previous: Option<&ServerContext>,
    storage: Arc<dyn Storage>,
    authenticator: Arc<dyn Authenticator>,
    drain: Arc<Drain>,
    status: Arc<ServerStatus>,
    defender: Arc<Defender>,
) -> Result<ServerContext, ServerError> {
    // Everything that can fail comes first, so that a failed reload changes nothing.
    let tls = match (&options.tls, previous) {
        (None, _) => None,
        (Some(wanted), Some(previous)) if previous.options.tls.as_ref() == Some(wanted) => {
            match &previous.tls {
                Some(running) => {
                    running.reloader().reload()?;
                    Some(Arc::clone(running))
                }
                None => Some(Arc::new(tls::TlsContext::new(wanted)?)),
            }
        }
        (Some(wanted), _) => Some(Arc::new(tls::TlsContext::new(wanted)?)),
    };
    if tls.is_none()
        && let Some(listener) = options
            .listeners
            .iter()
            .find(|listener| listener.tls != ListenerTls::Off)
    {
        return Err(ServerError::TlsNotConfigured(listener.address));
    }
    let mut session = options.session.clone();
    session.allow_resume_upload = storage.capabilities().resume_upload;
    session.atomic_rename = storage.capabilities().atomic_rename;
    session.allow_set_modified = storage.capabilities().set_modified;
    session.allow_chmod = storage.capabilities().modes;
    let announced_port_offset = options.advertise_ports.as_ref().map_or(0, |announced| {
        i32::from(*announced.start()) - i32::from(*options.passive_ports.start())
    });
    let passive_pool = match previous {
        Some(previous)
            if previous.options.passive_ports == options.passive_ports
                && previous.options.passive_reuse_delay == options.passive_reuse_delay =>
        {
            Arc::clone(&previous.passive_pool)
        }
        _ => Arc::new(PassivePortPool::new(
            options.passive_ports.clone(),
            options.passive_reuse_delay,
        )),
    };
    // Caps apply to the next PASV, in a kept pool too.
    passive_pool.set_limits(
        options
            .passive_limits
            .unwrap_or_else(|| PassiveLimits::for_range(options.passive_ports.clone().count())),
    );
    let policy = PassiveAddressPolicy::new(
        options.advertise.clone(),
        options
            .listeners
            .iter()
            .map(|listener| listener.advertise)
            .collect(),
    );
    policy.resolve_now().await;
    let passive_addresses = match previous {
        Some(previous) => {
            previous.passive_addresses.replace(Arc::new(policy));
            Arc::clone(&previous.passive_addresses)
        }
        None => Arc::new(Swappable::new(policy)),
    };
    let users = previous.map_or_else(Default::default, |previous| Arc::clone(&previous.users));
    users.set_defaults(&options.limits);
    Ok(ServerContext {
        homes: previous.map_or_else(Default::default, |previous| Arc::clone(&previous.homes)),
        users,
        storage,
        authenticator,
        session: Arc::new(session),
        passive_pool,
        passive_addresses,
        announced_port_offset,
        active_source_port: options.active_source_port,
        proxy_protocol: Arc::new(options.proxy_protocol.clone()),
        data: options.data.clone(),
        failed_login_delay: options.failed_login_delay,
        max_line: options.max_line,
        tls,
        listener_tls: options
            .listeners
            .iter()
            .map(|listener| listener.tls)
            .collect(),
        transfer_observer: options.transfer_observer.clone(),
        options,
        drain,
        status,
        defender,
    })
}

/// What a reload did not apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadReport {
    /// Settings that changed but need a restart; they keep their running values.
    pub needs_restart: Vec<&'static str>,
}

/// Controls a running server from outside: reload, shutdown state, session count.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    contexts: Arc<Swappable<ServerContext>>,
    limiter: Arc<SessionLimiter>,
    /// The background jobs of the current generation (address resolution, certificate
    /// file checks), restarted on each reload.
    jobs: Mutex<Vec<tokio::task::AbortHandle>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl ServerHandle {
    pub(crate) fn new(
        contexts: Arc<Swappable<ServerContext>>,
        limiter: Arc<SessionLimiter>,
    ) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                contexts,
                limiter,
                jobs: Mutex::new(Vec::new()),
                reloading: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Applies `options` to new sessions (and the passive-address rules to open ones), with
    /// `authenticator` for new logins. On an error nothing changed. Listener addresses and
    /// TLS modes keep their running values and are named in the report.
    pub async fn reload(
        &self,
        mut options: ServerOptions,
        authenticator: Arc<dyn Authenticator>,
    ) -> Result<ReloadReport, ServerError> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let running = self.inner.contexts.current();
        let mut report = ReloadReport::default();
        let same_sockets = options.listeners.len() == running.options.listeners.len()
            && options
                .listeners
                .iter()
                .zip(&running.options.listeners)
                .all(|(new, old)| new.address == old.address && new.tls == old.tls);
        if !same_sockets {
            report.needs_restart.push("server.listeners");
            // A listener's own advertised address is a passive-address rule: that applies.
            let advertised: Vec<_> = options.listeners.iter().map(|l| l.advertise).collect();
            options.listeners = running.options.listeners.clone();
            if advertised.len() == options.listeners.len() {
                for (listener, advertise) in options.listeners.iter_mut().zip(advertised) {
                    listener.advertise = advertise;
                }
            }
        }
        let context = build_context(
            options,
            Some(&running),
            Arc::clone(&running.storage),
            authenticator,
            Arc::clone(&running.drain),
            Arc::clone(&running.status),
            Arc::clone(&running.defender),
        )
        .await?;
        // Bans and scores stay; the new weights, threshold and allowlist apply from now on.
        context
            .defender
            .set_options(context.options.defender.clone());
        self.inner.limiter.set_limits(
            context.options.max_sessions,
            context.options.max_sessions_per_ip,
        );
        // The status shows the pool new sessions take ports from (kept unless the range
        // changed).
        context
            .status
            .set_passive_pool(Arc::clone(&context.passive_pool));
        self.inner.contexts.replace(Arc::new(context));
        self.start_background_jobs();
        // Open sessions check their account again (the users file may have changed).
        running.drain.reloaded();
        info!("configuration reloaded: new sessions use it");
        Ok(report)
    }

    /// Sessions open now (in every generation).
    pub fn open_sessions(&self) -> usize {
        self.inner.contexts.current().drain.open_sessions()
    }

    /// The live view of the server (the same for every generation).
    pub fn status(&self) -> Arc<ServerStatus> {
        Arc::clone(&self.inner.contexts.current().status)
    }

    /// Scores and bans of client addresses (the same for every generation).
    pub fn defender(&self) -> Arc<Defender> {
        Arc::clone(&self.inner.contexts.current().defender)
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.contexts.current().drain.phase() != crate::Phase::Serving
    }

    pub(crate) fn drain(&self) -> Arc<Drain> {
        Arc::clone(&self.inner.contexts.current().drain)
    }

    /// (Re)starts the current generation's background jobs on the calling runtime.
    pub(crate) fn start_background_jobs(&self) {
        let context = self.inner.contexts.current();
        let mut jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for job in jobs.drain(..) {
            job.abort();
        }
        let policy = context.passive_addresses.current();
        jobs.push(tokio::spawn(async move { policy.keep_resolving().await }).abort_handle());
        if let Some(tls) = context.tls.clone() {
            jobs.push(tokio::spawn(async move { tls.watch_files().await }).abort_handle());
        }
        let defender = Arc::clone(&context.defender);
        jobs.push(tokio::spawn(defender.maintain()).abort_handle());
    }

    pub(crate) fn stop_background_jobs(&self) {
        let mut jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for job in jobs.drain(..) {
            job.abort();
        }
    }
}

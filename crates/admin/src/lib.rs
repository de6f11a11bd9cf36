//! The admin listener of ferroftp: an HTTP/1.1 endpoint for operators and their tools.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text exposition of the server's series (`ferroftp_server::telemetry`) |
//! | `/healthz` | 200 while the process serves HTTP at all |
//! | `/readyz` | 200 when every control listener accepts and the storage answers; 503 while draining, before the listeners run, or when the storage check fails |
//! | `/bans` | the defender's bans in force, JSON: `address`, `until` (RFC 3339), `until_unix`, `bans` (count, this one included) |
//! | `DELETE /bans/ADDR` | lifts the ban of `ADDR` (or of the IPv6 network it is in): 200, or 404 when it was not banned |
//! | `/status` (and `/`) | one HTML page, refreshing itself: uptime, sessions and their transfers, passive pool, recent warnings and errors |
//!
//! It runs on the background runtime, never on the session threads, and answers at most
//! [`MAX_CONNECTIONS`] clients at once: it is meant for loopback (a scraper, a browser through
//! an SSH tunnel); a non-loopback address needs `admin.allow_remote`, checked by the
//! configuration. There is no authentication: the page shows user names and client addresses.

mod recent_errors_layer;
mod status_page;

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferroftp_server::telemetry;
use ferroftp_server::{BanRecord, RecentErrors, ServerStatus};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

pub use recent_errors_layer::RecentErrorsLayer;
pub use status_page::render_status_page;

/// Admin clients served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a client may take to send its request headers, and how long one connection may
/// stay open at all.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The longest the storage check of `/readyz` may take before the answer is 503.
const STORAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the status page reloads itself.
const STATUS_REFRESH_SECONDS: u32 = 5;

/// How often the recorder drains its histogram samples when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What the admin listener is told by the configuration.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    /// Where to listen (loopback unless the configuration allows remote access).
    pub listen: SocketAddr,
    /// Also keep series per user (`ferroftp_user_*`).
    pub per_user_metrics: bool,
}

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("admin: cannot listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Another metrics recorder is installed in this process.
    #[error("admin: cannot install the metrics recorder: {0}")]
    Recorder(String),
}

/// The process's Prometheus recorder, installed on first use: the `metrics` facade has one
/// global recorder, so every admin listener of the process renders the same one.
pub fn prometheus_handle() -> Result<PrometheusHandle, AdminError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets) in telemetry::HISTOGRAMS {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
                    .map_err(|error| error.to_string())?;
            }
            let handle = builder
                .install_recorder()
                .map_err(|error| error.to_string())?;
            for (name, help) in telemetry::DESCRIPTIONS {
                // The exporter keeps one help text per name, whatever the kind.
                metrics::describe_counter!(*name, *help);
            }
            telemetry::register_known_series();
            Ok(handle)
        })
        .clone()
        .map_err(AdminError::Recorder)
}

/// A bound admin listener; nothing is answered until [`run`](Self::run).
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    state: Arc<AdminState>,
}

#[derive(Debug)]
struct AdminState {
    status: Arc<ServerStatus>,
    metrics: PrometheusHandle,
}

impl AdminServer {
    /// Binds `options.listen` and installs the metrics recorder (from now on the server's
    /// series are kept).
    pub async fn bind(
        options: &AdminOptions,
        status: Arc<ServerStatus>,
    ) -> Result<Self, AdminError> {
        let metrics = prometheus_handle()?;
        status.set_per_user_metrics(options.per_user_metrics);
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| AdminError::Bind {
                    address: options.listen,
                    source,
                })?;
        Ok(Self {
            listener,
            state: Arc::new(AdminState { status, metrics }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers requests until the future is dropped.
    pub async fn run(self) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => permit,
                _ = upkeep.tick() => {
                    self.state.metrics.run_upkeep();
                    continue;
                }
            };
            let Ok(permit) = permit else { return };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "admin: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = upkeep.tick() => {
                    self.state.metrics.run_upkeep();
                    continue;
                }
            };
            let state = Arc::clone(&self.state);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(state.answer(&request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => debug!(%peer, %error, "admin connection failed"),
                    Err(_) => debug!(%peer, "admin connection closed after its lifetime"),
                }
                drop(permit);
            });
        }
    }
}

impl AdminState {
    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        // The one change the listener makes: lifting a ban. Browsers preflight a cross-origin
        // DELETE, and nothing here answers CORS, so a web page cannot send it.
        if request.method() == Method::DELETE
            && let Some(address) = request.uri().path().strip_prefix("/bans/")
        {
            return self.unban(address);
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match request.uri().path() {
            "/metrics" => self.metrics(),
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/readyz" => self.readiness().await,
            "/" | "/status" => self.status_page(),
            "/bans" => self.bans(),
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found: try /status, /metrics, /readyz\n",
            ),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        // The gauges that describe the present are set now, from the live view.
        let status = &self.status;
        for (listener, open) in status
            .listeners()
            .iter()
            .zip(status.sessions_per_listener())
        {
            metrics::gauge!(telemetry::SESSIONS_OPEN, "listener" => listener.clone())
                .set(open as f64);
        }
        metrics::gauge!(telemetry::PASSIVE_PORTS_IN_USE).set(status.passive_ports_in_use() as f64);
        metrics::gauge!(telemetry::PASSIVE_PORTS_CAPACITY)
            .set(status.passive_ports_capacity() as f64);
        if let Some(defender) = status.defender() {
            metrics::gauge!(telemetry::DEFENDER_BANNED_ADDRESSES)
                .set(defender.banned_count() as f64);
        }
        let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
        set_common_headers(&mut response, "text/plain; version=0.0.4; charset=utf-8");
        response
    }

    async fn readiness(&self) -> Response<Full<Bytes>> {
        let status = &self.status;
        if status.is_draining() {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
        }
        if !status.is_accepting() {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "listeners not accepting\n");
        }
        match tokio::time::timeout(STORAGE_CHECK_TIMEOUT, status.check_storage()).await {
            Ok(Ok(())) => plain(StatusCode::OK, "ready\n"),
            Ok(Err(error)) => {
                warn!(%error, "readiness: the storage does not answer");
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("storage: {:?}\n", error.kind),
                )
            }
            Err(_) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage: no answer within 5s\n",
            ),
        }
    }

    /// `GET /bans`: the bans in force, as JSON.
    fn bans(&self) -> Response<Full<Bytes>> {
        let bans = self
            .status
            .defender()
            .map(|defender| defender.bans())
            .unwrap_or_default();
        let mut response = Response::new(Full::new(Bytes::from(bans_json(&bans))));
        set_common_headers(&mut response, "application/json");
        response
    }

    /// `DELETE /bans/ADDR`: lifts the ban of an address (or of the IPv6 network it is in).
    fn unban(&self, address: &str) -> Response<Full<Bytes>> {
        let Ok(address) = address.parse::<IpAddr>() else {
            return plain(
                StatusCode::BAD_REQUEST,
                "not an IP address: DELETE /bans/192.0.2.7 or /bans/2001:db8::1\n",
            );
        };
        let Some(defender) = self.status.defender() else {
            return plain(StatusCode::NOT_FOUND, "no defender\n");
        };
        if defender.unban(address) {
            plain(StatusCode::OK, "ban lifted\n")
        } else {
            plain(StatusCode::NOT_FOUND, "not banned\n")
        }
    }

    fn status_page(&self) -> Response<Full<Bytes>> {
        let page = render_status_page(
            &self.status.snapshot(),
            &RecentErrors::global().newest_first(),
            SystemTime::now(),
            STATUS_REFRESH_SECONDS,
        );
        let mut response = Response::new(Full::new(Bytes::from(page)));
        set_common_headers(&mut response, "text/html; charset=utf-8");
        // The page loads nothing: no scripts, no images, no styles but its own.
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
        response
    }
}

/// `[{"address": "192.0.2.7", "until": "2026-01-01T00:00:00Z", "until_unix": 1767225600,
/// "bans": 1}, …]`. Addresses and times need no escaping (digits, dots, colons, a slash).
fn bans_json(bans: &[BanRecord]) -> String {
    let mut json = String::from("[");
    for (index, ban) in bans.iter().enumerate() {
        let until_unix = ban
            .until
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if index > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "\n  {{\"address\": \"{}\", \"until\": \"{}\", \"until_unix\": {until_unix}, \"bans\": {}}}",
            ban.address,
            humantime::format_rfc3339_seconds(ban.until),
            ban.bans
        ));
    }
    json.push_str(if bans.is_empty() { "]\n" } else { "\n]\n" });
    json
}

fn plain(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = code;
    set_common_headers(&mut response, "text/plain; charset=utf-8");
    response
}

fn set_common_headers(response: &mut Response<Full<Bytes>>, content_type: &'static str) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

//! FTPS with rustls (ring provider): the one `ServerConfig` every TLS connection of a server
//! uses, the certificate that can be replaced while sessions run, and the check that a data
//! connection resumed a TLS session of its own control connection's lineage.
//!
//! # Data-connection session reuse, exactly
//!
//! Every TLS session the server issues is tagged with the control connection it descends
//! from (`tls_lineage.rs`: a session issued on a data connection carries its control
//! connection's lineage). When a protected data connection's handshake completes, the
//! transfer proceeds only if
//!
//! 1. `ServerConnection::handshake_kind()` is `Resumed` (an abbreviated handshake: the client
//!    proved it holds a session secret issued by this server), on TLS 1.2 (session ID or
//!    ticket) or TLS 1.3 (ticket), and
//! 2. the resumed session's lineage is the control connection's own, the one its control
//!    handshake resumed, or that of another control connection from the same client IP on
//!    which the same user logged in ([`crate::tls_lineage::DataLineage::accepts`]).
//!
//! Before the handshake, the data connection already passed the address check of the plain
//! data channel (a passive connection must come from the control connection's client IP; an
//! active one goes to the address PORT/EPRT named, which must be that IP). A transfer exempt
//! from reuse (`tls.reuse_exempt_users`, `tls.reuse_exempt_clients`) skips 1 and 2 only.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ferroftp_proto::session::TlsInfo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{HandshakeKind, RootCertStore, ServerConfig, ServerConnection};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

use crate::tls_lineage::{ControlLineage, LineageId, Lineages, tagged_config};

/// TLS 1.2 sessions remembered for resumption by session ID (TLS 1.3 and TLS 1.2 tickets are
/// stateless).
const SESSION_CACHE_ENTRIES: usize = 4096;

/// TLS 1.3 tickets sent on a control connection.
const CONTROL_TLS13_TICKETS: usize = 8;

/// Where the server certificate and key come from.
#[derive(Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// PEM files: the certificate chain (leaf first) and the private key (PKCS#8, PKCS#1 or
    /// SEC1). Re-read by [`TlsReloader::reload`] and when their modification time changes.
    Files {
        /// Certificate chain file.
        cert: PathBuf,
        /// Private key file.
        key: PathBuf,
    },
    /// PEM text held in memory (a generated self-signed certificate); never reloaded.
    Pem {
        /// Certificate chain.
        cert: String,
        /// Private key.
        key: String,
    },
}

impl fmt::Debug for CertificateSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Files { cert, key } => formatter
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            Self::Pem { .. } => formatter.write_str("Pem { .. }"),
        }
    }
}

/// Client certificates (mutual TLS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientCertMode {
    /// Not asked for.
    #[default]
    Off,
    /// Asked for; a client without one is accepted, one with an invalid one is not.
    Optional,
    /// A certificate signed by the client CA is needed for the handshake to complete.
    Required,
}

/// The lowest TLS version accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// FTPS settings of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// The server certificate.
    pub certificate: CertificateSource,
    /// PEM file of the CA(s) that sign client certificates; needed unless `client_cert` is
    /// off.
    pub client_ca: Option<PathBuf>,
    /// Whether client certificates are asked for.
    pub client_cert: ClientCertMode,
    /// Lowest protocol version.
    pub min_version: TlsVersion,
    /// Longest a handshake (control or data) may take.
    pub handshake_timeout: Duration,
    /// How often the certificate files are checked for changes; `None`: only on
    /// [`TlsReloader::reload`].
    pub reload_check: Option<Duration>,
}

impl TlsOptions {
    /// Options for this certificate with the defaults: no client certificates, TLS 1.2 and
    /// 1.3, 10 s handshakes, files checked every 10 s.
    pub fn new(certificate: CertificateSource) -> Self {
        Self {
            certificate,
            client_ca: None,
            client_cert: ClientCertMode::Off,
            min_version: TlsVersion::Tls12,
            handshake_timeout: Duration::from_secs(10),
            reload_check: Some(Duration::from_secs(10)),
        }
    }
}

/// Why TLS could not be set up or a certificate not (re)loaded. Each message quotes its
/// cause, which [`std::error::Error::source`] also gives.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or parsed.
    #[error("certificate file {}: {source}", path.display())]
    CertificateFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: PemError,
    },
    /// The key file could not be read or parsed.
    #[error("key file {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: PemError,
    },
    /// The certificate given as PEM text could not be parsed.
    #[error("certificate: {0}")]
    Certificate(#[source] PemError),
    /// The key given as PEM text could not be parsed.
    #[error("key: {0}")]
    Key(#[source] PemError),
    /// The certificate file holds no certificate.
    #[error("no certificate in the certificate file")]
    NoCertificate,
    /// The certificate and the key do not make a usable pair.
    #[error("certificate and key: {0}")]
    CertificateAndKey(#[source] rustls::Error),
    /// The TLS versions asked for cannot be configured.
    #[error("{0}")]
    Versions(#[source] rustls::Error),
    /// Client certificates are asked for without a CA to check them against.
    #[error("client certificates need a client CA file (tls.client_ca)")]
    NoClientCa,
    /// The client CA file could not be read or parsed.
    #[error("client CA file {}: {source}", path.display())]
    ClientCaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: PemError,
    },
    /// A certificate of the client CA file was refused as a root.
    #[error("client CA file {}: {source}", path.display())]
    ClientCaCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built from the client CA.
    #[error("client CA: {0}")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    /// The session ticket keys could not be made.
    #[error("ticketer: {0}")]
    Ticketer(#[source] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a certificate's files looked like when they were loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Vec<Option<SystemTime>>,
    lengths: Vec<u64>,
}

fn stamp(paths: &[&Path]) -> FileStamp {
    let metadata: Vec<Option<std::fs::Metadata>> =
        paths.iter().map(|p| std::fs::metadata(p).ok()).collect();
    FileStamp {
        modified: metadata
            .iter()
            .map(|m| m.as_ref().and_then(|m| m.modified().ok()))
            .collect(),
        lengths: metadata
            .iter()
            .map(|m| m.as_ref().map_or(0, |m| m.len()))
            .collect(),
    }
}

/// Serves the current certificate; a reload swaps it for the next handshakes, sessions that
/// run keep theirs.
#[derive(Debug)]
struct ReloadingResolver {
    source: CertificateSource,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamp at the last load attempt (successful or not).
    stamp: Mutex<Option<FileStamp>>,
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

impl ReloadingResolver {
    fn load(
        source: &CertificateSource,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, TlsError> {
        let (chain, key) = match source {
            CertificateSource::Files { cert, key } => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|source| TlsError::CertificateFile {
                        path: cert.clone(),
                        source,
                    })?;
                let private =
                    PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::KeyFile {
                        path: key.clone(),
                        source,
                    })?;
                (chain, private)
            }
            CertificateSource::Pem { cert, key } => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(TlsError::Certificate)?;
                let private =
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(TlsError::Key)?;
                (chain, private)
            }
        };
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        CertifiedKey::from_der(chain, key, provider).map_err(TlsError::CertificateAndKey)
    }

    fn paths(&self) -> Option<[&Path; 2]> {
        match &self.source {
            CertificateSource::Files { cert, key } => Some([cert.as_path(), key.as_path()]),
            CertificateSource::Pem { .. } => None,
        }
    }

    /// Loads the certificate again; on failure the current one stays.
    fn reload(&self) -> Result<(), TlsError> {
        let before = self.paths().map(|paths| stamp(&paths));
        let loaded = Self::load(&self.source, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = before;
        Ok(())
    }

    /// Reloads when the files changed since the last attempt.
    fn reload_if_changed(&self) {
        let Some(paths) = self.paths() else {
            return;
        };
        let now = stamp(&paths);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if last.as_ref() == Some(&now) {
                return;
            }
            *last = Some(now);
        }
        match self.reload() {
            Ok(()) => info!("TLS certificate files changed: certificate reloaded"),
            // A half-written pair (new certificate, old key) is retried at the next change.
            Err(error) => {
                warn!(%error, "TLS certificate files changed but cannot be loaded; keeping the previous certificate")
            }
        }
    }
}

/// Replaces the certificate of a running server (SIGHUP in `ferroftp serve`).
#[derive(Clone, Debug)]
pub struct TlsReloader(Arc<ReloadingResolver>);

impl TlsReloader {
    /// Loads the certificate files again. New handshakes use the new certificate; running
    /// sessions are not touched. On failure the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.0.reload()
    }
}

/// The TLS side of a server, shared by all its connections.
#[derive(Debug)]
pub(crate) struct TlsContext {
    config: Arc<ServerConfig>,
    /// The same configuration (certificate, verifier, session cache, ticketer) for the data
    /// connections of downloads and listings: TLS 1.3 clients use a ticket once, and those
    /// that keep only the newest (curl) resume the next data connection from it.
    download_config: Arc<ServerConfig>,
    /// The same without TLS 1.3 tickets, for uploads: a client that only sends never reads
    /// its data connection, and tickets left unread there make its kernel answer the close
    /// with a reset that can destroy the end of the upload.
    upload_config: Arc<ServerConfig>,
    resolver: Arc<ReloadingResolver>,
    /// Which control connection each issued session descends from.
    lineages: Arc<Lineages>,
    pub(crate) handshake_timeout: Duration,
    reload_check: Option<Duration>,
}

impl TlsContext {
    pub(crate) fn new(options: &TlsOptions) -> Result<Self, TlsError> {
        let provider = provider();
        let certificate = ReloadingResolver::load(&options.certificate, &provider)?;
        let resolver = Arc::new(ReloadingResolver {
            source: options.certificate.clone(),
            provider: Arc::clone(&provider),
            current: RwLock::new(Arc::new(certificate)),
            stamp: Mutex::new(None),
        });
        if let Some(paths) = resolver.paths() {
            *resolver.stamp.lock().unwrap_or_else(|p| p.into_inner()) = Some(stamp(&paths));
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match options.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(TlsError::Versions)?;
        let builder = match options.client_cert {
            ClientCertMode::Off => builder.with_no_client_auth(),
            mode => {
                let Some(ca) = &options.client_ca else {
                    return Err(TlsError::NoClientCa);
                };
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(ca)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|source| TlsError::ClientCaFile {
                        path: ca.clone(),
                        source,
                    })?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|source| TlsError::ClientCaCertificate {
                            path: ca.clone(),
                            source,
                        })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                );
                let verifier = if mode == ClientCertMode::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(TlsError::ClientVerifier)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&resolver) as _);
        // Data connections resume the control connection's session: TLS 1.2 session IDs
        // from this cache, TLS 1.2 and 1.3 tickets from the ticketer (keys rotate every 6 h).
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Ticketer)?;
        // Several tickets on the control connection: clients that keep them all (rustls,
        // GnuTLS) can resume several uploads in a row.
        config.send_tls13_tickets = CONTROL_TLS13_TICKETS;
        let mut download_config = config.clone();
        download_config.send_tls13_tickets = 2;
        let mut upload_config = config.clone();
        upload_config.send_tls13_tickets = 0;
        Ok(Self {
            config: Arc::new(config),
            download_config: Arc::new(download_config),
            upload_config: Arc::new(upload_config),
            resolver,
            lineages: Arc::new(Lineages::default()),
            handshake_timeout: options.handshake_timeout,
            reload_check: options.reload_check,
        })
    }

    pub(crate) fn reloader(&self) -> TlsReloader {
        TlsReloader(Arc::clone(&self.resolver))
    }

    /// Checks the certificate files for changes every `reload_check`, forever.
    pub(crate) async fn watch_files(&self) {
        let (Some(every), Some(_)) = (self.reload_check, self.resolver.paths()) else {
            return std::future::pending().await;
        };
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let resolver = Arc::clone(&self.resolver);
            // Reading files blocks: off the async threads.
            let _ = tokio::task::spawn_blocking(move || resolver.reload_if_changed()).await;
        }
    }

    /// The configuration for a data connection; `upload`: the client only sends.
    pub(crate) fn data_config(&self, upload: bool) -> Arc<ServerConfig> {
        Arc::clone(if upload {
            &self.upload_config
        } else {
            &self.download_config
        })
    }

    /// A new control connection from `client`: its sessions' lineage.
    pub(crate) fn register(&self, client: std::net::IpAddr) -> ControlLineage {
        self.lineages.register(client, std::time::Instant::now())
    }

    /// Runs the server side of a control connection's handshake (see [`handshake`]) and
    /// records which session it resumed, if any.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        lineage: &mut ControlLineage,
    ) -> io::Result<TlsStream<TcpStream>> {
        let (stream, resumed) =
            handshake(&self.config, stream, lineage.id(), self.handshake_timeout).await?;
        lineage.resumed_on_control(resumed);
        Ok(stream)
    }
}

/// Runs the server side of a handshake on `stream` within `timeout`; the sessions it issues
/// descend from `issuer`. Returns the stream and, when the handshake resumed a session, that
/// session's lineage.
pub(crate) async fn handshake(
    config: &Arc<ServerConfig>,
    stream: TcpStream,
    issuer: LineageId,
    timeout: Duration,
) -> io::Result<(TlsStream<TcpStream>, Option<LineageId>)> {
    let (config, resumed) = tagged_config(config, issuer);
    let acceptor = TlsAcceptor::from(config);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let lineage = (stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed))
                .then(|| resumed.get())
                .flatten();
            Ok((stream, lineage))
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake not done within {}s", timeout.as_secs()),
        )),
    }
}

/// What the session learns from a control handshake: the verified client certificate's CN.
pub(crate) fn tls_info(connection: &ServerConnection) -> TlsInfo {
    let client_name = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| common_name(leaf.as_ref()));
    TlsInfo { client_name }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = certificate.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

//! FTPS for the client (rustls, ring provider): [`ClientTls`] says how to verify the server
//! and whether data connections resume the control connection's TLS session, and
//! [`MaybeTls`] is a stream that is plain TCP or TLS.

use std::io;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::ClientError;

/// How the server's certificate is checked.
#[derive(Clone, Debug)]
pub enum ServerVerification {
    /// Against these roots, for the server name given to [`ClientTls::new`].
    Roots(RootCertStore),
    /// Not at all: any certificate is accepted. For tests and `doctor` probes only; it gives
    /// no protection against an active attacker.
    AcceptAny,
}

/// A TLS protocol version a client may speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
}

impl TlsVersion {
    fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            Self::Tls12 => &rustls::version::TLS12,
            Self::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// TLS settings of a client: one rustls configuration for the control connection and the
/// data connections, so that data connections resume the control connection's session.
#[derive(Clone, Debug)]
pub struct ClientTls {
    control: Arc<ClientConfig>,
    data: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl ClientTls {
    /// Verifies the server as `verification` says, names it `server_name` (SNI and
    /// certificate name: a DNS name or an IP address), and presents `client_certificate`
    /// (chain, key) when given. Data connections resume the control connection's session.
    pub fn new(
        verification: ServerVerification,
        server_name: &str,
        client_certificate: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self, ClientError> {
        Self::with_versions(
            verification,
            server_name,
            client_certificate,
            &[TlsVersion::Tls13, TlsVersion::Tls12],
        )
    }

    /// As [`ClientTls::new`], speaking only the TLS `versions` given (e.g. only TLS 1.2, as
    /// many clients in the field negotiate).
    pub fn with_versions(
        verification: ServerVerification,
        server_name: &str,
        client_certificate: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        versions: &[TlsVersion],
    ) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: Vec<&'static rustls::SupportedProtocolVersion> =
            versions.iter().map(|version| version.rustls()).collect();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)
            .map_err(tls_error)?;
        let builder = match verification {
            ServerVerification::Roots(roots) => builder.with_root_certificates(roots),
            ServerVerification::AcceptAny => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider))),
        };
        let config = match client_certificate {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(tls_error)?,
            None => builder.with_no_client_auth(),
        };
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|error| ClientError::Protocol(format!("TLS server name: {error}")))?;
        Ok(Self::from_config(Arc::new(config), server_name))
    }

    /// Accepts any server certificate (tests); the server is named `localhost`.
    pub fn accept_any() -> Self {
        Self::new(ServerVerification::AcceptAny, "localhost", None)
            .expect("the default configuration is valid")
    }

    /// A ready rustls configuration. Its resumption settings decide whether data
    /// connections resume.
    pub fn from_config(config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Self {
        Self {
            data: Arc::clone(&config),
            control: config,
            server_name,
        }
    }

    /// Data connections make full handshakes instead of resuming the control connection's
    /// session (what clients such as Python's stock ftplib do): servers that require reuse
    /// refuse them, which tests use.
    pub fn without_data_resumption(mut self) -> Self {
        let mut data = (*self.control).clone();
        data.resumption = Resumption::disabled();
        self.data = Arc::new(data);
        self
    }

    /// Data connections resume sessions from `other`'s data session cache instead of this
    /// client's own: clients that share one session cache between several control
    /// connections (rclone does), or a third party that got hold of another client's cache,
    /// which tests use.
    pub fn with_data_sessions_of(mut self, other: &ClientTls) -> Self {
        self.data = Arc::clone(&other.data);
        self
    }

    pub(crate) async fn connect_control(
        &self,
        stream: TcpStream,
    ) -> io::Result<TlsStream<TcpStream>> {
        TlsConnector::from(Arc::clone(&self.control))
            .connect(self.server_name.clone(), stream)
            .await
    }

    pub(crate) async fn connect_data(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        TlsConnector::from(Arc::clone(&self.data))
            .connect(self.server_name.clone(), stream)
            .await
    }
}

fn tls_error(error: rustls::Error) -> ClientError {
    ClientError::Protocol(format!("TLS configuration: {error}"))
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client's connections: plain TCP or TLS over TCP (the shared implementation of
/// `ferroftp-tls-stream`, with rustls' client side).
pub type MaybeTls = ferroftp_tls_stream::MaybeTls<TlsStream<TcpStream>>;

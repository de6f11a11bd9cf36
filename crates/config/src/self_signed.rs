//! The certificate of `serve --tls self-signed`: generated once at start, held in memory,
//! and the same one after every reload (it travels in the command line's [`Overrides`]).
//!
//! [`Overrides`]: crate::Overrides

use std::fmt;

/// A certificate generated for `localhost`, `127.0.0.1` and `::1`.
#[derive(Clone, PartialEq, Eq)]
pub struct SelfSignedCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// The names it is valid for.
    pub names: Vec<String>,
    /// SHA-256 of the DER certificate, as [`fingerprint`] writes it.
    pub fingerprint: String,
}

impl SelfSignedCertificate {
    /// Generates a certificate and its key.
    pub fn generate() -> Result<Self, rcgen::Error> {
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let generated = rcgen::generate_simple_self_signed(names.clone())?;
        Ok(Self {
            cert_pem: generated.cert.pem(),
            key_pem: generated.signing_key.serialize_pem(),
            fingerprint: fingerprint(generated.cert.der()),
            names,
        })
    }
}

/// Without the key: a config is printed in debug logs and test failures.
impl fmt::Debug for SelfSignedCertificate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SelfSignedCertificate")
            .field("names", &self.names)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a DER certificate as `AB:CD:…`, the form browsers and `openssl x509
/// -fingerprint -sha256` show.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

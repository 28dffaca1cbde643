//! Whom tether trusts (D89): the operating system's trust store (where a company installs
//! its inspecting CA; on Linux the files `SSL_CERT_FILE` and `SSL_CERT_DIR` name, else the
//! distribution's bundle), plus the app's extra roots, optionally narrowed by SPKI pins.
//!
//! rustls-platform-verifier asks the platform's own verifier on macOS and Windows, and reads
//! the system's roots into webpki on Linux. On Linux the Mozilla roots tether always trusted
//! are added too, so that a container without a CA bundle still reaches a public server.
//!
//! A certificate that is not trusted fails with its issuer's name, which is what a user
//! behind a gateway needs to hear: "issued by CN=Corp Inspection CA".

use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tether_core::TransportError;

use super::Failure;

/// A certificate that did not verify, with what the user needs to know about it. Carried
/// inside rustls's error (as `CertificateError::Other`) from the verifier to the connect.
#[derive(Debug)]
pub(crate) struct Untrusted {
    pub(crate) detail: String,
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Untrusted {}

/// The platform's verifier, pins checked after it, and failures named.
#[derive(Debug)]
struct Verifier {
    inner: rustls_platform_verifier::Verifier,
    /// SHA-256 digests of acceptable SubjectPublicKeyInfos; empty: no pinning.
    pins: Vec<[u8; 32]>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(why) => {
                    untrusted(describe(&why, end_entity, intermediates, server_name))
                }
                other => other,
            })?;
        if self.pins.is_empty() {
            return Ok(verified);
        }
        // The end entity's key only: it is the key the handshake's signature is checked with.
        // An "intermediate" proves nothing here: anyone with a certificate for the name from
        // any trusted CA could append the real server's certificate to their own chain.
        if spki_sha256(end_entity).is_some_and(|spki| self.pins.contains(&spki)) {
            return Ok(verified);
        }
        Err(untrusted(format!(
            "the certificate for {} (issued by {}) has none of the {} pinned keys",
            server_name.to_str(),
            issuer(end_entity).unwrap_or_else(|| "an unreadable issuer".into()),
            self.pins.len()
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn untrusted(detail: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        Untrusted { detail },
    ))))
}

/// "the certificate for chat.example.com is not trusted: unknown issuer (issued by CN=...)".
fn describe(
    why: &CertificateError,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
) -> String {
    // The top of the chain the server sent: its issuer is the root nobody here trusts.
    let top = intermediates.last().unwrap_or(end_entity);
    let issued_by = issuer(top).unwrap_or_else(|| "an unreadable issuer".into());
    let reason = match why {
        CertificateError::UnknownIssuer => "unknown issuer".to_owned(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "issued for another name".to_owned()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired".to_owned(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "not valid yet (is this machine's clock right?)".to_owned()
        }
        CertificateError::Revoked => "revoked".to_owned(),
        other => format!("{other:?}"),
    };
    format!(
        "the certificate for {} is not trusted: {reason} (issued by {issued_by})",
        server_name.to_str()
    )
}

/// A certificate's issuer, as `CN=..., O=...`.
fn issuer(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.issuer().to_string())
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
fn spki_sha256(der: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    digest.as_ref().try_into().ok()
}

/// Reads a pin: `sha256/BASE64` (curl writes `sha256//BASE64`; both are read). Base64 may
/// itself begin with `/`: the bare form is tried first, then curl's (a SHA-256 is exactly 32
/// bytes, so at most one of the two decodes to one).
pub(crate) fn parse_pin(pin: &str) -> Result<[u8; 32], String> {
    let rest = pin
        .trim()
        .strip_prefix("sha256/")
        .ok_or_else(|| format!("pin `{pin}` is not `sha256/<base64>`"))?;
    let decode = |encoded: &str| -> Option<[u8; 32]> {
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?
            .try_into()
            .ok()
    };
    decode(rest)
        .or_else(|| rest.strip_prefix('/').and_then(decode))
        .ok_or_else(|| format!("pin `{pin}` is not the base64 of a SHA-256 (44 characters)"))
}

/// The TLS settings both transports use: one verifier, two ALPN lists (none for the socket,
/// whose upgrade is HTTP/1.1 by definition; `http/1.1` for REST).
#[derive(Clone, Debug)]
pub(crate) struct Trust {
    pub(crate) socket: Arc<rustls::ClientConfig>,
    pub(crate) rest: Arc<rustls::ClientConfig>,
}

impl Trust {
    /// The trust for `extra_roots_der` and `pins`. Without either, one shared copy per
    /// process: thousands of clients need not each load the system's store.
    pub(crate) fn new(extra_roots_der: &[Vec<u8>], pins: &[String]) -> Result<Self, String> {
        static DEFAULT: std::sync::OnceLock<Trust> = std::sync::OnceLock::new();
        if extra_roots_der.is_empty() && pins.is_empty() {
            if let Some(t) = DEFAULT.get() {
                return Ok(t.clone());
            }
            let t = Self::build(&[], Vec::new())?;
            return Ok(DEFAULT.get_or_init(|| t).clone());
        }
        let pins = pins
            .iter()
            .map(|p| parse_pin(p))
            .collect::<Result<Vec<_>, _>>()?;
        Self::build(extra_roots_der, pins)
    }

    fn build(extra_roots_der: &[Vec<u8>], pins: Vec<[u8; 32]>) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut extra: Vec<CertificateDer<'static>> = extra_roots_der
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        for der in &extra {
            // The platform verifier reads some of these lazily; a bad one is the app's
            // mistake and is said now, at spawn.
            x509_parser::parse_x509_certificate(der.as_ref())
                .map_err(|e| format!("bad root certificate: {e}"))?;
        }
        if cfg!(all(
            unix,
            not(target_os = "android"),
            not(target_vendor = "apple")
        )) {
            extra.extend(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
        }
        let inner =
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
                .map_err(|e| format!("the system's certificates: {e}"))?;
        let verifier = Arc::new(Verifier { inner, pins });
        let config = |alpn: Vec<Vec<u8>>| -> Result<Arc<rustls::ClientConfig>, String> {
            let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            c.alpn_protocols = alpn;
            Ok(Arc::new(c))
        };
        Ok(Self {
            socket: config(Vec::new())?,
            rest: config(vec![b"http/1.1".to_vec()])?,
        })
    }
}

/// What a TLS handshake failure means for the user: a certificate not trusted (terminal,
/// with what the verifier said) or another TLS failure (retried).
pub(crate) fn failure(e: &std::io::Error, host: &str) -> Failure {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            let detail = other
                .0
                .downcast_ref::<Untrusted>()
                .map_or_else(|| other.0.to_string(), |u| u.detail.clone());
            Failure::new(TransportError::Untrusted, detail)
        }
        Some(rustls::Error::InvalidCertificate(why)) => Failure::new(
            TransportError::Untrusted,
            format!("the certificate for {host} is not trusted: {why}"),
        ),
        Some(other) => Failure::new(
            TransportError::Tls,
            format!("TLS with {host} failed: {other}"),
        ),
        None => Failure::new(TransportError::Tls, format!("TLS with {host} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_read_in_both_forms_even_when_its_base64_begins_with_a_slash() {
        let digest = [0xfc_u8; 32]; // base64 "/Pz8..."
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        assert!(b64.starts_with('/'));
        assert_eq!(parse_pin(&format!("sha256/{b64}")), Ok(digest));
        assert_eq!(parse_pin(&format!("sha256//{b64}")), Ok(digest));
        let plain = [7_u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(plain);
        assert_eq!(parse_pin(&format!("sha256//{b64}")), Ok(plain));
        assert!(parse_pin("md5/abc").is_err());
        assert!(parse_pin("sha256/AAAA").is_err());
    }
}

//! TLS for the HTTP listener: the configured certificate, or a self-signed one generated with
//! rcgen on first run (and reused afterwards).
//!
//! rustls runs on the `ring` provider; aws-lc is never built.

use crate::config::HttpConfig;
use axum_server::tls_rustls::RustlsConfig;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS could not be set up. Each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "{missing} does not exist but {present} does; provide both files, or remove {present} to generate a self-signed pair"
    )]
    HalfPair { missing: PathBuf, present: PathBuf },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error(
        "cannot write {path}: {source}; make its directory writable or set [http] cert and key"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("certificate and key do not work together: {0}; check [http] cert and key")]
    Tls(String),
}

/// Makes `ring` the process-wide rustls provider. Idempotent.
pub fn install_crypto_provider() {
    // An Err only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where the certificate came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertOrigin {
    Configured,
    Generated,
}

/// The TLS configuration for `http`: loads the cert/key, generating a self-signed pair first
/// when neither file exists. `extra_sans` are added to a generated certificate.
pub fn rustls_config(
    http: &HttpConfig,
    extra_sans: &[IpAddr],
) -> Result<(RustlsConfig, CertOrigin), CertError> {
    install_crypto_provider();
    let origin = ensure_pair(&http.cert, &http.key, extra_sans)?;
    let certs = read_certs(&http.cert)?;
    let key = read_key(&http.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| CertError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((RustlsConfig::from_config(Arc::new(config)), origin))
}

/// Generates a self-signed pair at `cert`/`key` when neither exists.
pub fn ensure_pair(
    cert: &Path,
    key: &Path,
    extra_sans: &[IpAddr],
) -> Result<CertOrigin, CertError> {
    match (cert.exists(), key.exists()) {
        (true, true) => Ok(CertOrigin::Configured),
        (false, true) => Err(CertError::HalfPair {
            missing: cert.into(),
            present: key.into(),
        }),
        (true, false) => Err(CertError::HalfPair {
            missing: key.into(),
            present: cert.into(),
        }),
        (false, false) => {
            generate(cert, key, &self_signed_names(extra_sans))?;
            tracing::warn!(
                cert = %cert.display(),
                "generated a self-signed certificate; browsers will warn until you trust it or configure a real one in [http] cert/key"
            );
            Ok(CertOrigin::Generated)
        }
    }
}

/// The subject alternative names of a generated certificate.
pub fn self_signed_names(extra: &[IpAddr]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let host = crate::config::host_name();
    for name in std::iter::once(host).chain(extra.iter().map(|ip| ip.to_string())) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn generate(cert: &Path, key: &Path, names: &[String]) -> Result<(), CertError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| CertError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tablecast self-signed");
    let pair = rcgen::KeyPair::generate().map_err(|e| CertError::Generate(e.to_string()))?;
    let issued = params
        .self_signed(&pair)
        .map_err(|e| CertError::Generate(e.to_string()))?;
    for path in [cert, key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
                path: dir.into(),
                source,
            })?;
        }
    }
    crate::auth::keys::write_private(key, pair.serialize_pem().as_bytes()).map_err(|source| {
        CertError::Write {
            path: key.into(),
            source,
        }
    })?;
    std::fs::write(cert, issued.pem()).map_err(|source| CertError::Write {
        path: cert.into(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, CertError> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.into(),
        source,
    })?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: path.into(),
            what: "certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::Pem {
            path: path.into(),
            what: "certificate",
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, CertError> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.into(),
        source,
    })?;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem).map_err(|e| CertError::Pem {
        path: path.into(),
        what: "private key",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_is_written_once_and_loads() {
        let dir = std::env::temp_dir().join(format!("tablecast-certs-{}", std::process::id()));
        let http = HttpConfig {
            cert: dir.join("c/t.crt"),
            key: dir.join("c/t.key"),
            ..HttpConfig::default()
        };
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let (_, origin) = rustls_config(&http, &[ip]).unwrap();
        assert_eq!(origin, CertOrigin::Generated);
        let first = std::fs::read(&http.cert).unwrap();
        let (_, origin) = rustls_config(&http, &[ip]).unwrap();
        assert_eq!(origin, CertOrigin::Configured);
        assert_eq!(
            first,
            std::fs::read(&http.cert).unwrap(),
            "reused, not regenerated"
        );
        std::fs::remove_file(&http.key).unwrap();
        assert!(matches!(
            rustls_config(&http, &[]),
            Err(CertError::HalfPair { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn generated_names_cover_loopback_and_announced_addresses() {
        let names = self_signed_names(&["198.51.100.1".parse().unwrap()]);
        for n in ["localhost", "127.0.0.1", "::1", "198.51.100.1"] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
    }
}

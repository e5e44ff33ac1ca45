//! TLS for the HTTP and chat ports (rustls; TLS 1.2 and 1.3 only, ALPN
//! `http/1.1`).
//!
//! QMessageServer only warns about a bad certificate and then runs without
//! TLS; here every problem with the files ends start-up with one line that
//! names the file and the problem. SIGHUP reloads the pair without touching
//! open connections: new handshakes use the new pair, and a pair that does
//! not load is refused with a log line while the old one stays in use.

use crate::config::TlsFiles;
use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// The current server configuration, swappable on reload.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Loads the pair; the error is one line naming the file and problem.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let config = server_config(&files)?;
        Ok(Tls {
            files,
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// An acceptor with the configuration in force now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        TlsAcceptor::from(config)
    }

    /// Reads the files again; keeps the old pair if the new one is bad.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(p) => *p.into_inner() = config,
        }
        Ok(())
    }
}

/// Why a certificate and key could not be used. Each message is the one
/// line start-up ends with (or a refused SIGHUP logs), naming the file and
/// the problem; the fields let callers tell the cases apart.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} {}: {error}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("TLS certificate {} is not valid PEM: {error}", path.display())]
    CertificatePem { path: PathBuf, error: pem::Error },
    #[error("TLS certificate {} holds no CERTIFICATE block", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "TLS key {} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {error}",
        path.display()
    )]
    Key { path: PathBuf, error: pem::Error },
    #[error("TLS setup failed: {0}")]
    Setup(rustls::Error),
    #[error("TLS key {} does not fit certificate {}: {error}", files.key.display(), files.cert.display())]
    Mismatch {
        files: TlsFiles,
        error: rustls::Error,
    },
    #[error(
        "TLS certificate {} or key {} cannot be used: {error}",
        files.cert.display(),
        files.key.display()
    )]
    Unusable {
        files: TlsFiles,
        error: rustls::Error,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(rcgen::Error),
}

fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| {
            let files = files.clone();
            match error {
                rustls::Error::InconsistentKeys(_) => TlsError::Mismatch { files, error },
                error => TlsError::Unusable { files, error },
            }
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, "certificate")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::CertificatePem {
            path: path.to_owned(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| TlsError::Key {
        path: path.to_owned(),
        error,
    })
}

/// A self-signed development certificate for `hosts`, as PEM strings
/// (certificate, key). `sotto cert --self-signed` writes them.
pub fn self_signed(hosts: &[String]) -> Result<(String, String), TlsError> {
    let ck = rcgen::generate_simple_self_signed(hosts.to_vec()).map_err(TlsError::Generate)?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str, hosts: &[&str]) -> TlsFiles {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let (cert, key) = self_signed(&hosts).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    #[test]
    fn loads_a_pair_and_names_the_problem_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a", &["localhost"]);
        let b = write_pair(dir.path(), "b", &["localhost"]);
        assert!(Tls::load(a.clone()).is_ok());

        let mismatched = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = Tls::load(mismatched).err().unwrap().to_string();
        assert!(e.contains("does not fit") && e.contains("b.key"), "{e}");

        let missing = TlsFiles {
            cert: dir.path().join("nope.crt"),
            key: a.key.clone(),
        };
        let e = Tls::load(missing).err().unwrap().to_string();
        assert!(
            e.starts_with("cannot read TLS certificate") && e.contains("nope.crt"),
            "{e}"
        );

        let swapped = TlsFiles {
            cert: a.key.clone(),
            key: a.cert.clone(),
        };
        let e = Tls::load(swapped).err().unwrap().to_string();
        assert!(e.contains("no CERTIFICATE"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn reload_keeps_the_old_pair_when_the_new_one_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a", &["localhost"]);
        let tls = Tls::load(a.clone()).unwrap();
        std::fs::write(&a.key, "garbage").unwrap();
        assert!(tls.reload().is_err());
        let _still = tls.acceptor();
        write_pair(dir.path(), "a", &["localhost"]);
        assert!(tls.reload().is_ok());
    }
}

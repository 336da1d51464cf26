//! TLS on the coordinator's endpoints (gRPC and the tlog-tiles HTTP server): rustls over ring,
//! a certificate chain and key read from PEM files and read again, for new connections, as soon
//! as either file changes on disk (operators rotate certificates without a restart), and
//! `tls init`: a private CA and a server certificate for trials (rcgen).
//!
//! Hospitals are not asked for client certificates: they authenticate with their enrolled
//! Ed25519 keys (a signed challenge, then a session), so TLS here only has to authenticate the
//! coordinator and keep the link private and intact.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// ALPN protocol of gRPC (HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol of the tlog-tiles server (HTTP/1.1).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("certificate {cert} and key {key} do not go together: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The crypto provider of every TLS link: ring (pure Rust build, no system OpenSSL).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key loaded from PEM files.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let pem_err = |p: &Path, reason: String| TlsError::Pem {
        path: p.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(pem_err(cert, "holds no CERTIFICATE block".into()));
    }
    let der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| pem_err(key, format!("not a PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// What identifies a version of a file on disk.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

struct Loaded {
    stamps: (Stamp, Stamp),
    key: Arc<CertifiedKey>,
}

/// Serves the certificate in two files and loads them again when either changes (size,
/// modification time or inode), checked at every handshake (two `stat` calls). A new pair that
/// does not load (half written, key not matching the certificate) is ignored with a warning,
/// once per version: the previous certificate is served until a good pair is on disk.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Loaded>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ReloadingCert {
    /// Loads the pair now (an error here stops the start).
    pub fn new(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamps = (stamp(cert), stamp(key));
        let loaded = load_certified_key(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: Mutex::new(Loaded {
                stamps,
                key: Arc::new(loaded),
            }),
        })
    }

    /// The certificate to serve now, loading the files again if they changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let stamps = (stamp(&self.cert), stamp(&self.key));
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if stamps != l.stamps {
            match load_certified_key(&self.cert, &self.key) {
                Ok(k) => {
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    l.key = Arc::new(k);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "the TLS certificate files changed but do not load; serving the previous one"
                ),
            }
            l.stamps = stamps;
        }
        l.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A server configuration that serves `cert` (reloaded when it changes) and offers `alpn`.
pub fn server_config(cert: Arc<ReloadingCert>, alpn: &[u8]) -> Result<ServerConfig, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}

/// What `tls init` wrote.
#[derive(Debug)]
pub struct Issued {
    /// The CA certificate hospitals trust (`[tls] ca` in participant.toml).
    pub ca_cert: PathBuf,
    /// The CA's private key: keep it offline; `tls init` with it issues the next certificate.
    pub ca_key: PathBuf,
    /// Whether the CA was created now (else an existing one issued the certificate).
    pub ca_created: bool,
    /// The server certificate chain (`[tls] cert` in coordinator.toml).
    pub cert: PathBuf,
    /// The server's private key (`[tls] key`).
    pub key: PathBuf,
    /// SHA-256 of the CA certificate (DER), colon-separated hex, to compare over a second
    /// channel.
    pub ca_sha256: String,
    /// The names the server certificate is valid for.
    pub names: Vec<String>,
}

/// Creates (or reuses, when `dir/ca.key` exists) a private CA in `dir` and issues a server
/// certificate for `names` (DNS names or IP addresses), valid two years from the start of this
/// year. A new certificate is written beside the key atomically (temporary file, then rename),
/// so a running coordinator picks up either the old pair or the new one.
pub fn init(dir: &Path, names: &[String]) -> Result<Issued, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let year = 1970
        + (SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            / 31_556_952) as i32;
    // The CA's name carries its key's fingerprint: two trial CAs never share a name, so a
    // hospital holding another one's certificate is told "unknown issuer", and a CA re-made
    // from the same key has the same name.
    let ca_params = |key: &KeyPair| -> Result<CertificateParams, TlsError> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        let id = ring::digest::digest(&ring::digest::SHA256, &key.public_key_der());
        dn.push(
            DnType::CommonName,
            format!("fedledger federation CA {}", hex::encode(&id.as_ref()[..8])),
        );
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = rcgen::date_time_ymd(year, 1, 1);
        p.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
        Ok(p)
    };
    let (ca_key, ca_created) = if ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(|source| TlsError::Read {
            path: ca_key_path.clone(),
            source,
        })?;
        (KeyPair::from_pem(&pem)?, false)
    } else {
        (KeyPair::generate()?, true)
    };
    // The CA certificate is re-made from the same key and name when it already exists: it
    // signs alike, and the one hospitals hold (same key, same subject) verifies the new leaf.
    let ca = ca_params(&ca_key)?.self_signed(&ca_key)?;
    if ca_created {
        write_private(&ca_key_path, ca_key.serialize_pem().as_bytes())?;
        write_atomic(&ca_cert_path, ca.pem().as_bytes())?;
    }
    let ca_der = match std::fs::read(&ca_cert_path) {
        Ok(pem) => CertificateDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
            path: ca_cert_path.clone(),
            reason: e.to_string(),
        })?,
        Err(source) => {
            return Err(TlsError::Read {
                path: ca_cert_path,
                source,
            });
        }
    };
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_atomic(&cert_path, cert.pem().as_bytes())?;
    let digest = ring::digest::digest(&ring::digest::SHA256, ca_der.as_ref());
    let ca_sha256 = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(Issued {
        ca_cert: ca_cert_path,
        ca_key: ca_key_path,
        ca_created,
        cert: cert_path,
        key: key_path,
        ca_sha256,
        names: names.to_vec(),
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    write_with_mode(path, bytes, 0o644)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    write_with_mode(path, bytes, 0o600)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_reissue_keeps_the_ca_and_the_reloader_serves_the_new_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let first = init(dir.path(), &["coordinator.test".into()]).unwrap();
        assert!(first.ca_created);
        let reloader = ReloadingCert::new(&first.cert, &first.key).unwrap();
        let before = reloader.current().cert[0].clone();
        let ca_before = std::fs::read(&first.ca_cert).unwrap();
        let second = init(dir.path(), &["coordinator.test".into()]).unwrap();
        assert!(!second.ca_created);
        assert_eq!(std::fs::read(&second.ca_cert).unwrap(), ca_before);
        assert_eq!(first.ca_sha256, second.ca_sha256);
        let after = reloader.current().cert[0].clone();
        assert_ne!(before, after, "the reissued certificate is served");
    }

    #[test]
    fn a_key_that_does_not_match_is_ignored_and_the_old_pair_kept() {
        let dir = tempfile::tempdir().unwrap();
        let issued = init(dir.path(), &["127.0.0.1".into()]).unwrap();
        let reloader = ReloadingCert::new(&issued.cert, &issued.key).unwrap();
        let served = reloader.current().cert[0].clone();
        // Another key in place of the server's: the pair no longer matches.
        std::fs::copy(&issued.ca_key, &issued.key).unwrap();
        assert!(load_certified_key(&issued.cert, &issued.key).is_err());
        assert_eq!(reloader.current().cert[0], served);
    }
}

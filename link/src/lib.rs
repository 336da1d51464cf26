//! How a client reaches a server (the participant: the coordinator's gRPC endpoint and the log's
//! tlog-tiles API; the operators' tools: the coordinator's gRPC endpoint): which certificate it trusts, which name it verifies, whether plaintext is allowed, and
//! through which HTTP CONNECT proxy, if any. One [`Connector`] (a tower service from URI to
//! stream) does it for tonic and for the hyper client alike: a TCP connection to the server or
//! to the proxy, a CONNECT tunnel through the proxy, then TLS (rustls over ring) with the
//! configured trust.
//!
//! Plaintext (`http://`) is refused to anything but a loopback address unless the settings
//! allow it. Proxies: the configured one, else `HTTPS_PROXY` (for `https://`) or `HTTP_PROXY`
//! (for `http://`), upper or lower case; never for a host `NO_PROXY` names, nor (as Go's HTTP
//! stack does) for a loopback address unless configured explicitly.

use std::{
    fmt, io,
    net::IpAddr,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use base64::Engine as _;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// ALPN of gRPC (HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN of the tlog-tiles client (HTTP/1.1).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Largest CONNECT response head accepted from a proxy.
const MAX_PROXY_RESPONSE: usize = 16 * 1024;
/// A proxy must answer CONNECT within this.
const PROXY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a link cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{url}: {reason}")]
    Url { url: String, reason: String },
    #[error(
        "{url}: plaintext (http://) to a non-loopback address would let anyone on the path read \
         and alter the federation's traffic; use https:// (with [tls] ca or pin), or set \
         allow_plaintext = true in the participant's config if this network is trusted"
    )]
    Plaintext { url: String },
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("proxy {proxy}: {reason}")]
    Proxy { proxy: String, reason: String },
}

/// Which certificates the participant accepts from a TLS server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// Certificates chaining to the public web PKI (Mozilla's roots, built in).
    #[default]
    PublicRoots,
    /// Certificates chaining to the CA certificate(s) in this PEM file (`tls init`'s `ca.pem`),
    /// valid for the server's name.
    Ca(PathBuf),
    /// Exactly the certificate in this PEM file (its first certificate), whatever its issuer.
    Pin(PathBuf),
}

/// Where the proxy comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// `HTTPS_PROXY` / `HTTP_PROXY`, with `NO_PROXY`.
    #[default]
    FromEnv,
    /// This proxy (`http://[user:password@]host:port`), with `NO_PROXY`.
    Url(String),
    /// No proxy, whatever the environment says.
    Off,
}

/// What a link is made with (from `participant.toml`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkSettings {
    pub trust: Trust,
    /// The name the server's certificate must be valid for; default: the URL's host.
    pub server_name: Option<String>,
    /// Allow `http://` to addresses other than loopback.
    pub allow_plaintext: bool,
    pub proxy: ProxySetting,
}

/// A proxy to tunnel through.
#[derive(Clone)]
struct Proxy {
    /// `host:port` to dial.
    addr: String,
    /// `Basic ...` credentials, when the proxy URL carries them.
    auth: Option<String>,
    /// For messages (no credentials).
    shown: String,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// A resolved link to one server: what [`Link::connector`] dials.
#[derive(Clone, Debug)]
pub struct Link {
    url: String,
    /// `host:port` of the server, as the proxy or the resolver is asked for it.
    authority: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    proxy: Option<Proxy>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, LinkError> {
    let bytes = std::fs::read(path).map_err(|source| LinkError::Read {
        path: path.clone(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LinkError::Pem {
            path: path.clone(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(LinkError::Pem {
            path: path.clone(),
            reason: "holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// `NO_PROXY` (or `no_proxy`) names `host`: `*`, the host itself, or a domain it is in
/// (`example.org` and `.example.org` both match `a.example.org`). A port after an entry is
/// ignored; address ranges (CIDR) are not supported.
fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry
            .strip_prefix('[')
            .map_or(entry, |e| e.split(']').next().unwrap_or(e));
        let entry = match entry.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
            _ => entry,
        };
        let entry = entry.trim_start_matches('.').to_ascii_lowercase();
        !entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}")))
    })
}

fn env_var(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

fn parse_proxy(url: &str) -> Result<Proxy, LinkError> {
    let bad = |reason: String| LinkError::Proxy {
        proxy: url.to_owned(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|e| bad(format!("not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | None => {}
        Some(s) => {
            return Err(bad(format!(
                "only http:// proxies are supported, not {s}://"
            )));
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("no host".into()))?
        .as_str();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let addr = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !hostport.ends_with(']')
    {
        hostport.to_owned()
    } else {
        format!("{hostport}:80")
    };
    let auth = userinfo.map(|u| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(u.as_bytes())
        )
    });
    Ok(Proxy {
        shown: format!("http://{addr}"),
        addr,
        auth,
    })
}

impl Link {
    /// A link to `url` (`https://host:port` or `http://host:port`, any path ignored).
    pub fn new(url: &str, settings: &LinkSettings) -> Result<Self, LinkError> {
        Self::new_with(url, settings, env_var)
    }

    fn new_with(
        url: &str,
        settings: &LinkSettings,
        env: impl Fn(&[&str]) -> Option<String>,
    ) -> Result<Self, LinkError> {
        let bad = |reason: String| LinkError::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|e| bad(format!("not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(bad(
                    "must start with https:// (or http:// on loopback)".into()
                ));
            }
        };
        let host = uri.host().ok_or_else(|| bad("no host".into()))?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        if !https && !settings.allow_plaintext && !is_loopback(&host) {
            return Err(LinkError::Plaintext {
                url: url.to_owned(),
            });
        }
        let tls = if https {
            let name = settings.server_name.clone().unwrap_or_else(|| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            });
            let name = ServerName::try_from(name.clone())
                .map_err(|e| bad(format!("server name {name:?}: {e}")))?;
            Some((Arc::new(client_config(&settings.trust)?), name))
        } else {
            None
        };
        let from_env = || {
            if https {
                env(&["HTTPS_PROXY", "https_proxy"])
            } else {
                env(&["http_proxy", "HTTP_PROXY"])
            }
        };
        let proxy_url = match &settings.proxy {
            ProxySetting::Off => None,
            ProxySetting::Url(p) => Some(p.clone()),
            ProxySetting::FromEnv if is_loopback(&host) => None,
            ProxySetting::FromEnv => from_env(),
        };
        let excluded = env(&["NO_PROXY", "no_proxy"]).is_some_and(|n| no_proxy_matches(&n, &host));
        let proxy = match proxy_url {
            Some(p) if !excluded => Some(parse_proxy(&p)?),
            _ => None,
        };
        Ok(Self {
            url: url.to_owned(),
            authority,
            tls,
            proxy,
        })
    }

    /// The URL this link reaches.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the link speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The proxy it tunnels through (`http://host:port`, no credentials), if any.
    pub fn proxy(&self) -> Option<&str> {
        self.proxy.as_ref().map(|p| p.shown.as_str())
    }

    /// A connector offering `alpn` ([`ALPN_H2`] for gRPC, [`ALPN_HTTP1`] for tiles).
    pub fn connector(&self, alpn: &[u8]) -> Connector {
        let tls = self.tls.as_ref().map(|(cfg, name)| {
            let mut cfg = (**cfg).clone();
            cfg.alpn_protocols = vec![alpn.to_vec()];
            (TlsConnector::from(Arc::new(cfg)), name.clone())
        });
        Connector {
            authority: self.authority.clone(),
            tls,
            proxy: self.proxy.clone(),
        }
    }
}

/// The rustls client configuration of a trust setting.
pub fn client_config(trust: &Trust) -> Result<ClientConfig, LinkError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let cfg = match trust {
        Trust::PublicRoots => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Ca(path) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(path)? {
                roots.add(c).map_err(|e| LinkError::Pem {
                    path: path.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pin(path) => {
            let pinned = read_certs(path)?.swap_remove(0);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    cert: pinned,
                    provider: provider(),
                }))
                .with_no_client_auth()
        }
    };
    Ok(cfg)
}

/// Accepts exactly one certificate (byte for byte), and checks the handshake's signature
/// with its key: who holds the pinned certificate's private key is the server.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Dials a [`Link`]: TCP (to the proxy, then CONNECT), then TLS. The URI it is called with is
/// ignored: a connector reaches the one server its link names.
#[derive(Clone)]
pub struct Connector {
    authority: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    proxy: Option<Proxy>,
}

impl Connector {
    /// Opens one connection.
    pub async fn connect(&self) -> io::Result<LinkStream> {
        let tcp = match &self.proxy {
            None => TcpStream::connect(&self.authority).await?,
            Some(p) => tokio::time::timeout(PROXY_TIMEOUT, tunnel(p, &self.authority))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("proxy {} did not open a tunnel in time", p.shown),
                    )
                })??,
        };
        tcp.set_nodelay(true)?;
        let io = match &self.tls {
            None => Io::Plain(tcp),
            Some((connector, name)) => {
                Io::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
            }
        };
        Ok(LinkStream(TokioIo::new(io)))
    }
}

/// Opens a CONNECT tunnel to `authority` through `proxy`.
async fn tunnel(proxy: &Proxy, authority: &str) -> io::Result<TcpStream> {
    let fail = |m: String| io::Error::other(format!("proxy {}: {m}", proxy.shown));
    let mut s = TcpStream::connect(&proxy.addr).await?;
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(a) = &proxy.auth {
        req.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // Byte by byte: nothing past the response head may be consumed (the server may speak
    // first, as an HTTP/2 server does).
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_RESPONSE {
            return Err(fail("response head too long".into()));
        }
        let b = s.read_u8().await.map_err(|e| fail(format!("{e}")))?;
        head.push(b);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if !(status.starts_with("HTTP/1.") && code == "200") {
        return Err(fail(format!("CONNECT {authority} refused: {status}")));
    }
    Ok(s)
}

impl tower_service::Service<Uri> for Connector {
    type Response = LinkStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<LinkStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move { me.connect().await })
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// One connection of a [`Connector`], as hyper (and so tonic) reads and writes it.
pub struct LinkStream(TokioIo<Io>);

impl hyper::rt::Read for LinkStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for LinkStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

impl Connection for LinkStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&[&str]) -> Option<String> + 'a {
        move |names| {
            names.iter().find_map(|n| {
                vars.iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| (*v).to_owned())
            })
        }
    }

    #[test]
    fn plaintext_is_refused_off_loopback_unless_allowed() {
        let s = LinkSettings::default();
        for ok in [
            "http://127.0.0.1:50051",
            "http://localhost:1",
            "http://[::1]:50051",
        ] {
            Link::new_with(ok, &s, env_of(&[])).unwrap();
        }
        for refused in [
            "http://coordinator.example.org:50051",
            "http://10.1.2.3:50051",
        ] {
            let e = Link::new_with(refused, &s, env_of(&[])).unwrap_err();
            assert!(matches!(e, LinkError::Plaintext { .. }), "{e}");
            assert!(e.to_string().contains("allow_plaintext"));
        }
        let allowed = LinkSettings {
            allow_plaintext: true,
            ..Default::default()
        };
        Link::new_with("http://10.1.2.3:50051", &allowed, env_of(&[])).unwrap();
    }

    #[test]
    fn proxies_come_from_the_config_or_the_environment_and_no_proxy_excludes() {
        let s = LinkSettings::default();
        let env = [("HTTPS_PROXY", "http://user:pw@proxy.local:3128")];
        let l = Link::new_with("https://c.example.org:50051", &s, env_of(&env)).unwrap();
        assert_eq!(l.proxy(), Some("http://proxy.local:3128"));
        assert_eq!(
            l.proxy.as_ref().unwrap().auth.as_deref(),
            Some("Basic dXNlcjpwdw==")
        );
        // Loopback never takes the environment's proxy.
        let l = Link::new_with("https://127.0.0.1:50051", &s, env_of(&env)).unwrap();
        assert_eq!(l.proxy(), None);
        for no in [
            "example.org",
            ".example.org",
            "*",
            "other, c.example.org:50051",
        ] {
            let env = [("HTTPS_PROXY", "http://proxy.local:3128"), ("NO_PROXY", no)];
            let l = Link::new_with("https://c.example.org:50051", &s, env_of(&env)).unwrap();
            assert_eq!(l.proxy(), None, "NO_PROXY={no}");
        }
        let env = [
            ("HTTPS_PROXY", "http://proxy.local:3128"),
            ("NO_PROXY", "ample.org"),
        ];
        let l = Link::new_with("https://c.example.org:50051", &s, env_of(&env)).unwrap();
        assert_eq!(l.proxy(), Some("http://proxy.local:3128"));
        let configured = LinkSettings {
            proxy: ProxySetting::Url("http://p.local".into()),
            ..Default::default()
        };
        let l = Link::new_with("https://127.0.0.1:1", &configured, env_of(&[])).unwrap();
        assert_eq!(l.proxy(), Some("http://p.local:80"));
        let off = LinkSettings {
            proxy: ProxySetting::Off,
            ..Default::default()
        };
        let l = Link::new_with("https://c.example.org:1", &off, env_of(&env)).unwrap();
        assert_eq!(l.proxy(), None);
        let socks = LinkSettings {
            proxy: ProxySetting::Url("socks5://p.local:1080".into()),
            ..Default::default()
        };
        assert!(Link::new_with("https://c.example.org:1", &socks, env_of(&[])).is_err());
    }
}

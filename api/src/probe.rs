//! One HTTP(S) GET, as health and readiness checks make it: to a task's port, `Connection:
//! close`, the status, content type and the start of the body. Over TLS the certificate is
//! not verified (a task's certificate is usually self-signed or for a public name; Mesos and
//! Marathon do not verify it either), but the handshake's signatures are.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the task answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    /// At most the `max_body` bytes asked for.
    pub body: Vec<u8>,
}

/// A response head longer than this is not a health check's answer.
const MAX_HEAD: usize = 16 * 1024;

/// `GET path` on `host:port` (over TLS when `tls`). The caller bounds the time it takes.
pub async fn get(
    host: &str,
    port: u16,
    path: &str,
    tls: bool,
    max_body: usize,
) -> std::io::Result<Answer> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    if !tls {
        return exchange(tcp, host, port, path, max_body).await;
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let connector = tls_connector().ok_or_else(|| std::io::Error::other("no TLS configuration"))?;
    let stream = connector.connect(name, tcp).await?;
    exchange(stream, host, port, path, max_body).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    port: u16,
    path: &str,
    max_body: usize,
) -> std::io::Result<Answer> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: basalt-check\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("response head too long"));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            // A server that closes after a bare status line still said something.
            break buf.len();
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .get(9..12)
        .filter(|_| head.starts_with("HTTP/1."))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP/1 response"))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let mut body: Vec<u8> = buf[head_end..].to_vec();
    while body.len() < max_body {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(max_body);
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

/// TLS for health checks: any certificate is accepted (a task's certificate is usually
/// self-signed or for a public name, and Mesos does not check it either); the handshake's
/// signatures are still verified, so the server holds the key of the certificate it shows.
fn tls_connector() -> Option<tokio_rustls::TlsConnector> {
    static CONNECTOR: std::sync::OnceLock<Option<tokio_rustls::TlsConnector>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            #[allow(deprecated)] // ring is the provider already in the build (see Cargo.toml)
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert(provider)))
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
                config,
            )))
        })
        .clone()
}

#[derive(Debug)]
struct AnyCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_are_read_as_far_as_asked() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 503 Not Yet\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nwarming up!",
                    )
                    .await;
            }
        });
        let a = get("127.0.0.1", port, "/ready", false, 7)
            .await
            .expect("answer");
        assert_eq!(a.status, 503);
        assert_eq!(a.content_type, "text/plain");
        assert_eq!(a.body, b"warming");
        assert!(
            get("127.0.0.1", port, "/", true, 0).await.is_err(),
            "not TLS"
        );
    }
}

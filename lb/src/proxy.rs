//! HTTP proxying on pingora: the vhost port, the `X-Marathon-App-Id` port and every HTTP
//! service port share this `ProxyHttp`; `Front` says which routing a listener does.

use crate::table::{Backend, Pool, STICKY_COOKIE, Table};
use crate::{Config, now_ms, now_us};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora_core::protocols::http::ServerSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Which routing a listener does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// `HAPROXY_{n}_VHOST` / `HAPROXY_{n}_PATH` on port 80 (9080 in `basalt up`).
    Vhost,
    /// `X-Marathon-App-Id: /app` on 9091.
    AppId,
    /// One HTTP-mode service port.
    ServicePort(u16),
}

pub struct Proxy {
    pub front: Front,
    pub table: Arc<ArcSwap<Table>>,
    pub config: Arc<Config>,
}

/// Per request.
#[derive(Default)]
pub struct Ctx {
    pool: Option<Arc<Pool>>,
    backend: Option<Arc<Backend>>,
    tried: Vec<SocketAddr>,
    started_us: u64,
    set_cookie: Option<String>,
}

impl Ctx {
    /// Stops counting the current backend as busy; returns it.
    fn release(&mut self) -> Option<Arc<Backend>> {
        let b = self.backend.take()?;
        b.state.active.fetch_sub(1, Ordering::Relaxed);
        Some(b)
    }
}

pub(crate) fn cookie_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn request_host(req: &RequestHeader) -> Option<String> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
    // Strip a port, keeping IPv6 literals whole.
    let host = if raw.starts_with('[') {
        raw.split_once(']')
            .map_or(raw, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    Some(host.to_ascii_lowercase())
}

pub(crate) fn client_ip(session: &ServerSession) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

pub(crate) fn is_tls(session: &ServerSession) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// A JSON error body, as every Basalt API answers.
pub(crate) async fn respond_json(session: &mut ServerSession, code: u16, msg: &str) -> Result<()> {
    let body = Bytes::from(format!("{{\"message\":{}}}\n", serde_json::json!(msg)));
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await?;
    Ok(())
}

/// `HAPROXY_{n}_REDIRECT_TO_HTTPS`: a 301 to the same host and path over https.
pub(crate) async fn redirect_https(session: &mut ServerSession) -> Result<()> {
    let req = session.req_header();
    let host = request_host(req).unwrap_or_default();
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{path}");
    let mut resp = ResponseHeader::build(301, Some(2))?;
    resp.insert_header(http::header::LOCATION, location)?;
    resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    session.write_response_header(Box::new(resp)).await?;
    session.finish_body().await
}

/// marathon-lb's HTTP backends: `option forwardfor` and X-Forwarded-Port/-Proto.
pub(crate) fn forward_headers(session: &ServerSession, req: &mut RequestHeader) {
    if let Some(ip) = client_ip(session) {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        let _ = req.insert_header("x-forwarded-for", xff);
    }
    if let Some(port) = session
        .server_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.port())
    {
        let _ = req.insert_header("x-forwarded-port", port.to_string());
    }
    let proto = if is_tls(session) { "https" } else { "http" };
    let _ = req.insert_header("x-forwarded-proto", HeaderValue::from_static(proto));
}

impl Proxy {
    pub(crate) fn peer(&self, b: &Backend) -> HttpPeer {
        let mut peer = HttpPeer::new(b.addr, false, String::new());
        peer.options.connection_timeout = Some(self.config.connect_timeout);
        peer.options.read_timeout = Some(self.config.backend_timeout);
        peer.options.write_timeout = Some(self.config.backend_timeout);
        peer.options.idle_timeout = Some(self.config.idle_timeout);
        peer
    }

    pub(crate) fn find_pool(&self, req: &RequestHeader) -> Result<Arc<Pool>, (u16, String)> {
        let table = self.table.load();
        match self.front {
            Front::Vhost => {
                let host = request_host(req).unwrap_or_default();
                table
                    .route_vhost(&host, req.uri.path())
                    .cloned()
                    .ok_or_else(|| {
                        (
                            503,
                            format!("no app serves host {host:?} path {:?}", req.uri.path()),
                        )
                    })
            }
            Front::AppId => {
                let Some(id) = req
                    .headers
                    .get("x-marathon-app-id")
                    .and_then(|v| v.to_str().ok())
                else {
                    return Err((400, "missing X-Marathon-App-Id header".into()));
                };
                let id = id.trim();
                let norm = if id.starts_with('/') {
                    id.to_owned()
                } else {
                    format!("/{id}")
                };
                table
                    .by_app_id
                    .get(&norm)
                    .cloned()
                    .ok_or_else(|| (503, format!("no HTTP app {norm} behind this load balancer")))
            }
            Front::ServicePort(p) => table
                .service_ports
                .get(&p)
                .cloned()
                .ok_or_else(|| (503, format!("service port {p} has no app"))),
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let pool = match self.find_pool(session.req_header()) {
            Ok(p) => p,
            Err((code, msg)) => {
                respond_json(session.as_downstream_mut(), code, &msg).await?;
                return Ok(true);
            }
        };
        if pool.spec.redirect_to_https && !is_tls(session.as_downstream()) {
            redirect_https(session.as_downstream_mut()).await?;
            return Ok(true);
        }
        if !crate::table::Table::any_ready(&pool) {
            let msg = format!("{} has no healthy and ready instances", pool.app_id);
            respond_json(session.as_downstream_mut(), 503, &msg).await?;
            return Ok(true);
        }
        ctx.pool = Some(pool);
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.release();
        let Some(pool) = ctx.pool.clone() else {
            return Err(Error::explain(ErrorType::HTTPStatus(503), "no route"));
        };
        let sticky = if pool.spec.sticky {
            cookie_value(session.req_header(), STICKY_COOKIE)
        } else {
            None
        };
        let now = now_ms();
        let Some(b) = pool.select(&ctx.tried, sticky, client_ip(session.as_downstream()), now)
        else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                format!("{}: every instance failed", pool.app_id),
            ));
        };
        if pool.spec.sticky && sticky != Some(b.cookie.as_str()) {
            ctx.set_cookie = Some(b.cookie.clone());
        }
        b.state.active.fetch_add(1, Ordering::Relaxed);
        if ctx.started_us == 0 {
            ctx.started_us = now_us().max(1);
        }
        ctx.tried.push(b.addr);
        let peer = self.peer(&b);
        ctx.backend = Some(b);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        forward_headers(session.as_downstream(), req);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(b) = ctx.release() {
            b.state.failed(now_ms(), b.addr);
            b.state.errors.fetch_add(1, Ordering::Relaxed);
        }
        // One retry, on another backend: nothing reached the backend yet, so any method
        // may be retried.
        let others = ctx
            .pool
            .as_ref()
            .is_some_and(|p| p.backends.iter().any(|b| !ctx.tried.contains(&b.addr)));
        e.set_retry(ctx.tried.len() < 2 && others);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("backend {peer}"));
        if let Some(b) = ctx.release() {
            // A pooled connection the backend had closed is routine, not a sign of trouble.
            if !client_reused {
                b.state.failed(now_ms(), b.addr);
                b.state.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(c) = ctx.set_cookie.take() {
            resp.append_header(
                http::header::SET_COOKIE,
                format!("{STICKY_COOKIE}={c}; Path=/; HttpOnly"),
            )?;
        }
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _error: &Error) -> bool {
        // A dead backend under load would log every request at ERROR; failures are counted
        // per backend (stats, metrics) and ejections are logged once each instead.
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let Some(b) = ctx.release() else { return };
        let st = &b.state;
        st.requests.fetch_add(1, Ordering::Relaxed);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if e.is_some() || status >= 500 {
            st.errors.fetch_add(1, Ordering::Relaxed);
        }
        if e.is_none() && status != 0 {
            st.succeeded();
        }
        let took = now_us().saturating_sub(ctx.started_us);
        st.latency_us_total.fetch_add(took, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_cookie_parsing() {
        let mut req = RequestHeader::build("GET", b"/x", None).expect("request");
        req.insert_header("host", "Web.Example.COM:9080")
            .expect("host");
        req.append_header("cookie", "a=1; mesosphere_server_id=abc")
            .expect("cookie");
        assert_eq!(request_host(&req).as_deref(), Some("web.example.com"));
        assert_eq!(cookie_value(&req, STICKY_COOKIE), Some("abc"));
        assert_eq!(cookie_value(&req, "b"), None);
        let mut v6 = RequestHeader::build("GET", b"/", None).expect("request");
        v6.insert_header("host", "[::1]:80").expect("host");
        assert_eq!(request_host(&v6).as_deref(), Some("::1"));
    }
}

//! The HTTP/1 request path, straight on pingora-core: read the request, pick a backend, send,
//! stream the answer back, return both connections to their pools. Same routing, retries,
//! stats and headers as `proxy::Proxy`, without `ProxyHttp`'s per-request machinery (module
//! filters, cache hooks, a channel and a task pair per request), which was most of the gap
//! to HAProxy and nginx (bench/lb.sh). HTTP/2 sessions (h2c, or ALPN on TLS) go to the full
//! `ProxyHttp` path, which multiplexes streams.

use crate::proxy::{Proxy, client_ip, forward_headers, is_tls, respond_json};
use crate::table::{Backend, STICKY_COOKIE};
use crate::{now_ms, now_us};
use async_trait::async_trait;
use pingora_core::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream,
};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::http::v1::client::HttpSession as Upstream;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use pingora_proxy::HttpProxy;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(crate) struct Edge {
    /// HTTP/2 sessions.
    pub(crate) h2: Arc<HttpProxy<Proxy>>,
    pub(crate) router: Proxy,
    pub(crate) connector: Connector,
    pub(crate) options: Option<HttpServerOptions>,
}

/// Counts a backend busy (leastconn) for as long as it lives.
struct Busy(Arc<Backend>);

impl Busy {
    fn new(b: Arc<Backend>) -> Busy {
        b.state.active.fetch_add(1, Ordering::Relaxed);
        Busy(b)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.state.active.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Outcome {
    /// Answered; the downstream connection may be reused.
    Reusable,
    /// The downstream connection must close.
    Close,
}

impl Edge {
    async fn serve(&self, s: &mut ServerSession) -> Outcome {
        let pool = match self.router.find_pool(s.req_header()) {
            Ok(p) => p,
            Err((code, msg)) => {
                return match respond_json(s, code, &msg).await {
                    Ok(()) => Outcome::Reusable,
                    Err(_) => Outcome::Close,
                };
            }
        };
        if pool.spec.redirect_to_https && !is_tls(s) {
            return match crate::proxy::redirect_https(s).await {
                Ok(()) => Outcome::Reusable,
                Err(_) => Outcome::Close,
            };
        }
        if !crate::table::Table::any_ready(&pool) {
            let msg = format!("{} has no healthy and ready instances", pool.app_id);
            return match respond_json(s, 503, &msg).await {
                Ok(()) => Outcome::Reusable,
                Err(_) => Outcome::Close,
            };
        }
        let sticky = if pool.spec.sticky {
            crate::proxy::cookie_value(s.req_header(), STICKY_COOKIE).map(str::to_owned)
        } else {
            None
        };
        let client = client_ip(s);
        let has_body = !s.is_body_empty();
        // `Expect: 100-continue` is answered here, as nginx does: the backend gets the body
        // without the expectation, so no interim response can be mistaken for the answer.
        let expect_continue = s
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let idempotent = s.req_header().method.is_idempotent();
        let started = now_us();
        let mut tried = Vec::with_capacity(2);
        // Connect, send, read the response head; one more backend when that fails before
        // the backend saw anything (or on a pooled connection the backend had closed).
        let (mut up, busy, peer) = loop {
            let Some(b) = pool.select(&tried, sticky.as_deref(), client, now_ms()) else {
                let _ =
                    respond_json(s, 502, &format!("{}: every instance failed", pool.app_id)).await;
                return Outcome::Close;
            };
            tried.push(b.addr);
            let busy = Busy::new(b.clone());
            let peer = self.router.peer(&b);
            let (mut up, reused) = match self.connector.get_http_session(&peer).await {
                Ok(x) => x,
                Err(_) => {
                    b.state.failed(now_ms(), b.addr);
                    b.state.errors.fetch_add(1, Ordering::Relaxed);
                    if tried.len() < 2 {
                        continue;
                    }
                    let _ = respond_json(s, 502, "cannot connect to a backend").await;
                    return Outcome::Close;
                }
            };
            // Built per attempt from the downstream's copy: one header clone per request in
            // the common case, not two.
            let mut req = Box::new(s.req_header().clone());
            forward_headers(s, &mut req);
            if expect_continue {
                req.remove_header(&http::header::EXPECT);
            }
            let sent = up.write_request_header(req).await.is_ok();
            if !sent {
                if reused && !has_body {
                    tried.pop();
                    continue;
                }
                b.state.failed(now_ms(), b.addr);
                b.state.errors.fetch_add(1, Ordering::Relaxed);
                let _ = respond_json(s, 502, "the backend closed the connection").await;
                return Outcome::Close;
            }
            if has_body {
                if expect_continue && s.write_continue_response().await.is_err() {
                    return Outcome::Close;
                }
                loop {
                    match s.read_request_body().await {
                        // A read that held only chunk framing yields nothing; passed on, an
                        // empty write would end a chunked body early.
                        Ok(Some(d)) if d.is_empty() => {}
                        Ok(Some(d)) => {
                            if up.write_body(&d).await.is_err() {
                                b.state.errors.fetch_add(1, Ordering::Relaxed);
                                let _ = respond_json(s, 502, "the backend stopped reading").await;
                                return Outcome::Close;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return Outcome::Close,
                    }
                }
                if up.finish_body().await.is_err() {
                    b.state.errors.fetch_add(1, Ordering::Relaxed);
                    let _ = respond_json(s, 502, "the backend stopped reading").await;
                    return Outcome::Close;
                }
            }
            match read_final_response(&mut up).await {
                Ok(()) => break (up, busy, peer),
                Err(_) if reused && !has_body && idempotent => {
                    tried.pop();
                    continue;
                }
                Err(_) => {
                    b.state.failed(now_ms(), b.addr);
                    b.state.errors.fetch_add(1, Ordering::Relaxed);
                    let _ = respond_json(s, 502, "the backend closed the connection").await;
                    return Outcome::Close;
                }
            }
        };
        let b = busy.0.clone();
        let st = &b.state;
        let Some(head) = up.resp_header() else {
            return Outcome::Close;
        };
        let mut head: Box<ResponseHeader> = Box::new(head.clone());
        let status = head.status.as_u16();
        if pool.spec.sticky && sticky.as_deref() != Some(b.cookie.as_str()) {
            let _ = head.append_header(
                http::header::SET_COOKIE,
                format!("{STICKY_COOKIE}={}; Path=/; HttpOnly", b.cookie),
            );
        }
        let upgraded = status == 101 && s.is_upgrade_req();
        if s.write_response_header(head).await.is_err() {
            return Outcome::Close;
        }
        st.succeeded();
        if upgraded {
            splice(s, &mut up).await;
            st.requests.fetch_add(1, Ordering::Relaxed);
            return Outcome::Close;
        }
        let mut ok = true;
        loop {
            match up.read_body_bytes().await {
                Ok(Some(d)) if d.is_empty() => {}
                Ok(Some(d)) => {
                    if s.write_response_body(d, false).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    st.errors.fetch_add(1, Ordering::Relaxed);
                    ok = false;
                    break;
                }
            }
        }
        st.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            st.errors.fetch_add(1, Ordering::Relaxed);
        }
        st.latency_us_total
            .fetch_add(now_us().saturating_sub(started), Ordering::Relaxed);
        drop(busy);
        if ok && up.is_body_done() {
            self.connector
                .release_http_session(up, &peer, Some(self.router.config.idle_timeout))
                .await;
        }
        if ok {
            Outcome::Reusable
        } else {
            Outcome::Close
        }
    }
}

/// Reads the response head, skipping interim 1xx answers (but 101, which is final for an
/// upgrade): left in the connection they would be read as the next request's answer.
async fn read_final_response(up: &mut Upstream) -> pingora_core::Result<()> {
    for _ in 0..8 {
        up.read_response().await?;
        let status = up.resp_header().map_or(0, |h| h.status.as_u16());
        if !(100..200).contains(&status) || status == 101 {
            return Ok(());
        }
    }
    Err(pingora_core::Error::explain(
        pingora_core::ErrorType::InvalidHTTPHeader,
        "too many interim responses",
    ))
}

/// After a 101: bytes both ways until either side closes.
async fn splice(s: &mut ServerSession, up: &mut Upstream) {
    up.maybe_upgrade_body_writer();
    loop {
        tokio::select! {
            d = s.read_request_body() => match d {
                Ok(Some(d)) if d.is_empty() => {}
                Ok(Some(d)) => {
                    if up.write_body(&d).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
            d = up.read_body_bytes() => match d {
                Ok(Some(d)) if d.is_empty() => {}
                Ok(Some(d)) => {
                    if s.write_response_body(d, false).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
        }
    }
}

#[async_trait]
impl HttpServerApp for Edge {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if session.is_http2() {
            return self.h2.process_new_http(session, shutdown).await;
        }
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                if matches!(e.etype(), pingora_core::ErrorType::InvalidHTTPHeader) {
                    let _ = session.respond_error(400).await;
                }
                return None;
            }
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        match self.serve(&mut session).await {
            Outcome::Close => None,
            Outcome::Reusable => {
                let settings = HttpPersistentSettings::for_session(&session);
                match session.finish().await {
                    Ok(Some(s)) => Some(ReusedHttpStream::from_reusable_stream(s, settings)),
                    _ => None,
                }
            }
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.options.as_ref()
    }
}

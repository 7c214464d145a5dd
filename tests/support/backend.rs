//! A real HTTP backend (HTTP/1.1 and HTTP/2) that records what it sees.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = BoxBody<Bytes, Infallible>;

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// What the backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
}

/// A running backend named `name`.
///
/// Paths: `/upload` counts the request body; `/download?bytes=N` streams N
/// bytes; `/trailers` echoes a request trailer as a response trailer with
/// `grpc-status: 0`; `/hang` never answers; `/ws` is a WebSocket echo;
/// `/hop-by-hop` answers with hop-by-hop headers the proxy must strip;
/// `/status?code=N` answers with status N; `/gate` answers once the test
/// opens the gate; `/stream` sends a first
/// chunk at once and the last when the gate opens;
/// anything else answers its name.
pub struct TestBackend {
    pub name: &'static str,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
    gate: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    pub async fn start(name: &'static str) -> Self {
        Self::start_on(name, TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    /// A backend on `listener` (a refusing port brought back, say).
    pub async fn start_on(name: &'static str, listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let (recorded, counter, opened) = (seen.clone(), accepted.clone(), gate.clone());
        let task = tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let (recorded, opened) = (recorded.clone(), opened.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    let (recorded, opened) = (recorded.clone(), opened.clone());
                    async move { Ok::<_, Infallible>(handle(name, request, &recorded, &opened).await) }
                });
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                tokio::spawn(connection);
            }
        });
        Self {
            name,
            addr,
            seen,
            accepted,
            gate,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Lets every request waiting at `/gate` or in `/stream` finish.
    pub fn open_gate(&self) {
        self.gate.notify_waiters();
    }

    /// Requests seen on `path` so far.
    pub fn seen_on(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.uri.ends_with(path)).count()
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    name: &'static str,
    mut request: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
    gate: &Arc<Notify>,
) -> Response<Body> {
    // Registered before the request is recorded, so a test that saw the
    // request can open the gate without missing this waiter.
    let gate_opened = gate.clone().notified_owned();
    seen.lock().unwrap().push(Seen {
        method: request.method().clone(),
        uri: request.uri().to_string(),
        version: request.version(),
        headers: request.headers().clone(),
    });
    let path = request.uri().path().to_owned();
    let mut response = match path.as_str() {
        "/upload" => {
            let mut total = 0u64;
            let mut body = request.into_body();
            while let Some(frame) = body.frame().await {
                // A body the proxy cut (a limit, a slow client) ends early.
                let Ok(frame) = frame else {
                    return full(format!("incomplete after {total}"));
                };
                if let Ok(data) = frame.into_data() {
                    total += data.len() as u64;
                }
            }
            full(format!("received {total}"))
        }
        "/download" => {
            let bytes: usize = query_value(request.uri().query(), "bytes").unwrap_or(0);
            let chunks = bytes / CHUNK.len();
            let rest = bytes % CHUNK.len();
            let frames = (0..chunks)
                .map(|_| Bytes::from_static(&CHUNK))
                .chain((rest > 0).then(|| Bytes::from_static(&CHUNK[..rest])))
                .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                frames,
            ))))
        }
        "/trailers" => {
            let collected = request.into_body().collect().await.unwrap();
            let echoed = collected
                .trailers()
                .and_then(|t| t.get("x-client-trailer").cloned())
                .unwrap_or_else(|| HeaderValue::from_static("none"));
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("x-echo-trailer", echoed);
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"ok"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut response = Response::new(BodyExt::boxed(StreamBody::new(
                futures_util::stream::iter(frames),
            )));
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            response
        }
        "/hang" => std::future::pending().await,
        "/status" => {
            let code: u16 = query_value(request.uri().query(), "code").unwrap_or(200);
            let mut response = full(name.to_owned());
            *response.status_mut() = StatusCode::from_u16(code).unwrap();
            response
        }
        "/gate" => {
            gate_opened.await;
            full(name.to_owned())
        }
        "/stream" => {
            // Headers and a first chunk now, the rest when the gate opens.
            let first = futures_util::stream::once(async {
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first;")))
            });
            let rest = futures_util::stream::once(async move {
                gate_opened.await;
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"last")))
            });
            Response::new(BodyExt::boxed(StreamBody::new(first.chain(rest))))
        }
        "/hop-by-hop" => {
            let mut response = full(name.to_owned());
            let headers = response.headers_mut();
            headers.insert("connection", HeaderValue::from_static("x-internal"));
            headers.insert("x-internal", HeaderValue::from_static("secret"));
            headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            headers.insert("x-public", HeaderValue::from_static("yes"));
            response
        }
        "/ws" => websocket(&mut request),
        _ => full(name.to_owned()),
    };
    response
        .headers_mut()
        .insert("x-backend", HeaderValue::from_static(name));
    response
}

fn websocket(request: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        let mut response = full("not a websocket request".to_owned());
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let upgraded = on_upgrade.await.unwrap();
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
            if socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("upgrade", HeaderValue::from_static("websocket"));
    headers.insert("connection", HeaderValue::from_static("upgrade"));
    headers.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).unwrap(),
    );
    response
}

fn full(text: String) -> Response<Body> {
    Response::new(BodyExt::boxed(Full::new(Bytes::from(text))))
}

fn query_value<T: std::str::FromStr>(query: Option<&str>, name: &str) -> Option<T> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

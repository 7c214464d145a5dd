//! Real HTTP clients: HTTP/1.1 keep-alive and HTTP/2 prior knowledge.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

pub type Body = BoxBody<Bytes, Infallible>;

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The backend that served (`x-switchyard-backend`), or `-`.
    pub fn backend(&self) -> String {
        self.headers
            .get("x-switchyard-backend")
            .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned())
    }
}

/// One connection to the proxy.
pub enum Client {
    Http1(http1::SendRequest<Body>, SocketAddr),
    Http2(http2::SendRequest<Body>, SocketAddr),
}

impl Client {
    pub async fn http1(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection.with_upgrades());
        Self::Http1(sender, addr)
    }

    pub async fn http2(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Self::Http2(sender, addr)
    }

    /// `GET path` with extra headers.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers, BodyExt::boxed(Empty::new()))
            .await
    }

    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Reply {
        let response = self.request(method, path, headers, body).await;
        let status = response.status();
        let headers = response.headers().clone();
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        Reply {
            status,
            headers,
            body: collected.to_bytes(),
            trailers,
        }
    }

    /// Sends and returns the response with its body unread.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> http::Response<hyper::body::Incoming> {
        let builder = match self {
            Self::Http1(_, addr) => Request::builder()
                .uri(path)
                .header("host", format!("app.test:{}", addr.port())),
            Self::Http2(_, addr) => {
                Request::builder().uri(format!("http://app.test:{}{path}", addr.port()))
            }
        };
        let mut builder = builder.method(method);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(body).unwrap();
        match self {
            Self::Http1(sender, _) => {
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
            Self::Http2(sender, _) => {
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
        }
    }
}

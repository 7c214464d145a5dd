//! The built-in demo: two tiny backends (blue and green) and a table that
//! splits between them, so `switchyard-proxy demo` shows the product on a
//! fresh clone with nothing else installed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Serves a demo backend named `name` on `listener` forever: it answers
/// every request with its name, so a client sees which version served it.
pub async fn serve_backend(listener: TcpListener, name: &'static str) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = service_fn(move |request: Request<Incoming>| async move {
            let body = format!(
                "hello from {name} (you asked for {})\n",
                request.uri().path()
            );
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert("x-demo-backend", http::HeaderValue::from_static(name));
            Ok::<_, Infallible>(response)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(connection);
    }
}

/// The demo table: `x-canary: always` goes to green; everyone else is split
/// 90/10, sticky by `x-user-id` or a `sy-cohort` cookie the proxy assigns.
pub fn table(blue: SocketAddr, green: SocketAddr) -> String {
    format!(
        r#"backends:
  blue:  {{ endpoints: ["{blue}"] }}
  green: {{ endpoints: ["{green}"] }}
routes:
  - name: demo
    rules:
      - matches: [{{ headers: [{{ name: x-canary, value: always }}] }}]
        backend: green
      - split:
          weights: {{ blue: 900000, green: 100000 }}
          cohort:
            from: "header:x-user-id"
            fallback: "cookie:sy-cohort"
            assign_cookie: {{ name: sy-cohort }}
"#
    )
}

/// What to try, printed by the demo.
pub fn instructions(proxy: SocketAddr, admin: SocketAddr) -> String {
    format!(
        r#"Switchyard demo: proxy on http://{proxy}, admin on http://{admin}
Two demo backends (blue, green); the table splits 90/10 with a header override.

  # the split: about 9 in 10 say blue
  for i in $(seq 20); do curl -s http://{proxy}/; done | sort | uniq -c
  # the header override: always green
  curl -s -H 'x-canary: always' http://{proxy}/
  # cohort stickiness: the same user always gets the same version
  for i in $(seq 5); do curl -s -H 'x-user-id: alice' http://{proxy}/; done
  # a key-less client gets a cohort cookie; replay it to stay put
  curl -si http://{proxy}/ | grep -i -e set-cookie -e hello
  # which backend served (response header), and the table in force
  curl -si http://{proxy}/ | grep -i x-switchyard-backend
  curl -s http://{admin}/config?format=yaml

Ctrl-C stops it.
"#
    )
}

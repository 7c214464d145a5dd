//! Two fast backends for the bench, in this process on their own thread.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The addresses of the running backends.
pub(crate) struct Pair {
    pub(crate) blue: SocketAddr,
    pub(crate) green: SocketAddr,
}

/// Starts blue and green on one runtime thread (inheriting this process's
/// CPU affinity); they answer every request with a 2-byte body.
pub(crate) fn start_pair() -> anyhow::Result<Pair> {
    let blue = std::net::TcpListener::bind("127.0.0.1:0")?;
    let green = std::net::TcpListener::bind("127.0.0.1:0")?;
    let pair = Pair {
        blue: blue.local_addr()?,
        green: green.local_addr()?,
    };
    blue.set_nonblocking(true)?;
    green.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let Ok(runtime) = runtime else { return };
        runtime.block_on(async move {
            let (Ok(blue), Ok(green)) = (
                tokio::net::TcpListener::from_std(blue),
                tokio::net::TcpListener::from_std(green),
            ) else {
                return;
            };
            tokio::spawn(serve(blue));
            serve(green).await;
        });
    });
    Ok(pair)
}

async fn serve(listener: tokio::net::TcpListener) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service_fn(|_request| async {
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(connection);
    }
}

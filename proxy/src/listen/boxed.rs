//! A service whose response futures are boxed, for HTTP/2 connections.
//!
//! hyper runs each HTTP/2 stream as a task of its own, and the stream's
//! future (the proxy's request future inside) is moved on its way into that
//! task: into hyper's stream future, into the spawn call, into the task's
//! allocation. The proxy's request future was 4.4 KB when this was
//! measured (2.75 KB since the upstream request passes boxed), and those
//! moves cost about 4,300 instructions an h2c request; boxed, it is moved once
//! and the stream future carries a pointer. Measured on h2c (`h2load -c16
//! -m10`, one worker): 61,237 to 56,896 instructions a request (callgrind,
//! -7.1 %), CPU time 14.83 to 14.03 us (-5.4 %, medians of three
//! interleaved runs). HTTP/1.1 connections keep their request future in
//! one place for the connection's life (hyper's dispatcher), so they are
//! not wrapped: boxing the same future there measured +1.2 % instructions
//! and no CPU change.

use std::pin::Pin;

use hyper::service::Service;

/// `S`, with each response future in a box.
#[derive(Debug, Clone)]
pub(super) struct BoxedFutures<S>(pub(super) S);

impl<S, R> Service<R> for BoxedFutures<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<S::Future>>;

    fn call(&self, request: R) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

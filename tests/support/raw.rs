//! Raw HTTP/1.1 over a socket, for tests that must see exactly what a
//! client would: the status line, the head and the body as sent.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DEADLINE;

/// One response read off a raw connection.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Reads one response (headers, then a `Content-Length` body), or `None`
/// when the connection closes first. It never reads past the response, so
/// pipelined answers on one connection are read one by one: the head is read
/// a byte at a time (responses here are small) and the body exactly.
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Raw> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(DEADLINE, stream.read_u8())
            .await
            .expect("an answer within the deadline")
            .ok()?;
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut body))
        .await
        .expect("the body within the deadline")
        .ok()?;
    let body = String::from_utf8_lossy(&body).into_owned();
    Some(Raw { status, head, body })
}

/// Sends `bytes` on a new connection and reads the answer.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Raw> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_response(&mut stream).await
}

//! Table swaps during a run: POST a new table to the proxy's admin API every
//! 10 ms, alternating two tables that differ in their weights.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The bearer token the bench gives the proxy's admin API.
pub(crate) const TOKEN: &str = "switchyard-load-bench";

/// A running swapper; `stop` returns how many swaps succeeded and failed.
pub(crate) struct Swapper {
    stop: Arc<AtomicBool>,
    succeeded: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl Swapper {
    pub(crate) fn start(admin: String, tables: [String; 2], every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (succeeded, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (flag, ok, bad) = (stop.clone(), succeeded.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            // One keep-alive connection, so the swapper itself costs the
            // shared load core as little as possible.
            let mut connection: Option<(TcpStream, BufReader<TcpStream>)> = None;
            let mut which = 0;
            while !flag.load(Ordering::Relaxed) {
                which = 1 - which;
                if post_table(&mut connection, &admin, &tables[which]) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.fetch_add(1, Ordering::Relaxed);
                    connection = None;
                }
                std::thread::sleep(every);
            }
        });
        Self {
            stop,
            succeeded,
            failed,
            thread,
        }
    }

    pub(crate) fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn post_table(
    connection: &mut Option<(TcpStream, BufReader<TcpStream>)>,
    admin: &str,
    table: &str,
) -> bool {
    if connection.is_none() {
        let Ok(stream) = TcpStream::connect(admin) else {
            return false;
        };
        let Ok(reader) = stream.try_clone().map(BufReader::new) else {
            return false;
        };
        *connection = Some((stream, reader));
    }
    let Some((stream, reader)) = connection.as_mut() else {
        return false;
    };
    let request = format!(
        "POST /table HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\n\r\n{table}",
        table.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    // Status line, headers, then a content-length body.
    let mut status = String::new();
    if reader.read_line(&mut status).unwrap_or(0) == 0 {
        return false;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).is_ok() && status.starts_with("HTTP/1.1 200")
}

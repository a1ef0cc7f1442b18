//! A TCP relay in front of a real server that can play an outage: while down, every request
//! gets `503 Service Unavailable` (as a load balancer answers when the server behind it is
//! gone); while up, the bytes pass through untouched. Counts what it refused.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub struct Outage {
    pub address: String,
    down: AtomicBool,
    refused: AtomicUsize,
}

impl Outage {
    /// Relays `127.0.0.1:PORT` to `upstream` (`host:port`), down from the start.
    pub fn start(upstream: &str) -> Arc<Outage> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let outage = Arc::new(Outage {
            address: format!("http://{}", listener.local_addr().unwrap()),
            down: AtomicBool::new(true),
            refused: AtomicUsize::new(0),
        });
        let relay = outage.clone();
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let relay = relay.clone();
                let upstream = upstream.clone();
                std::thread::spawn(move || relay.serve(client, &upstream));
            }
        });
        outage
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Requests answered 503 so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    fn serve(&self, mut client: TcpStream, upstream: &str) {
        if self.down.load(Ordering::SeqCst) {
            // Read the request head, answer, close: the client sees a whole HTTP reply.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            self.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let Ok(server) = TcpStream::connect(upstream) else {
            return;
        };
        let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut s2);
            let _ = s2.shutdown(Shutdown::Write);
        });
        let (mut s1, mut c1) = (server, client);
        let _ = std::io::copy(&mut s1, &mut c1);
        let _ = c1.shutdown(Shutdown::Write);
        let _ = up.join();
    }
}

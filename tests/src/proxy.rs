//! A TCP proxy for network fault tests: it forwards 127.0.0.1:PORT to a target address and can
//! be switched, while connections are open, to drop or stall them.
//!
//! Plain std threads: one accepts, two per connection pump bytes. A pump checks the mode
//! between reading a chunk and writing it, so a switch takes effect on the very next chunk.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does with connections, new and open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Pass,
    /// Accept and close new connections at once; close the open ones.
    Drop,
    /// Accept and hold connections without forwarding a byte, new and open ones alike.
    Stall,
}

#[derive(Debug, Default)]
struct Shared {
    mode: AtomicU8,
    stopping: AtomicBool,
    /// Bytes forwarded from clients to the target.
    upstream_bytes: AtomicU64,
    accepted: AtomicU64,
    /// Both sockets of every open connection, so that `Drop` can close them.
    open: Mutex<HashMap<u64, [TcpStream; 2]>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Pass,
            1 => Mode::Drop,
            _ => Mode::Stall,
        }
    }

    fn close_all(&self) {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in open.values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A running proxy; it stops and closes every connection when dropped.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `target`, starting in `Pass`.
    pub fn start(target: &str) -> Proxy {
        let target: SocketAddr = target.parse().expect("target is an ip:port");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, target, &shared))
        };
        Proxy {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`, to put where the collector's address would go.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        if mode == Mode::Drop {
            self.shared.close_all();
        }
    }

    /// Bytes forwarded from clients to the target so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.shared.upstream_bytes.load(Ordering::SeqCst)
    }

    /// Connections accepted so far, in any mode.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.close_all();
        // Wake the acceptor, which then sees `stopping`.
        let _ = TcpStream::connect(self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    for (id, client) in (0u64..).zip(listener.incoming()) {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(shared);
        std::thread::spawn(move || connection(id, client, target, &shared));
    }
}

/// One client connection: held while the proxy stalls, closed if it drops, else forwarded.
fn connection(id: u64, client: TcpStream, target: SocketAddr, shared: &Arc<Shared>) {
    wait_out_stall(shared);
    if shared.mode() == Mode::Drop || shared.stopping.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let (Ok(client_in), Ok(server_in), Ok(client_kept), Ok(server_kept)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    shared
        .open
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, [client_kept, server_kept]);
    let up = {
        let shared = Arc::clone(shared);
        std::thread::spawn(move || pump(client_in, server, &shared, true))
    };
    pump(server_in, client, shared, false);
    let _ = up.join();
    shared
        .open
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
}

fn wait_out_stall(shared: &Shared) {
    while shared.mode() == Mode::Stall && !shared.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Copies `from` to `to` chunk by chunk, obeying the mode before every write. The end of
/// `from` is passed on as a half close; a drop or an error closes both sockets. While the
/// proxy stalls, nothing is passed on, not even the end.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, upstream: bool) {
    let mut buffer = [0u8; 16 * 1024];
    let clean_end = loop {
        let read = match from.read(&mut buffer) {
            Ok(0) => break true,
            Err(_) => break false,
            Ok(read) => read,
        };
        wait_out_stall(shared);
        if shared.mode() == Mode::Drop || shared.stopping.load(Ordering::SeqCst) {
            break false;
        }
        if to.write_all(&buffer[..read]).is_err() {
            break false;
        }
        if upstream {
            shared
                .upstream_bytes
                .fetch_add(read as u64, Ordering::SeqCst);
        }
    };
    wait_out_stall(shared);
    if clean_end && shared.mode() == Mode::Pass {
        let _ = to.shutdown(Shutdown::Write);
    } else {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

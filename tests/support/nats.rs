//! Real `nats-server` processes with JetStream on, on 127.0.0.1 ports, their data in a folder the
//! test owns: one server, or a cluster of three. Shared by path with the benches.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::Running;

/// Debian's `nats-server` (in /usr/sbin, which a non-root PATH may lack). A missing server is a
/// failure that says how to install it, never a skipped test.
pub fn nats_server_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "nats-server is not installed: run `.ci/test --setup-only` (Debian package nats-server)"
        )
    })
}

/// `n` distinct free ports: all bound at once, then released, so that none is handed out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One `nats-server`: its client port, monitoring port, and how to start it again as it was.
pub struct NatsServer {
    pub port: u16,
    pub monitor: u16,
    args: Vec<String>,
    running: Option<Running>,
}

impl NatsServer {
    /// A single server with JetStream, storing under `dir`.
    pub fn single(dir: &Path) -> NatsServer {
        let ports = free_ports(2);
        let (port, monitor) = (ports[0], ports[1]);
        let store = dir.join("nats");
        let args = vec![
            "-js".into(),
            "-sd".into(),
            store.display().to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            monitor.to_string(),
        ];
        NatsServer::start_with(port, monitor, args)
    }

    /// Three servers clustered, each with JetStream, storing under `dir/nN`.
    pub fn cluster(dir: &Path) -> Vec<NatsServer> {
        let ports = free_ports(9);
        let routes = &ports[6..9];
        let mut servers = Vec::new();
        for n in 0..3 {
            let (port, monitor) = (ports[2 * n], ports[2 * n + 1]);
            let others: Vec<String> = routes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != n)
                .map(|(_, p)| format!("\"nats://127.0.0.1:{p}\""))
                .collect();
            let config = format!(
                "server_name: n{n}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
                 jetstream {{ store_dir: {:?} }}\n\
                 cluster {{ name: flagpost\n listen: \"127.0.0.1:{}\"\n routes: [{}] }}\n",
                dir.join(format!("n{n}")).display().to_string(),
                routes[n],
                others.join(", ")
            );
            let path = dir.join(format!("n{n}.conf"));
            std::fs::write(&path, config).unwrap();
            let args = vec!["-c".into(), path.display().to_string()];
            servers.push(NatsServer::start_with(port, monitor, args));
        }
        servers
    }

    fn start_with(port: u16, monitor: u16, args: Vec<String>) -> NatsServer {
        let mut server = NatsServer {
            port,
            monitor,
            args,
            running: None,
        };
        server.start();
        server
    }

    /// Starts the server (again), with the same ports and folder.
    pub fn start(&mut self) {
        let quiet = std::env::var_os("TEST_NATS_LOG").is_none();
        let mut command = Command::new(nats_server_binary());
        self.running = Some(Running::spawn(command.args(&self.args), quiet));
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// kill -9, and wait until it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.kill9();
        }
    }

    /// Waits until the server says its JetStream is up (`/healthz` answers 200), or panics after a
    /// generous deadline.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let address = format!("127.0.0.1:{}", self.monitor);
        loop {
            if healthz_ok(&address).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server on port {} never became healthy",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `GET /healthz` over a plain socket: 200 once JetStream is current.
async fn healthz_ok(address: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut socket) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    let request = format!("GET /healthz HTTP/1.0\r\nHost: {address}\r\n\r\n");
    if socket.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200")
}

//! Real processes on 127.0.0.1 for the tests and benches of both programs: a free port, a child
//! process killed with its handle, a stream of requests that ends in kill -9, and the receiver
//! binary built on demand. Shared by path with the receiver's tests and benches.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A free port on 127.0.0.1 for a process that binds its own: bound once to find it, then
/// released (so, until someone binds it, connections to it are refused).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

pub fn free_port() -> u16 {
    free_addr().port()
}

/// A child process, killed (SIGKILL) when dropped so that a failing test leaves nothing behind.
pub struct Running {
    pub child: Child,
}

impl Running {
    /// Starts `binary serve --config <config>` with `RUST_LOG` set to `log`; stdout is dropped
    /// and stderr inherited unless `quiet`.
    pub fn serve(binary: &Path, config: &Path, log: &str, quiet: bool) -> Running {
        let mut command = Command::new(binary);
        command.args(["serve", "--config"]).arg(config);
        Running::spawn(command.env("RUST_LOG", log), quiet)
    }

    /// Starts `command` with stdout dropped and stderr inherited unless `quiet`.
    pub fn spawn(command: &mut Command, quiet: bool) -> Running {
        let stderr = if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", command.get_program()));
        Running { child }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// kill -9, and wait until it is gone.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL"); // SIGKILL on unix
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        self.child.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Streams requests into a real process from `clients` concurrent clients until at least `target`
/// are acknowledged in `acknowledged`, then kills the process with SIGKILL (`kill`) while they
/// keep sending, and waits for every client to stop. `send(client, n)` makes client `client`'s
/// `n`th request: `Some` with what was acknowledged, `None` once the process is gone, which ends
/// that client's stream. The generous deadline only turns a hang into a failure with a message.
pub async fn stream_until_killed<T, F, Fut>(
    clients: usize,
    target: usize,
    acknowledged: &Arc<Mutex<Vec<T>>>,
    send: F,
    kill: impl FnOnce(),
) where
    T: Send + 'static,
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<T>> + Send,
{
    let mut streams = Vec::new();
    for client in 0..clients {
        let (acknowledged, send) = (acknowledged.clone(), send.clone());
        streams.push(tokio::spawn(async move {
            for n in 0u64.. {
                match send(client, n).await {
                    Some(ack) => acknowledged.lock().unwrap().push(ack),
                    None => return,
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting until {target} requests are acknowledged; {} are",
            acknowledged.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill();
    for stream in streams {
        tokio::time::timeout(Duration::from_secs(60), stream)
            .await
            .expect("the clients stop once the process is gone")
            .unwrap();
    }
}

/// The receiver binary beside `flagpost` (the one `cargo test --workspace` builds into the same
/// folder), or, when a test binary runs alone, built on demand by [`build_receiver`].
pub fn receiver_beside(flagpost: &Path) -> PathBuf {
    let beside = flagpost.with_file_name("flagpost-receiver");
    if beside.exists() {
        return beside;
    }
    build_receiver(false)
}

/// The `flagpost-receiver` binary of the current sources, built (or found up to date) by cargo in
/// a target folder of its own, so as not to wait on the build lock of the cargo run that started
/// this test or bench.
pub fn build_receiver(release: bool) -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/end-to-end");
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args([
        "build",
        "-p",
        "flagpost-receiver",
        "--bin",
        "flagpost-receiver",
    ]);
    if release {
        cargo.arg("--release");
    }
    let status = cargo
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building flagpost-receiver failed");
    target
        .join(if release { "release" } else { "debug" })
        .join("flagpost-receiver")
}

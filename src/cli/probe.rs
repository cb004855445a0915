//! `flagpost probe URL`: exits 0 when `GET URL` answers 200, for a container's `HEALTHCHECK`
//! (the runtime image has no shell and no curl; this binary is in it). Plain HTTP on the local
//! address only: a health check never leaves the container.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};

pub fn probe(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .context("probe takes an http:// URL")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut addrs = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .with_context(|| format!("the address {authority}"))?;
    let addr = addrs.next().context("no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).context("reading the answer")?;
    match &head {
        [
            b'H',
            b'T',
            b'T',
            b'P',
            b'/',
            _,
            _,
            _,
            b' ',
            b'2',
            b'0',
            b'0',
        ] => Ok(()),
        _ => bail!("{url} answered {}", String::from_utf8_lossy(&head)),
    }
}

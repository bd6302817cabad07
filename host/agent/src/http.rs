//! The one HTTP/1.1 exchange the agent needs: a GET with headers, over plain TCP, and the
//! response read whole (Content-Length, chunked, or to the close).

use std::io::{self, BufReader, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Overlays are small; a response larger than this is refused.
const MAX_BODY: usize = 256 << 20;

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// `GET target` from `server` (`host:port`), waiting at most `timeout` for each read; from a
/// source port below 1024 when `privileged` (a server in Warewulf's secure mode asks for it).
pub fn get(
    server: &str,
    target: &str,
    headers: &[(&str, String)],
    timeout: Duration,
    privileged: bool,
) -> io::Result<Response> {
    exchange("GET", server, target, headers, b"", timeout, privileged)
}

/// `POST target` to `server` with a plain-text `body`, waiting at most `timeout` for each
/// read.
pub fn post(server: &str, target: &str, body: &str, timeout: Duration) -> io::Result<Response> {
    let headers = [("Content-Type", "text/plain; charset=utf-8".to_owned())];
    exchange(
        "POST",
        server,
        target,
        &headers,
        body.as_bytes(),
        timeout,
        false,
    )
}

/// One request and its response.
fn exchange(
    method: &str,
    server: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
    privileged: bool,
) -> io::Result<Response> {
    let mut last = None;
    let mut stream = None;
    for addr in server.to_socket_addrs()? {
        let connected = if privileged {
            connect_privileged(addr)
        } else {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        };
        match connected {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = stream.ok_or_else(|| {
        last.unwrap_or_else(|| invalid(format!("{server} resolves to no address")))
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\nUser-Agent: wulf-agent/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    read_response(BufReader::new(stream))
}

/// A connection from the first free source port of 600-1023 (root only).
fn connect_privileged(addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free port below 1024");
    for port in 600..1024u16 {
        let fd = rustix::net::socket(family, SocketType::STREAM, None)?;
        let local = std::net::SocketAddr::new(
            if addr.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            },
            port,
        );
        match rustix::net::bind(&fd, &local) {
            Ok(()) => {}
            Err(rustix::io::Errno::ADDRINUSE) => continue,
            Err(e) => return Err(e.into()),
        }
        // connect(2) gives up after the send timeout.
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(Duration::from_secs(10)))?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => {
                sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, None)?;
                return Ok(TcpStream::from(fd));
            }
            // This port's last connection to the server is still in TIME_WAIT.
            Err(rustix::io::Errno::ADDRNOTAVAIL) => last = rustix::io::Errno::ADDRNOTAVAIL.into(),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last)
}

fn read_response(mut reader: impl io::BufRead) -> io::Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(invalid(
            "the server closed the connection without answering",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("not an HTTP status line: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("the connection closed in the headers"));
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed
            .split_once(':')
            .ok_or_else(|| invalid(format!("a malformed header: {trimmed:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if status == 304 || status == 204 {
        return Ok(response);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        response.body = read_chunked(&mut reader)?;
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("Content-Length {length:?}")))?;
        if length > MAX_BODY {
            return Err(invalid(format!("a {length}-byte response is too large")));
        }
        response.body = vec![0; length];
        reader.read_exact(&mut response.body)?;
    } else {
        reader
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut response.body)?;
        if response.body.len() > MAX_BODY {
            return Err(invalid("the response is too large"));
        }
    }
    Ok(response)
}

fn read_chunked(reader: &mut impl io::BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("a bad chunk size {size:?}")))?;
        if size == 0 {
            return Ok(body);
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(invalid("the response is too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sized_chunked_and_empty_responses() {
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"ab\"\r\n\r\nhello";
        let r = read_response(&sized[..]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(r.header("etag"), Some("\"ab\""));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(read_response(&chunked[..]).unwrap().body, b"abcde");
        let not_modified = b"HTTP/1.1 304 Not Modified\r\nETag: \"ab\"\r\n\r\n";
        assert_eq!(read_response(&not_modified[..]).unwrap().status, 304);
        assert!(read_response(&b"SSH-2.0-OpenSSH\r\n"[..]).is_err());
    }
}

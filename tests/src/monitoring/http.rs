//! A minimal HTTP GET client for servers on loopback (Prometheus' API), so the tests need no HTTP crate.
//!
//! It speaks HTTP/1.0: the server then closes the connection after the body and never uses chunked transfer
//! encoding, so the body is simply everything after the header.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Status code and body of a response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path_and_query` from `addr`, with `timeout` for connecting and for each read and write.
pub fn get(addr: SocketAddr, path_and_query: &str, timeout: Duration) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {text:.200}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| bad("no end of header"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
    Ok(Response { status, body: body.to_owned() })
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters stay as they are).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn encodes_promql() {
        assert_eq!(encode(r#"up{job="a b"}[1m]"#), "up%7Bjob%3D%22a%20b%22%7D%5B1m%5D");
        assert_eq!(encode("sum-by_x.y~"), "sum-by_x.y~");
    }
}

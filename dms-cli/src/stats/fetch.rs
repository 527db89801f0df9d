//! A minimal HTTP/1.1 GET over a tokio `TcpStream` (`Connection: close`), enough to
//! scrape a Prometheus endpoint: bounded in time and size, and total over whatever the
//! other side sends (`Content-Length`, chunked, or until close).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response read (head and body).
pub(crate) const MAX_RESPONSE: usize = 4 << 20;
/// Longest response head (status line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The address is not host:port or http://host:port[/path].
    #[error("bad address {0:?}: expected HOST:PORT or http://HOST:PORT[/PATH]")]
    BadAddress(String),
    /// No connection could be made.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The connection failed while talking.
    #[error("connection failed: {0}")]
    Io(std::io::Error),
    /// The exchange did not end in time.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The other side closed without answering anything.
    #[error("the connection was closed without an answer")]
    Empty,
    /// The answer is not an HTTP/1.x response.
    #[error("not an HTTP server: the answer starts with {0:?}")]
    NotHttp(String),
    /// The response head is malformed.
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
    /// The status is not 200.
    #[error("HTTP status {0}")]
    Status(String),
    /// The response is over the size cap.
    #[error("the response is over {} MiB", MAX_RESPONSE >> 20)]
    TooLarge,
    /// The body is not UTF-8.
    #[error("the body is not UTF-8 text")]
    NotText,
}

/// What to GET: `host:port` and a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) authority: String,
    pub(crate) path: String,
}

impl Target {
    /// Parses `host:port`, `http://host:port` or `http://host:port/path`.
    pub(crate) fn parse(text: &str) -> Result<Self, FetchError> {
        let bad = || FetchError::BadAddress(text.chars().take(200).collect());
        let rest = text.strip_prefix("http://").unwrap_or(text);
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/metrics"),
        };
        let path = if path == "/" { "/metrics" } else { path };
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        let clean = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if !port_ok || !clean(authority) || !clean(path) || authority.contains('@') {
            return Err(bad());
        }
        Ok(Self {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// GETs `target` and returns its body as text, all within `timeout`.
pub(crate) async fn get(target: &Target, timeout: Duration) -> Result<String, FetchError> {
    tokio::time::timeout(timeout, exchange(target))
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

async fn exchange(target: &Target) -> Result<String, FetchError> {
    let mut stream = TcpStream::connect(target.authority.as_str())
        .await
        .map_err(FetchError::Connect)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nUser-Agent: dms-stats\r\n\
         Connection: close\r\n\r\n",
        target.path, target.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(FetchError::Io)?;
    // Read to the close (or the cap): with `Connection: close` the server ends it.
    let mut response = Vec::new();
    let cap = u64::try_from(MAX_RESPONSE)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut limited = (&mut stream).take(cap);
    let read = limited.read_to_end(&mut response).await;
    if let Err(error) = read {
        // A reset after a complete answer is still an answer; decide below.
        if response.is_empty() {
            return Err(FetchError::Io(error));
        }
    }
    if response.len() > MAX_RESPONSE {
        return Err(FetchError::TooLarge);
    }
    let body = decode(&response)?;
    String::from_utf8(body).map_err(|_| FetchError::NotText)
}

/// Splits a whole response into head and body, checks the status and decodes the body.
pub(crate) fn decode(response: &[u8]) -> Result<Vec<u8>, FetchError> {
    if response.is_empty() {
        return Err(FetchError::Empty);
    }
    if !response.starts_with(b"HTTP/1.") {
        let start: String = String::from_utf8_lossy(response.get(..32).unwrap_or(response))
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        return Err(FetchError::NotHttp(start));
    }
    let head_end = find(response, b"\r\n\r\n").ok_or(if response.len() > MAX_HEAD {
        FetchError::Malformed("no end of the head within 16 KiB")
    } else {
        FetchError::Malformed("the response ends inside its head")
    })?;
    if head_end > MAX_HEAD {
        return Err(FetchError::Malformed("head over 16 KiB"));
    }
    let head = std::str::from_utf8(response.get(..head_end).unwrap_or_default())
        .map_err(|_| FetchError::Malformed("head not UTF-8"))?;
    let body = response.get(head_end + 4..).unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_once(' ')
        .map(|(_, status)| status.trim())
        .ok_or(FetchError::Malformed("no status"))?;
    if status.get(..3) != Some("200") {
        return Err(FetchError::Status(status.chars().take(80).collect()));
    }
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(FetchError::Malformed("a header line without ':'"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse::<usize>()
                .map_err(|_| FetchError::Malformed("bad Content-Length"))?;
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    if chunked {
        return dechunk(body);
    }
    match content_length {
        Some(length) => body
            .get(..length)
            .map(<[u8]>::to_vec)
            .ok_or(FetchError::Malformed(
                "the body is shorter than its Content-Length",
            )),
        None => Ok(body.to_vec()),
    }
}

/// Decodes a chunked body (extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or(FetchError::Malformed("truncated chunk size"))?;
        let size_line = std::str::from_utf8(rest.get(..line_end).unwrap_or_default())
            .map_err(|_| FetchError::Malformed("bad chunk size"))?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| FetchError::Malformed("bad chunk size"))?;
        rest = rest.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest
            .get(..size)
            .ok_or(FetchError::Malformed("truncated chunk"))?;
        body.extend_from_slice(chunk);
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or(FetchError::Malformed("chunk not followed by CRLF"))?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("127.0.0.1:9100").unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:9100/metrics");
        let t = Target::parse("http://localhost:80/x/y").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("localhost:80", "/x/y")
        );
        assert_eq!(Target::parse("http://h:1/").unwrap().path, "/metrics");
        for bad in [
            "",
            "host",
            ":80",
            "h:99999",
            "h:1/a b",
            "u@h:1",
            "h:1\r\nX: y",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(FetchError::BadAddress(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nm 1\nextra";
        assert_eq!(decode(ok).unwrap(), b"m 1\n");
        let to_close = b"HTTP/1.0 200 OK\r\n\r\nm 1\n";
        assert_eq!(decode(to_close).unwrap(), b"m 1\n");
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;x=y\r\nm \r\n2\r\n1\n\r\n0\r\n\r\n";
        assert_eq!(decode(chunked).unwrap(), b"m 1\n");
        assert!(matches!(decode(b""), Err(FetchError::Empty)));
        assert!(matches!(
            decode(b"SSH-2.0-OpenSSH_9.6\r\n"),
            Err(FetchError::NotHttp(_))
        ));
        assert!(matches!(
            decode(b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f"),
            Err(FetchError::NotHttp(_))
        ));
        assert!(matches!(
            decode(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Err(FetchError::Status(s)) if s == "404 Not Found"
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nm 1\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
        ] {
            assert!(
                matches!(decode(bad), Err(FetchError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut huge_head = b"HTTP/1.1 200 OK\r\n".to_vec();
        huge_head.extend(std::iter::repeat_n(b'a', 64 * 1024));
        assert!(matches!(decode(&huge_head), Err(FetchError::Malformed(_))));
    }
}

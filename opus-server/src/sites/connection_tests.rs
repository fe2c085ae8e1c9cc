//! Tests of the site server's connection handling over raw TCP: the header, keep-alive and idle
//! timeouts, the per-address cap, absolute-form targets and repeated Host headers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ConnectionLimits;
use super::tests::start_with;

/// Limits short enough for tests, long enough for a loaded machine to answer in time.
fn short() -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_millis(600),
        idle_timeout: Duration::from_millis(600),
        keep_alive_timeout: Duration::from_millis(600),
        per_ip: 64,
    }
}

/// Reads until the server closes the connection; returns what came and when it closed. Panics
/// when the connection is still open after 10 s.
async fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Instant::now()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was still open after 10 s"),
        }
    }
}

/// Reads one response with a Content-Length body, leaving the connection open.
async fn read_response(s: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            if raw.len() >= end + 4 + len {
                return String::from_utf8_lossy(&raw[..end + 4 + len]).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Sends `text` as is and reads the whole answer of a `Connection: close` request.
async fn raw(addr: SocketAddr, text: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(text.as_bytes()).await.expect("write");
    let (got, _) = read_until_closed(&mut s).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_partial_request_head_is_closed_at_the_header_timeout_even_when_it_trickles() {
    let (addr, _s, _d) = start_with(short()).await;
    // Silent after connecting.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    let (got, closed) = read_until_closed(&mut s).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(closed - start >= Duration::from_millis(500), "too early");

    // A head sent a byte every 100 ms: the timeout counts from its first byte.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_while_sending = false;
    for byte in head {
        if s.write_all(&[*byte]).await.is_err() {
            closed_while_sending = true;
            break;
        }
        let mut one = [0u8; 1];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut one)).await {
            assert!(matches!(r, Ok(0) | Err(_)), "no answer to a partial head");
            closed_while_sending = true;
            break;
        }
    }
    assert!(closed_while_sending, "a trickled head was never cut");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_serves_again_then_closes_at_the_keep_alive_timeout() {
    let limits = ConnectionLimits {
        keep_alive_timeout: Duration::from_millis(800),
        header_timeout: Duration::from_secs(10),
        ..short()
    };
    let (addr, _s, _d) = start_with(limits).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let get = b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n";
    s.write_all(get).await.expect("write");
    assert!(read_response(&mut s).await.contains("<h1>home</h1>"));
    s.write_all(get).await.expect("write");
    assert!(read_response(&mut s).await.contains("<h1>home</h1>"));
    let idle_from = Instant::now();
    let (got, closed) = read_until_closed(&mut s).await;
    assert!(got.is_empty(), "{got:?}");
    let waited = closed - idle_from;
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(5),
        "closed after {waited:?}, not the keep-alive timeout (the header timeout is 10 s)"
    );
}

#[tokio::test]
async fn a_download_the_client_stops_reading_is_closed_at_the_idle_timeout() {
    let (addr, _s, d) = start_with(short()).await;
    // Larger than what the kernel buffers of both ends hold on loopback.
    let size = 64 << 20;
    std::fs::write(d.path().join("web/huge.bin"), vec![7u8; size]).expect("write");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut s = socket.connect(addr).await.expect("connect");
    s.write_all(b"GET /huge.bin HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        .await
        .expect("write");
    // Read the head, then stop reading until the server must have given up.
    let mut head = [0u8; 512];
    let n = s.read(&mut head).await.expect("read");
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    let stalled = Instant::now();
    let (got, _) = read_until_closed_after(&mut s, stalled + Duration::from_secs(3)).await;
    assert!(
        got.len() + n < size,
        "the whole body came through: the idle timeout never closed the connection"
    );
}

/// Waits until `at`, then reads until the server closes the connection.
async fn read_until_closed_after(s: &mut TcpStream, at: Instant) -> (Vec<u8>, Instant) {
    tokio::time::sleep_until(at).await;
    read_until_closed(s).await
}

#[tokio::test]
async fn connections_beyond_the_per_address_cap_get_503_until_one_closes() {
    let limits = ConnectionLimits {
        per_ip: 2,
        header_timeout: Duration::from_secs(30),
        ..short()
    };
    let (addr, _s, _d) = start_with(limits).await;
    let first = TcpStream::connect(addr).await.expect("connect");
    let mut second = TcpStream::connect(addr).await.expect("connect");
    // The second is counted once it has been served.
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        .await
        .expect("write");
    read_response(&mut second).await;
    let mut third = TcpStream::connect(addr).await.expect("connect");
    let (got, _) = read_until_closed(&mut third).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("too many connections"),
        "{text}"
    );
    drop(first);
    // Once the server has seen the first one close, a new connection is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = raw(
            addr,
            "GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
        if text.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(
            Instant::now() < deadline,
            "still refused 10 s after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_absolute_form_target_routes_by_its_authority_and_two_hosts_are_refused() {
    let (addr, _s, _d) = start_with(ConnectionLimits::default()).await;
    let text = raw(
        addr,
        "GET http://web.localhost:7080/ HTTP/1.1\r\nHost: nothing.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("<h1>home</h1>"),
        "{text}"
    );
    let text = raw(
        addr,
        "GET http://other.localhost/ HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert!(!text.contains("home"), "{text}");

    let text = raw(
        addr,
        "GET / HTTP/1.1\r\nHost: web.localhost\r\nHost: staging--app.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 400") && text.contains("more than one Host header"),
        "{text}"
    );
}

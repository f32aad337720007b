//! Canned HTTP answers on a local port, for tests of the commands that talk
//! to a node (`client`, `annal audit`): not a node, raw bytes in order.

use std::io::{Read, Write};

/// Serves `answers` in order, one per connection, on 127.0.0.1; returns the base URL.
pub fn serve(answers: Vec<Vec<u8>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    let addr = listener.local_addr().expect("a bound address");
    std::thread::spawn(move || {
        for answer in answers {
            let Ok((mut conn, _)) = listener.accept() else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(&answer);
        }
    });
    format!("http://{addr}")
}

/// An HTTP/1.1 answer with `status` (e.g. "200 OK"), `body` and `extra` header lines.
pub fn answer(status: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut a =
        format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n", body.len()).into_bytes();
    a.extend_from_slice(body);
    a
}

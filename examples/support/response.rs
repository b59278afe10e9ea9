//! Reading one HTTP/1.1 response, shared by the load benchmark's clients (`bench_burst`,
//! `bench_handshakes`, `bench_rate`). Included with `#[path]`: examples are single-file crates.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What the clients keep of a response.
pub struct Response {
    pub status: u16,
    /// The value of the field asked for by name, if the response had it.
    pub field: Option<String>,
}

/// Reads a response's head and its whole body: by `Content-Length`, or to the end of the
/// stream when it has none (the clients ask with `Connection: close`).
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    field: &str,
) -> io::Result<Response> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    let (response, head_len, body_len) = loop {
        read_more(stream, &mut buf, &mut chunk, "before the response head").await?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp
            .parse(&buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            let value = |name: &str| {
                resp.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
            };
            let body_len = value("content-length").and_then(|v| v.parse::<usize>().ok());
            let response = Response {
                status: resp.code.unwrap_or(0),
                field: value(field),
            };
            break (response, len, body_len);
        }
    };
    match body_len {
        Some(body_len) => {
            while buf.len() < head_len + body_len {
                read_more(stream, &mut buf, &mut chunk, "inside the body").await?;
            }
        }
        None => while stream.read(&mut chunk).await? > 0 {},
    }
    Ok(response)
}

/// Appends the next read to `buf`; the end of the stream is an error, `when` says where.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    when: &str,
) -> io::Result<()> {
    let n = stream.read(chunk).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection closed {when}"),
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

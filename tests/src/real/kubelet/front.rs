//! The node's kubelet endpoint, as kube-apiserver reaches it for `kubectl exec` and `kubectl
//! logs`: HTTPS on 127.0.0.1 (kube-apiserver does not check a kubelet's certificate when it has
//! no kubelet CA, so a self-signed one does).
//!
//! - `/exec/<namespace>/<pod>/<container>`: the request goes on to kwok, which serves the
//!   streaming protocol, with its `command` rewritten to run in the pod the path names (its
//!   network namespace, its `/tmp`, the container's environment and working directory). kwok
//!   alone cannot tell a command which pod it is for.
//! - `/containerLogs/<namespace>/<pod>/<container>`: served from the container's output file
//!   (`tailLines`, `limitBytes` and `follow` honoured).
//! - Anything else goes on to kwok unchanged.

use std::{io::SeekFrom, net::Ipv4Addr, sync::Arc, time::Duration};

use anyhow::Context as _;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// The longest request head taken.
const HEAD_LIMIT: usize = 64 * 1024;

/// Starts serving on a free port of 127.0.0.1; the port and the task.
pub(super) async fn start(
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let port = listener.local_addr()?.port();
    let acceptor = acceptor()?;
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let (shared, acceptor, stop) = (shared.clone(), acceptor.clone(), stop.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                if let Err(error) = serve(&shared, tls, &stop).await {
                    shared.say(&format!("kubelet endpoint: {error:#}"));
                }
            });
        }
    });
    Ok((port, task))
}

fn acceptor() -> anyhow::Result<TlsAcceptor> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![certified.cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der())),
        )?;
    // Exec upgrades the connection: HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A request head, parsed.
#[derive(Debug)]
struct Head {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// The head again, with `query` in place of the one received.
    fn with_query(&self, query: &str) -> Vec<u8> {
        let mut out = format!("{} {}", self.method, self.path).into_bytes();
        if !query.is_empty() {
            out.push(b'?');
            out.extend_from_slice(query.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn params(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// Reads a request head; it and whatever was read past it.
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<(Head, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(4096);
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the connection closed before a whole request head");
        buffer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(length) = request.parse(&buffer)? {
            let target = request.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let head = Head {
                method: request.method.unwrap_or("GET").to_string(),
                path: path.to_string(),
                query: query.to_string(),
                headers: request
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
            };
            return Ok((head, buffer[length..].to_vec()));
        }
        anyhow::ensure!(
            buffer.len() < HEAD_LIMIT,
            "a request head longer than {HEAD_LIMIT} bytes"
        );
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut client: S,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let segments: Vec<&str> = head.path.trim_start_matches('/').split('/').collect();
    let (logs_asked, namespace, pod, container) = match segments.as_slice() {
        // /exec/<namespace>/<pod>/<container>, or with the pod's uid before the container.
        ["exec", namespace, pod, .., container] => (false, *namespace, *pod, *container),
        ["containerLogs", namespace, pod, container] => (true, *namespace, *pod, *container),
        _ => return pass_on(shared, client, head.with_query(&head.query), rest).await,
    };
    let Some((runtime, gone)) = shared.running(namespace, pod) else {
        return answer(
            &mut client,
            404,
            &format!("pod {namespace}/{pod} does not run on this node"),
        )
        .await;
    };
    let missing = format!("pod {namespace}/{pod} has no container {container}");
    if logs_asked {
        let Some(file) = runtime.log_file(container) else {
            return answer(&mut client, 404, &missing).await;
        };
        let params = head.params();
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let options = LogOptions {
            follow: param("follow").is_some_and(|v| v == "true" || v == "1"),
            tail_lines: param("tailLines").and_then(|v| v.parse().ok()),
            limit_bytes: param("limitBytes").and_then(|v| v.parse().ok()),
        };
        return logs(&mut client, &file, &options, &gone, stop).await;
    }
    let mut command = Vec::new();
    let mut others = Vec::new();
    let mut tty = false;
    for (key, value) in head.params() {
        match key.as_str() {
            "command" => command.push(value),
            "tty" => {
                tty = value == "1" || value == "true";
                others.push((key, value));
            }
            _ => others.push((key, value)),
        }
    }
    let extra: &[(&str, &str)] = if tty { &[("TERM", "xterm")] } else { &[] };
    let Some(entered) = runtime.enter(container, extra, &command) else {
        return answer(&mut client, 404, &missing).await;
    };
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &others {
            query.append_pair(key, value);
        }
        for word in &entered {
            query.append_pair("command", word);
        }
        query.finish()
    };
    pass_on(shared, client, head.with_query(&query), rest).await
}

/// Sends `head` and `rest` on to kwok, then relays both ways until either side closes.
async fn pass_on<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut client: S,
    head: Vec<u8>,
    rest: Vec<u8>,
) -> anyhow::Result<()> {
    let mut kwok = TcpStream::connect(shared.config.kwok)
        .await
        .with_context(|| format!("connecting to kwok at {}", shared.config.kwok))?;
    kwok.write_all(&head).await?;
    kwok.write_all(&rest).await?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut kwok).await;
    Ok(())
}

async fn answer<S: AsyncWrite + Unpin>(client: &mut S, code: u16, message: &str) -> anyhow::Result<()> {
    let reason = if code == 404 { "Not Found" } else { "Error" };
    let text = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}",
        message.len()
    );
    client.write_all(text.as_bytes()).await?;
    client.shutdown().await?;
    Ok(())
}

#[derive(Debug)]
struct LogOptions {
    follow: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<u64>,
}

/// A container's output: its last `tail_lines` lines (or all), at most `limit_bytes`, then with
/// `follow` whatever it writes next, until the pod stops or the reader goes.
async fn logs<S: AsyncWrite + Unpin>(
    client: &mut S,
    file: &std::path::Path,
    options: &LogOptions,
    gone: &CancellationToken,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    client
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        .await?;
    let text = tokio::fs::read(file).await.unwrap_or_default();
    let mut start = 0;
    if let Some(tail) = options.tail_lines {
        let body = text.strip_suffix(b"\n").unwrap_or(&text);
        let breaks: Vec<usize> = body
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        start = if tail == 0 {
            text.len()
        } else if breaks.len() >= tail {
            breaks[breaks.len() - tail] + 1
        } else {
            0
        };
    }
    let mut budget = options.limit_bytes.unwrap_or(u64::MAX);
    let first = &text[start..];
    let take = first.len().min(usize::try_from(budget).unwrap_or(usize::MAX));
    client.write_all(&first[..take]).await?;
    budget -= take as u64;
    client.flush().await?;
    if !options.follow || budget == 0 {
        client.shutdown().await?;
        return Ok(());
    }
    let mut reader = tokio::fs::File::open(file).await?;
    reader.seek(SeekFrom::Start(text.len() as u64)).await?;
    loop {
        let mut chunk = vec![0u8; 16 * 1024];
        let n = reader.read(&mut chunk).await?;
        if n > 0 {
            let take = n.min(usize::try_from(budget).unwrap_or(usize::MAX));
            client.write_all(&chunk[..take]).await?;
            client.flush().await?;
            budget -= take as u64;
            if budget == 0 {
                break;
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = gone.cancelled() => break,
            _ = stop.cancelled() => break,
        }
    }
    client.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_head_is_parsed_and_written_again_with_a_new_query() {
        let request = b"POST /exec/demo/hello-0/hello?command=sh&command=-c&command=echo+hi&output=1&tty=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: SPDY/3.1\r\n\r\nextra";
        let (head, rest) = read_head(&mut &request[..]).await.unwrap();
        assert_eq!(head.path, "/exec/demo/hello-0/hello");
        assert_eq!(rest, b"extra");
        let command: Vec<String> = head
            .params()
            .into_iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(command, ["sh", "-c", "echo hi"]);
        let again = String::from_utf8(head.with_query("command=true")).unwrap();
        assert_eq!(
            again,
            "POST /exec/demo/hello-0/hello?command=true HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: SPDY/3.1\r\n\r\n"
        );
    }
}

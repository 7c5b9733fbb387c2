//! The agent-facing stdio transport, for agents that spawn their MCP servers: the agent
//! runs `warden gateway stdio … -- <server command>`, and speaks newline-delimited JSON-RPC
//! to Warden on stdin/stdout exactly as it would to the server.

use std::sync::Arc;

use serde_json::Value;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use warden_core::ClientInfo;

use crate::gateway::{EndReason, Gateway};
use crate::governor::AgentIdentity;
use crate::jsonrpc::{self, Message, Response, RpcError, code};
use crate::session::Session;

/// Serves one agent on a reader and writer until the reader ends. Returns once every
/// request in flight has been answered or abandoned and the session has been recorded as
/// ended.
pub async fn serve<R, W>(
    gw: Arc<Gateway>,
    identity: AgentIdentity,
    scope: Option<String>,
    reader: R,
    writer: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    // Answers to unreadable messages carry id null, which a `Message` cannot: they travel
    // apart as plain JSON.
    let (rejections, mut rejected) = mpsc::channel::<Value>(16);
    let writer_task = tokio::spawn(async move {
        let mut writer = writer;
        loop {
            let value = tokio::select! {
                Some(m) = rx.recv() => m.to_value(),
                Some(v) = rejected.recv() => v,
                else => break,
            };
            let mut line = value.to_string();
            line.push('\n');
            if writer.write_all(line.as_bytes()).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    });

    let mut lines = BufReader::new(reader).lines();
    let mut session: Option<Arc<Session>> = None;
    let mut tasks = tokio::task::JoinSet::new();
    let limit = gw.config.max_message_bytes;
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > limit {
            let e = RpcError::new(
                code::INVALID_REQUEST,
                format!("message larger than {limit} bytes"),
            );
            let _ = rejections
                .send(jsonrpc::error_response(&jsonrpc::Invalid {
                    id: None,
                    error: e,
                }))
                .await;
            continue;
        }
        let message = match Message::parse(line.as_bytes()) {
            Ok(m) => m,
            Err(invalid) => {
                gw.metrics.malformed.inc();
                let _ = rejections.send(jsonrpc::error_response(&invalid)).await;
                continue;
            }
        };
        match (message, &session) {
            (Message::Request(r), None) if r.method == "initialize" => {
                let answer = gw
                    .initialize(identity.clone(), scope.clone(), &r, ClientInfo::default())
                    .await;
                let result = match answer {
                    Ok((s, result)) => {
                        s.open_stream_into(tx.clone());
                        session = Some(s);
                        Ok(result)
                    }
                    Err(e) => Err(e),
                };
                let _ = tx
                    .send(Message::Response(Response { id: r.id, result }))
                    .await;
            }
            (Message::Request(r), None) => {
                let e = RpcError::new(code::INVALID_REQUEST, "send initialize first");
                let _ = tx
                    .send(Message::Response(Response {
                        id: r.id,
                        result: Err(e),
                    }))
                    .await;
            }
            (Message::Request(r), Some(s)) => {
                let (gw, s, out) = (gw.clone(), s.clone(), tx.clone());
                let id = r.id.clone();
                let handle = tasks.spawn(async move {
                    let response = gw.handle(&s, r, Some(out.clone())).await;
                    s.untrack(&response.id);
                    let _ = out.send(Message::Response(response)).await;
                });
                if let Some(s) = &session {
                    s.track(id, handle);
                }
            }
            (Message::Notification(n), Some(s)) => gw.notify(s, n).await,
            (Message::Response(r), Some(s)) => gw.respond(s, r),
            (_, None) => {}
        }
        while tasks.try_join_next().is_some() {}
    }
    // The agent closed stdin: finish what is in flight, then end the session.
    while tasks.join_next().await.is_some() {}
    if let Some(s) = session
        && gw.sessions.remove(&s.id).is_some()
    {
        gw.end(&s, EndReason::Closed).await;
    }
    drop(tx);
    drop(rejections);
    let _ = writer_task.await;
    Ok(())
}

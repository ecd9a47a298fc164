//! HTTP/1.1 to the gateway: one keep-alive connection per concurrent client task (hyper's
//! connection API, no pool to lock), reconnecting after a failure, and the four API calls.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use uuid::Uuid;

pub use faas::store::TaskStatus;

use crate::error::Error;

/// Largest response body read (a result is at most the gateway's request limit, 10 MiB by
/// default, base64-encoded); a larger one fails the request instead of exhausting memory.
const MAX_RESPONSE: usize = 64 << 20;

/// The gateway: its socket address and the Host header to send.
#[derive(Clone, Debug)]
pub struct Gateway {
    addr: SocketAddr,
    host: HeaderValue,
}

impl Gateway {
    /// Resolves `http://HOST:PORT` (a path or trailing slash is ignored; no TLS).
    pub async fn resolve(url: &str) -> Result<Arc<Self>, Error> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| Error::Usage(format!("--url must start with http://, got {url:?}")))?;
        let host = rest.split('/').next().unwrap_or_default().to_owned();
        let host_port = if host.contains(':') {
            host.clone()
        } else {
            format!("{host}:80")
        };
        let addr = tokio::net::lookup_host(&host_port)
            .await
            .map_err(|e| Error::Connect {
                addr: host_port.clone(),
                source: e,
            })?
            .next()
            .ok_or_else(|| Error::Usage(format!("{host_port} resolves to no address")))?;
        let host = HeaderValue::from_str(&host)
            .map_err(|e| Error::Usage(format!("bad host in --url {url:?}: {e}")))?;
        Ok(Arc::new(Gateway { addr, host }))
    }
}

/// One keep-alive connection; requests on it are sequential.
pub struct Conn {
    gw: Arc<Gateway>,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Connections (re)opened, including the first.
    pub connects: u64,
}

/// A response: status code and the whole body.
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Conn {
    pub fn new(gw: Arc<Gateway>) -> Self {
        Conn {
            gw,
            sender: None,
            connects: 0,
        }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Error> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.gw.addr)
                .await
                .map_err(|e| Error::Connect {
                    addr: self.gw.addr.to_string(),
                    source: e,
                })?;
            stream.set_nodelay(true).map_err(|e| Error::Connect {
                addr: self.gw.addr.to_string(),
                source: e,
            })?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                // Ends when the sender is dropped or the peer closes; errors surface on send.
                let _ = conn.await;
            });
            self.connects += 1;
            self.sender = Some(sender);
        }
        match self.sender.as_mut() {
            Some(s) => Ok(s),
            None => unreachable!("sender set above"),
        }
    }

    /// Sends one request and reads the whole response. After a connection error the next call
    /// reconnects.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response, Error> {
        let host = self.gw.host.clone();
        let result = async {
            let sender = self.sender().await?;
            sender.ready().await?;
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, host);
            if body.is_some() {
                req = req.header(CONTENT_TYPE, "application/json");
            }
            let req = req
                .body(Full::new(body.unwrap_or_default()))
                .map_err(|e| Error::Usage(format!("bad request path {path:?}: {e}")))?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| Error::Response {
                    what: "response body",
                    detail: e.to_string(),
                })?
                .to_bytes();
            Ok(Response { status, body })
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    /// `POST /register_function`; returns the function id.
    pub async fn register(&mut self, name: &str, payload_b64: &str) -> Result<String, Error> {
        let body = serde_json::json!({ "name": name, "payload": payload_b64 }).to_string();
        let r = self
            .request(Method::POST, "/register_function", Some(body.into()))
            .await?;
        #[derive(Deserialize)]
        struct Registered {
            function_id: String,
        }
        Ok(parse::<Registered>("register_function", &r)?.function_id)
    }

    /// `POST /execute_function` with a prepared body (see [`execute_body`]); returns the task id.
    pub async fn execute(&mut self, body: &Bytes) -> Result<Uuid, Error> {
        let r = self
            .request(Method::POST, "/execute_function", Some(body.clone()))
            .await?;
        #[derive(Deserialize)]
        struct Queued {
            task_id: Uuid,
        }
        Ok(parse::<Queued>("execute_function", &r)?.task_id)
    }

    /// `GET /result/{id}` (with `?wait=S` for a long poll); returns the task's status.
    pub async fn status_of(&mut self, id: &Uuid, wait_s: Option<f64>) -> Result<TaskStatus, Error> {
        let path = match wait_s {
            Some(w) => format!("/result/{id}?wait={w}"),
            None => format!("/result/{id}"),
        };
        let r = self.request(Method::GET, &path, None).await?;
        #[derive(Deserialize)]
        struct View {
            status: String,
        }
        let v = parse::<View>("result", &r)?;
        v.status.parse().map_err(|e| Error::Response {
            what: "result",
            detail: e,
        })
    }
}

/// The JSON body of `POST /execute_function`, built once and sent for every task.
pub fn execute_body(function_id: &str, args_b64: &str) -> Bytes {
    serde_json::json!({ "function_id": function_id, "payload": args_b64 })
        .to_string()
        .into()
}

fn parse<T: for<'de> Deserialize<'de>>(what: &'static str, r: &Response) -> Result<T, Error> {
    if r.status != 200 {
        return Err(Error::Status {
            what,
            status: r.status,
            body: String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned(),
        });
    }
    serde_json::from_slice(&r.body).map_err(|e| Error::Response {
        what,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_body_is_the_api_json() {
        let b = execute_body("f", "YQ==\n");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"function_id": "f", "payload": "YQ==\n"})
        );
    }

    #[tokio::test]
    async fn urls() {
        assert!(Gateway::resolve("https://127.0.0.1:1").await.is_err());
        let g = Gateway::resolve("http://127.0.0.1:8123/").await.unwrap();
        assert_eq!(g.addr.port(), 8123);
        assert_eq!(g.host, "127.0.0.1:8123");
    }
}

//! A Segment-compatible batch API on loopback (`POST /v1/batch`), as Customer.io Data
//! Pipelines, Segment and RudderStack answer it: HTTP Basic auth with the write key,
//! 32 KB a call and 500 KB a batch, and faults injected on request (429 with
//! Retry-After, 500, an answer slower than the client's timeout, a dropped
//! connection, a redirect, an answer whose body never ends), or down for a while (every
//! request answered with one fault). It keeps every call it accepted, so tests count
//! them by `messageId`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;

/// What the receiver does with the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16, Option<u64>),
    /// Takes the batch, then answers only after this long (past the client's
    /// timeout: a write whose answer is lost).
    Slow(Duration),
    /// Closes the connection without an answer.
    Drop,
    /// Answers 302 with this `Location`.
    Redirect(String),
    /// Answers this status with a body that never ends.
    Endless(u16),
}

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Default)]
struct State {
    faults: VecDeque<Fault>,
    /// While set, the answer to every request that has no injected fault.
    down: Option<Fault>,
    /// Accepted calls, in arrival order.
    calls: Vec<Json>,
    requests: u64,
    /// Requests refused for their auth, and what they carried.
    unauthorized: Vec<String>,
    /// Every header and body seen, to search for the write key where it must not be.
    bodies: Vec<String>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    write_key: String,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Starts a receiver that takes `write_key`.
    pub async fn start(write_key: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::default();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
        );
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, expected) = (shared.clone(), expected.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(req, state.clone(), expected.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            write_key: write_key.to_string(),
            state,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn write_key(&self) -> &str {
        &self.write_key
    }

    /// Faults for the next requests, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    /// Down (every request answered with `fault`) until called again with `None`.
    pub fn down(&self, fault: Option<Fault>) {
        self.state.lock().unwrap().down = fault;
    }

    /// Every accepted call.
    pub fn calls(&self) -> Vec<Json> {
        self.state.lock().unwrap().calls.clone()
    }

    /// How many times each `messageId` was accepted.
    pub fn by_message_id(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for call in self.state.lock().unwrap().calls.iter() {
            *counts
                .entry(call["messageId"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
        counts
    }

    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }

    pub fn unauthorized(&self) -> Vec<String> {
        self.state.lock().unwrap().unauthorized.clone()
    }

    pub fn forget(&self) {
        self.state.lock().unwrap().calls.clear();
    }
}

fn respond(status: u16, body: &str, retry_after: Option<u64>) -> Response<Body> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(seconds) = retry_after {
        response = response.header("retry-after", seconds.to_string());
    }
    response
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    expected: String,
) -> Result<Response<Body>, std::io::Error> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        s.bodies.push(String::from_utf8_lossy(&body).into_owned());
        s.faults.pop_front().or_else(|| s.down.clone())
    };
    let delay = match fault {
        Some(Fault::Status(status, retry_after)) => return Ok(respond(status, r#"{"error":"injected"}"#, retry_after)),
        Some(Fault::Drop) => return Err(std::io::Error::other("dropped on purpose")),
        Some(Fault::Redirect(location)) => {
            let mut response = respond(302, "", None);
            response
                .headers_mut()
                .insert("location", location.parse().map_err(std::io::Error::other)?);
            return Ok(response);
        }
        Some(Fault::Endless(status)) => {
            let chunks = futures::stream::repeat_with(|| Ok(Frame::data(Bytes::from_static(&[b'x'; 16 * 1024]))));
            let body = StreamBody::new(chunks).boxed();
            return Ok(Response::builder().status(status).body(body).unwrap());
        }
        Some(Fault::Slow(delay)) => Some(delay),
        None => None,
    };
    if path != "/v1/batch" {
        return Ok(respond(404, r#"{"error":"no such path"}"#, None));
    }
    if auth != expected {
        state.lock().unwrap().unauthorized.push(auth);
        return Ok(respond(401, r#"{"error":"invalid write key"}"#, None));
    }
    if body.len() > 500 * 1024 {
        return Ok(respond(413, r#"{"error":"batch over 500 KB"}"#, None));
    }
    let Ok(batch) = serde_json::from_slice::<Json>(&body) else {
        return Ok(respond(400, r#"{"error":"not JSON"}"#, None));
    };
    let Some(calls) = batch["batch"].as_array() else {
        return Ok(respond(400, r#"{"error":"no batch"}"#, None));
    };
    for call in calls {
        if call.to_string().len() > 32 * 1024 {
            return Ok(respond(400, r#"{"error":"a call over 32 KB"}"#, None));
        }
        if call["messageId"].as_str().is_none() || call["type"].as_str().is_none() {
            return Ok(respond(400, r#"{"error":"a call without type or messageId"}"#, None));
        }
    }
    state.lock().unwrap().calls.extend(calls.iter().cloned());
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    Ok(respond(200, r#"{"success":true}"#, None))
}

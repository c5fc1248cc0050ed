//! A fault-injecting proxy on loopback in front of an AWS endpoint (moto): it forwards
//! each request and, on a fixed schedule, answers with the failures AWS really has
//! instead: throttling, a 500, a reset connection, an answer slower than the client's
//! attempt timeout, a write whose answer is lost, and a BatchWriteItem that leaves
//! half its items unprocessed. It counts what it injected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value as Json, json};

/// A failure the proxy injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Throttling,
    ProvisionedThroughputExceeded,
    InternalError,
    /// The connection is closed before the request reaches AWS.
    Reset,
    /// The request is done, then the connection is closed: the client never learns.
    LostResponse,
    /// BatchWriteItem only: half of each table's items are written, half returned as
    /// UnprocessedItems.
    Unprocessed,
    /// The answer comes after this long, past the client's attempt timeout.
    Delay(Duration),
}

/// Which requests fail: the n-th request (from 1) gets the fault of the first rule that
/// takes it.
#[derive(Debug, Clone)]
pub struct FaultPlan(pub Vec<Rule>);

/// One rule of a plan: `fault` for every `every`-th request, at most `limit` times, and
/// with `only` just for the requests of that operation (`CreateSecret`, `POST
/// /schedules`: see [`operation`]), with `containing` just for requests whose body holds
/// that text.
#[derive(Debug, Clone)]
pub struct Rule {
    pub every: u64,
    pub fault: Fault,
    pub limit: Option<u64>,
    pub only: Option<&'static str>,
    pub containing: Option<&'static str>,
}

impl Rule {
    pub fn every(every: u64, fault: Fault) -> Self {
        Rule {
            every,
            fault,
            limit: None,
            only: None,
            containing: None,
        }
    }

    pub fn at_most(self, limit: u64) -> Self {
        Rule {
            limit: Some(limit),
            ..self
        }
    }

    pub fn only(self, operation: &'static str) -> Self {
        Rule {
            only: Some(operation),
            ..self
        }
    }

    pub fn containing(self, text: &'static str) -> Self {
        Rule {
            containing: Some(text),
            ..self
        }
    }

    fn takes(&self, n: u64, operation: &str, body: &[u8], used: u64) -> bool {
        n.is_multiple_of(self.every)
            && self.limit.is_none_or(|l| used < l)
            && self.only.is_none_or(|o| o == operation)
            && self
                .containing
                .is_none_or(|text| body.windows(text.len()).any(|w| w == text.as_bytes()))
            && (self.fault != Fault::Unprocessed || operation == "BatchWriteItem")
    }
}

/// The AWS operation of a request: the action of its `X-Amz-Target` (DynamoDB, Secrets
/// Manager, EventBridge), or the method and first path segment (Scheduler's REST API:
/// `POST /schedules` creates one, `PUT /schedules` updates one).
fn operation(parts: &hyper::http::request::Parts) -> String {
    match parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        Some(target) => target.rsplit('.').next().unwrap_or(target).to_string(),
        None => {
            let segment = parts.uri.path().trim_start_matches('/').split('/').next().unwrap_or("");
            format!("{} /{segment}", parts.method)
        }
    }
}

struct State {
    plan: FaultPlan,
    requests: AtomicU64,
    injected: Mutex<BTreeMap<Fault, u64>>,
    /// How often each rule of the plan was used.
    used: Mutex<Vec<u64>>,
    /// Requests whose answer was lost, by operation.
    lost: Mutex<BTreeMap<String, u64>>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (such as `http://127.0.0.1:5055`).
    pub async fn start(upstream: &str, plan: FaultPlan) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            used: Mutex::new(vec![0; plan.0.len()]),
            plan,
            requests: AtomicU64::new(0),
            injected: Mutex::default(),
            lost: Mutex::default(),
        });
        let (shared, upstream) = (state.clone(), upstream.trim_end_matches('/').to_string());
        let http = reqwest::Client::new();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, upstream, http) = (shared.clone(), upstream.clone(), http.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        forward(req, state.clone(), upstream.clone(), http.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// How many of each fault were injected.
    pub fn injected(&self) -> BTreeMap<Fault, u64> {
        self.state.injected.lock().unwrap().clone()
    }

    /// How many answers were lost, by operation.
    pub fn lost(&self) -> BTreeMap<String, u64> {
        self.state.lost.lock().unwrap().clone()
    }
}

/// Why a connection was closed on purpose.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by the fault proxy")
    }
}

impl std::error::Error for Closed {}

fn aws_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-ErrorType", code)
        .body(Full::new(Bytes::from(
            json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": message}).to_string(),
        )))
        .unwrap()
}

async fn forward(
    req: Request<Incoming>,
    state: Arc<State>,
    upstream: String,
    http: reqwest::Client,
) -> Result<Response<Full<Bytes>>, Closed> {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    let mut body = body.collect().await.map_err(|_| Closed)?.to_bytes();
    let operation = operation(&parts);
    let fault = {
        let mut used = state.used.lock().unwrap();
        let rule = (0..used.len()).find(|&i| state.plan.0[i].takes(n, &operation, &body, used[i]));
        rule.map(|i| {
            used[i] += 1;
            let fault = state.plan.0[i].fault;
            *state.injected.lock().unwrap().entry(fault).or_default() += 1;
            fault
        })
    };
    let mut unprocessed = None;
    match fault {
        Some(Fault::Throttling) => {
            return Ok(aws_error(
                400,
                "ThrottlingException",
                "Rate of requests exceeds the allowed throughput.",
            ));
        }
        Some(Fault::ProvisionedThroughputExceeded) => {
            return Ok(aws_error(
                400,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded.",
            ));
        }
        Some(Fault::InternalError) => return Ok(aws_error(500, "InternalServerError", "Internal server error")),
        Some(Fault::Reset) => return Err(Closed),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Unprocessed) => {
            let mut request: Json = serde_json::from_slice(&body).unwrap();
            let mut left = serde_json::Map::new();
            for (table, items) in request["RequestItems"].as_object_mut().unwrap() {
                let items = items.as_array_mut().unwrap();
                // The first half (at least one) is written.
                let rest = items.split_off(items.len().div_ceil(2));
                if !rest.is_empty() {
                    left.insert(table.clone(), Json::Array(rest));
                }
            }
            body = Bytes::from(request.to_string());
            unprocessed = Some(left);
        }
        Some(Fault::LostResponse) | None => {}
    }
    let mut upstream_request = http.request(parts.method.clone(), format!("{upstream}{}", parts.uri));
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream_request = upstream_request.header(name, value);
        }
    }
    let answer = upstream_request.body(body).send().await.map_err(|_| Closed)?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let mut bytes = answer.bytes().await.map_err(|_| Closed)?;
    if fault == Some(Fault::LostResponse) {
        *state.lost.lock().unwrap().entry(operation).or_default() += 1;
        return Err(Closed);
    }
    if let Some(left) = unprocessed {
        let mut answer: Json = serde_json::from_slice(&bytes).unwrap();
        let merged = answer["UnprocessedItems"].as_object().cloned().unwrap_or_default();
        let mut all = left;
        for (table, items) in merged {
            all.entry(table)
                .or_insert_with(|| Json::Array(Vec::new()))
                .as_array_mut()
                .unwrap()
                .extend(items.as_array().cloned().unwrap_or_default());
        }
        answer["UnprocessedItems"] = Json::Object(all);
        bytes = Bytes::from(answer.to_string());
    }
    let mut response = Response::builder().status(status.as_u16());
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    Ok(response.body(Full::new(bytes)).unwrap())
}

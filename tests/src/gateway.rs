//! The management API served on loopback as API Gateway (REST) serves it in AWS: an
//! HTTP request is matched against the routes of the API and backfill functions, turned
//! into the `ApiGatewayProxyRequest` API Gateway would send (resource, decoded path
//! parameters, query string, body), and answered by the same handlers the Lambda
//! functions run. The fuzz test points schemathesis at it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use aws_lambda_events::encodings::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sluice_core::Backfiller;
use sluice_lambda::{ApiConfig, backfiller, deliverer, source_admin};

/// What API Gateway itself answers when no resource matches: 403 with a message.
const MISSING_TOKEN: &str = r#"{"message":"Missing Authentication Token"}"#;

pub struct LocalGateway {
    pub addr: SocketAddr,
    functions: Arc<Functions>,
}

/// One answered request: status, `METHOD path?query`, response body.
pub type Exchange = (u16, String, String);

struct Functions {
    api: sluice_api::Api,
    backfiller: Backfiller,
    exchanges: Mutex<Vec<Exchange>>,
}

impl LocalGateway {
    pub async fn start(api: sluice_api::Api, backfiller: Backfiller) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let functions = Arc::new(Functions {
            api,
            backfiller,
            exchanges: Mutex::default(),
        });
        let shared = functions.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let functions = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| serve(req, functions.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        LocalGateway { addr, functions }
    }

    /// Every request answered so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.functions.exchanges.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API and backfill functions' own wiring over `sdk` (moto, or the fault proxy
    /// in front of it), with new tables and a new schedule group made on moto; the
    /// config they run with.
    pub async fn functions_over(sdk: &aws_config::SdkConfig) -> (Self, ApiConfig) {
        let (config, _) = crate::api_config(None).await;
        let function = &config.function;
        let api = sluice_api::Api {
            admin: source_admin(sdk, &config),
            deliverer: deliverer(sdk, function).unwrap(),
        };
        let backfiller = backfiller(sdk, function);
        (LocalGateway::start(api, backfiller).await, config)
    }
}

/// `%xx` decoded, as API Gateway decodes path parameters; `None` when not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) if hex.iter().all(u8::is_ascii_hexdigit) => {
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The route whose resource matches `path` segment by segment, with its parameters.
fn match_route(
    routes: &[(&'static str, &'static str)],
    method: &str,
    path: &str,
) -> Option<(&'static str, HashMap<String, String>)> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    routes.iter().filter(|(m, _)| *m == method).find_map(|(_, resource)| {
        let parts: Vec<&str> = resource.split('/').collect();
        if parts.len() != segments.len() {
            return None;
        }
        let mut params = HashMap::new();
        for (part, segment) in parts.iter().zip(&segments) {
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if !segment.is_empty() => {
                    params.insert(name.to_string(), percent_decode(segment)?);
                }
                Some(_) => return None,
                None if part == segment => {}
                None => return None,
            }
        }
        Some((*resource, params))
    })
}

async fn serve(req: Request<Incoming>, functions: Arc<Functions>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let target = format!("{} {}", req.method(), req.uri());
    let (status, body) = answer_request(req, &functions).await?;
    functions.exchanges.lock().unwrap().push((status, target, body.clone()));
    Ok(answer(status, body))
}

/// API Gateway's part: the route, then the function that serves it.
async fn answer_request(req: Request<Incoming>, functions: &Functions) -> Result<(u16, String), hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let method = parts.method.as_str();
    let path = parts.uri.path();
    let routed = match_route(sluice_api::ROUTES, method, path)
        .map(|r| (r, false))
        .or_else(|| match_route(sluice_backfill::ROUTES, method, path).map(|r| (r, true)));
    let Some(((resource, path_parameters), to_backfill)) = routed else {
        return Ok((403, MISSING_TOKEN.into()));
    };
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for pair in parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode(&s.replace('+', " "));
        if let (Some(name), Some(value)) = (decode(name), decode(value)) {
            query.entry(name).or_default().push(value);
        }
    }
    let mut request = ApiGatewayProxyRequest::default();
    request.http_method = parts.method.clone();
    request.resource = Some(resource.to_string());
    request.path = Some(path.to_string());
    request.path_parameters = path_parameters;
    request.query_string_parameters = query.into();
    request.body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    let response = if to_backfill {
        sluice_backfill::api(&functions.backfiller, &request).await
    } else {
        sluice_api::handle(&functions.api, &request).await
    };
    let body = match response.body {
        Some(Body::Text(text)) => text,
        Some(Body::Binary(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    };
    Ok((response.status_code as u16, body))
}

fn answer(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

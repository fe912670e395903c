//! Application backends behind db's proxy, run in the test process on their own small tokio
//! runtime: an HTTP/1.1 or h2c hyper server that reports what reached it, and a tonic gRPC
//! service (unary + server streaming).
//!
//! The HTTP app answers by path: `/ws` switches protocols on an `Upgrade` request and echoes
//! raw bytes afterwards; `/upload` streams the request body, flagging the first chunk as soon
//! as it arrives; `/trailers` answers with response trailers; anything else answers
//! `ok METHOD PATH` with the names of the request headers it received in `x-app-headers`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

pub mod pb {
    tonic::include_proto!("l7test");
}

type Body = BoxBody<Bytes, Infallible>;

/// What the HTTP app saw.
#[derive(Default)]
pub struct Seen {
    /// `METHOD PATH` of every request, in order.
    pub requests: Mutex<Vec<String>>,
    pub connections: AtomicUsize,
    /// Set when `/upload` received its first body chunk.
    pub first_chunk: AtomicBool,
}

impl Seen {
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("app runtime")
}

/// An HTTP/1.1 (`h2 = false`) or h2c (`h2 = true`) app on 127.0.0.1.
pub struct HttpApp {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    _rt: Runtime,
}

impl HttpApp {
    pub fn start(h2: bool) -> Self {
        let rt = runtime();
        let seen = Arc::new(Seen::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind app");
        let addr = listener.local_addr().unwrap();
        let s = seen.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(answer(&s, req).await) }
                    });
                    let io = TokioIo::new(tcp);
                    let _ = if h2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .with_upgrades()
                            .await
                    };
                });
            }
        });
        Self {
            addr,
            seen,
            _rt: rt,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

async fn answer(seen: &Seen, mut req: Request<Incoming>) -> Response<Body> {
    let line = format!("{} {}", req.method(), req.uri().path());
    seen.requests.lock().unwrap().push(line.clone());
    match req.uri().path() {
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(up) = on.await else { return };
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                // Echo until the client closes (bounded by the client's lifetime).
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("upgrade", HeaderValue::from_static("websocket"));
            r.headers_mut()
                .insert("connection", HeaderValue::from_static("Upgrade"));
            r
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(d) = frame.data_ref() {
                    if !d.is_empty() {
                        seen.first_chunk.store(true, Ordering::SeqCst);
                    }
                    total += d.len();
                }
            }
            Response::new(full(format!("got {total}")))
        }
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(b"body-with-trailers"))),
                Ok(Frame::trailers(trailers)),
            ];
            let stream = tokio_stream::iter(frames);
            Response::new(StreamBody::new(stream).boxed())
        }
        _ => {
            let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
            let names = names.join(",");
            // Drain the request body before answering.
            let _ = req.body_mut().collect().await;
            let mut r = Response::new(full(format!("ok {line}\n")));
            if let Ok(v) = HeaderValue::from_str(&names) {
                r.headers_mut().insert("x-app-headers", v);
            }
            // A hop-by-hop header the proxy must not pass back.
            r.headers_mut()
                .insert("keep-alive", HeaderValue::from_static("timeout=5"));
            r
        }
    }
}

/// The gRPC test service.
#[derive(Default)]
pub struct EchoService {
    pub calls: Arc<AtomicUsize>,
}

type ReplyStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::EchoReply, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl pb::echo_server::Echo for EchoService {
    async fn unary(
        &self,
        req: tonic::Request<pb::EchoRequest>,
    ) -> Result<tonic::Response<pb::EchoReply>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(tonic::Response::new(pb::EchoReply {
            message: req.into_inner().message,
            seq: 0,
        }))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        req: tonic::Request<pb::EchoRequest>,
    ) -> Result<tonic::Response<Self::ServerStreamStream>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let r = req.into_inner();
        let items: Vec<Result<pb::EchoReply, tonic::Status>> = (0..r.count)
            .map(|seq| {
                Ok(pb::EchoReply {
                    message: r.message.clone(),
                    seq,
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

/// A tonic server (h2c) with [`EchoService`].
pub struct GrpcApp {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
    _rt: Runtime,
}

impl GrpcApp {
    pub fn start() -> Self {
        let rt = runtime();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind grpc app");
        let addr = listener.local_addr().unwrap();
        let svc = EchoService::default();
        let calls = svc.calls.clone();
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(pb::echo_server::EchoServer::new(svc))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            calls,
            _rt: rt,
        }
    }
}

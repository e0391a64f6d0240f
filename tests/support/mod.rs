//! Real loopback HTTP servers for tests: they record every request and answer as told
//! (any status, headers, body, delay), and stop when dropped.

#![allow(dead_code)]

#[cfg(feature = "postgres")]
pub mod pg_server;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use tokio::{net::TcpListener, sync::Notify};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived, on tokio's clock (exact under `tokio::time::pause`).
    pub at: tokio::time::Instant,
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    replies: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    arrived: Notify,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A recording HTTP/1.1 server on 127.0.0.1 with a random port.
pub struct TestServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    /// Starts a server answering 204 unless told otherwise.
    pub async fn start() -> TestServer {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://localhost:PORT{path}` (a name, resolved by DNS).
    pub fn localhost_url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.addr.port())
    }

    /// Answers the next request with `reply` (replies queue up in order).
    pub fn reply(&self, reply: Reply) {
        self.shared.replies.lock().unwrap().push_back(reply);
    }

    /// Answers every request without a queued reply with `reply`.
    pub fn always(&self, reply: Reply) {
        *self.shared.default.lock().unwrap() = Some(reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived (at most 10 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let wait = async {
            loop {
                let notified = self.shared.arrived.notified();
                if self.count() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("requests arrived in time");
        self.requests()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    shared.requests.lock().unwrap().push(Recorded {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
        at: tokio::time::Instant::now(),
    });
    shared.arrived.notify_waiters();
    let reply = shared.replies.lock().unwrap().pop_front();
    let reply = reply
        .or_else(|| shared.default.lock().unwrap().clone())
        .unwrap_or_else(|| Reply::status(204));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        reply.body.clone(),
    )
        .into_response();
    for (k, v) in &reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    response
}

/// A server that accepts connections and closes them without answering.
pub async fn dropping_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            // Read the request head, then hang up.
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
            drop(socket);
        }
    });
    (addr, accepted)
}

/// An address where nothing listens (connections are refused).
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A raw HTTP/1.1 server that holds every request open until the test releases it, counting
/// the connections open and the requests held at once (keep-alive supported).
pub struct HoldingServer {
    pub addr: SocketAddr,
    state: Arc<HoldState>,
    task: tokio::task::JoinHandle<()>,
}

struct HoldState {
    open: AtomicUsize,
    max_open: AtomicUsize,
    accepted: AtomicUsize,
    held: AtomicUsize,
    max_held: AtomicUsize,
    answered: AtomicUsize,
    changed: Notify,
    release: tokio::sync::Semaphore,
}

impl HoldingServer {
    pub async fn start() -> HoldingServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HoldState {
            open: AtomicUsize::new(0),
            max_open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            max_held: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            changed: Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                st.accepted.fetch_add(1, Ordering::SeqCst);
                let now = st.open.fetch_add(1, Ordering::SeqCst) + 1;
                st.max_open.fetch_max(now, Ordering::SeqCst);
                tokio::spawn(hold_connection(socket, Arc::clone(&st)));
            }
        });
        HoldingServer { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Lets `n` held (or future) requests be answered with 204.
    pub fn release(&self, n: usize) {
        self.state.release.add_permits(n);
    }

    /// The most connections that were open at the same time.
    pub fn max_open(&self) -> usize {
        self.state.max_open.load(Ordering::SeqCst)
    }

    /// Connections accepted in all.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// The most requests that were held at the same time.
    pub fn max_held(&self) -> usize {
        self.state.max_held.load(Ordering::SeqCst)
    }

    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    pub fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    /// Waits until `f` holds (at most 10 s of tokio time).
    pub async fn wait_until(&self, what: &str, f: impl Fn(&HoldingServer) -> bool) {
        let wait = async {
            loop {
                let changed = self.state.changed.notified();
                if f(self) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }
}

impl Drop for HoldingServer {
    fn drop(&mut self) {
        self.task.abort();
        self.state.release.close();
    }
}

async fn hold_connection(mut socket: tokio::net::TcpStream, st: Arc<HoldState>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    'requests: loop {
        // The request head, then its body (Content-Length only).
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => break 'requests,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => break 'requests,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let now = st.held.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_held.fetch_max(now, Ordering::SeqCst);
        st.changed.notify_waiters();
        let released = st.release.acquire().await.map(|p| p.forget()).is_ok();
        st.held.fetch_sub(1, Ordering::SeqCst);
        if !released {
            break;
        }
        let answer = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        if socket.write_all(answer).await.is_err() {
            break;
        }
        st.answered.fetch_add(1, Ordering::SeqCst);
        st.changed.notify_waiters();
    }
    st.open.fetch_sub(1, Ordering::SeqCst);
    st.changed.notify_waiters();
}

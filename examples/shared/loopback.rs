//! Pieces shared by the webhook throughput example and benchmark: a loopback receiver and a
//! way to spread operations over concurrent tasks.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

/// An axum receiver answering 204 on 127.0.0.1, on its own thread and runtime (like a
/// separate process).
pub fn start_receiver() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new()
                .fallback(|_body: axum::body::Bytes| async { axum::http::StatusCode::NO_CONTENT });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("receiver started")
}

/// Runs `total` operations spread over `concurrency` tasks; returns the elapsed time.
pub async fn spread<F, Fut>(total: u64, concurrency: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let per_task = total.div_ceil(concurrency);
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    op(t * per_task + i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed()
}

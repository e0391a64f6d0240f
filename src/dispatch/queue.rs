//! The bounded per-target queue of async and batching targets, and its worker.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle, time::Instant};

use super::{middleware, pipeline, DropReason, Target};
use crate::{policy::Overflow, telemetry::Via, DeliveryError, Signal};

/// How a batching target groups signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchConfig {
    pub(crate) size: usize,
    pub(crate) flush_interval: Duration,
}

#[derive(Debug)]
pub(crate) struct AsyncQueue {
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) batch: Option<BatchConfig>,
    items: Mutex<VecDeque<Arc<Signal>>>,
    /// Wakes the worker (a stored permit if it is busy).
    wake: Notify,
    /// Wakes publishers blocked on a full queue.
    room: Notify,
    closed: AtomicBool,
    started: AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Signals the worker has taken (counted under the items lock as they leave it, so a
    /// batch still filling counts) and not yet finished delivering.
    in_hand: AtomicUsize,
}

/// What happened to a signal offered to the queue.
pub(crate) enum Offer {
    /// Queued (`Ok`; with `DropOldest` perhaps at the cost of an older signal), or refused.
    Done(Result<(), DeliveryError>),
    /// The queue is full and the overflow policy (`DropNewest`) dropped this signal.
    Dropped(DropReason),
    /// The queue is full and the overflow policy is to wait.
    MustWait,
}

impl AsyncQueue {
    pub(crate) fn new(capacity: usize, overflow: Overflow, batch: Option<BatchConfig>) -> Self {
        AsyncQueue {
            capacity,
            overflow,
            batch,
            items: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            worker: Mutex::new(None),
            in_hand: AtomicUsize::new(0),
        }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Signal>>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Signals waiting in the queue.
    pub(crate) fn depth(&self) -> usize {
        self.items().len()
    }

    fn closed_error(target: &Target) -> DeliveryError {
        DeliveryError::Closed {
            target: target.name().to_owned(),
        }
    }

    fn full_error(&self, target: &Target) -> DeliveryError {
        DeliveryError::QueueFull {
            target: target.name().to_owned(),
            capacity: self.capacity,
        }
    }

    /// Offers a signal without waiting.
    pub(crate) fn offer(&self, target: &Target, signal: &Arc<Signal>) -> Offer {
        self.ensure_worker(target);
        let (dropped, newest) = {
            let mut items = self.items();
            // Checked under the lock `close` takes: nothing is queued after the worker's
            // last look.
            if self.closed.load(Ordering::Acquire) {
                return Offer::Done(Err(Self::closed_error(target)));
            }
            if items.len() < self.capacity {
                items.push_back(Arc::clone(signal));
                (None, false)
            } else {
                match self.overflow {
                    Overflow::Block => return Offer::MustWait,
                    Overflow::Error => return Offer::Done(Err(self.full_error(target))),
                    // Not cloned: the signal stays the caller's.
                    Overflow::DropNewest => (None, true),
                    Overflow::DropOldest => {
                        let oldest = items.pop_front();
                        items.push_back(Arc::clone(signal));
                        (oldest, false)
                    }
                }
            }
        };
        if newest {
            pipeline::dropped(target, signal, self.overflow);
            return Offer::Dropped(DropReason::QueueFull {
                capacity: self.capacity,
            });
        }
        match dropped {
            Some(lost) => pipeline::dropped(target, &lost, self.overflow),
            None => self.wake.notify_one(),
        }
        Offer::Done(Ok(()))
    }

    /// Waits for room (overflow `Block`) up to the target's timeout.
    pub(crate) async fn offer_waiting(
        &self,
        target: &Target,
        signal: &Arc<Signal>,
    ) -> Result<Option<DropReason>, DeliveryError> {
        let deadline = Instant::now() + target.config.timeout;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.offer(target, signal) {
                Offer::Done(result) => return result.map(|()| None),
                Offer::Dropped(why) => return Ok(Some(why)),
                Offer::MustWait => {}
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(self.full_error(target));
            }
        }
    }

    fn ensure_worker(&self, target: &Target) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if worker.is_none() {
            let target = target.clone();
            *worker = Some(tokio::spawn(run(target)));
            self.started.store(true, Ordering::Release);
        }
    }

    /// Takes up to `max` queued signals; returns whether the queue was closed when it looked
    /// (under the lock `offer` and `close` take, so no signal slips in after that look).
    fn take(&self, max: usize, into: &mut Vec<Arc<Signal>>) -> bool {
        let mut items = self.items();
        let n = max.saturating_sub(into.len()).min(items.len());
        into.extend(items.drain(..n));
        self.in_hand.fetch_add(n, Ordering::AcqRel);
        let closed = self.closed.load(Ordering::Acquire);
        drop(items);
        if n > 0 {
            self.room.notify_waiters();
        }
        closed
    }

    /// The next signal or batch, or `None` once closed and empty.
    async fn next(&self) -> Option<Vec<Arc<Signal>>> {
        let size = self.batch.map_or(1, |b| b.size);
        let mut out = Vec::with_capacity(size);
        loop {
            let wake = self.wake.notified();
            let closed = self.take(size, &mut out);
            if !out.is_empty() {
                break;
            }
            if closed {
                return None;
            }
            wake.await;
        }
        if let Some(batch) = self.batch {
            // Fill the batch until it is full or the flush interval since its first signal.
            let deadline = Instant::now() + batch.flush_interval;
            while out.len() < size && !self.closed.load(Ordering::Acquire) {
                let wake = self.wake.notified();
                self.take(size, &mut out);
                if out.len() >= size {
                    break;
                }
                if tokio::time::timeout_at(deadline, wake).await.is_err() {
                    break;
                }
            }
            self.take(size, &mut out);
        }
        Some(out)
    }

    /// Stops taking signals; the worker delivers what is queued, then exits.
    pub(crate) fn close(&self) {
        {
            let _items = self.items();
            self.closed.store(true, Ordering::Release);
        }
        self.wake.notify_one();
        self.room.notify_waiters();
    }

    /// Signals not yet delivered: queued, and taken by the worker but not finished.
    pub(crate) fn pending(&self) -> usize {
        let items = self.items();
        items.len() + self.in_hand.load(Ordering::Acquire)
    }

    /// Waits for the worker to drain the queue, until `deadline`; returns what is left
    /// (queued, and in the hands of a worker stopped at the deadline).
    pub(crate) async fn drain(&self, deadline: Instant) -> usize {
        self.close();
        let handle = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut handle) = handle {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                handle.abort();
            }
        }
        self.pending()
    }
}

/// The worker: delivers queued signals in order, with the target's policies.
async fn run(target: Target) {
    let Some(queue) = target.runtime.queue.as_ref() else {
        return;
    };
    // The bus's middleware runs here, around each delivery (hooks catch their own panics).
    let chain = target.runtime.middleware.as_ref();
    while let Some(signals) = queue.next().await {
        match (queue.batch.is_some(), chain) {
            (true, None) => {
                let _ = pipeline::deliver_batch(&target, &signals).await;
                queue.in_hand.fetch_sub(signals.len(), Ordering::AcqRel);
            }
            (true, Some(chain)) => {
                middleware::deliver_batch(chain, &target, &signals).await;
                queue.in_hand.fetch_sub(signals.len(), Ordering::AcqRel);
            }
            (false, None) => {
                for signal in &signals {
                    let _ = pipeline::deliver(&target, signal, None, Via::Async, None).await;
                    queue.in_hand.fetch_sub(1, Ordering::AcqRel);
                }
            }
            (false, Some(chain)) => {
                for signal in &signals {
                    middleware::deliver_queued(chain, &target, signal).await;
                    queue.in_hand.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

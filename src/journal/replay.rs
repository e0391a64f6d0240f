//! Replay: a stream of journaled signals, read page by page.

use std::{
    collections::VecDeque,
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::{future::BoxFuture, Stream};

use super::{JournalError, JournalPage, JournalStore};
use crate::{Pattern, Signal};

/// Entries read per page.
pub(crate) const PAGE: usize = 1_000;

type Read = BoxFuture<'static, Result<JournalPage, JournalError>>;

/// The signals of a journal that match a pattern, in journal order: what
/// [`Bus::replay`](crate::Bus::replay) returns. Reads the journal a page (1,000 entries) at
/// a time, never the whole journal, and ends once it has read every entry the journal held
/// when that last page was read. A store failure is yielded as an error item; the stream
/// ends after it.
pub struct ReplayStream {
    store: Arc<dyn JournalStore>,
    journal: Arc<str>,
    pattern: Arc<Pattern>,
    after: u64,
    buffer: VecDeque<(u64, Arc<Signal>)>,
    read: Option<Read>,
    done: bool,
    last_seq: u64,
}

impl fmt::Debug for ReplayStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayStream")
            .field("journal", &self.journal)
            .field("pattern", &self.pattern.as_str())
            .field("after", &self.after)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ReplayStream {
    pub(crate) fn new(
        store: Arc<dyn JournalStore>,
        journal: Arc<str>,
        pattern: Pattern,
        after: u64,
    ) -> Self {
        ReplayStream {
            store,
            journal,
            pattern: Arc::new(pattern),
            after,
            buffer: VecDeque::new(),
            read: None,
            done: false,
            last_seq: after,
        }
    }

    /// The sequence number of the last signal yielded (or where the replay started).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The read of the next page. It runs when polled, on the caller's task: reading it on a
    /// task of its own, to overlap it with the caller's work, measured slower on two cores
    /// (`examples/journal_bench.rs`: 131-154k against 163-173k signals/s).
    fn next_read(&self) -> Read {
        let store = Arc::clone(&self.store);
        let journal = Arc::clone(&self.journal);
        let pattern = Arc::clone(&self.pattern);
        let after = self.after;
        Box::pin(async move {
            let filter = |ty: &str| pattern.matches(ty);
            store.read(&journal, after, PAGE, Some(&filter)).await
        })
    }
}

impl Stream for ReplayStream {
    type Item = Result<Arc<Signal>, JournalError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some((seq, signal)) = this.buffer.pop_front() {
                this.last_seq = seq;
                return Poll::Ready(Some(Ok(signal)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if this.read.is_none() {
                this.read = Some(this.next_read());
            }
            let Some(read) = this.read.as_mut() else {
                continue;
            };
            let page = match read.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(page) => page,
            };
            this.read = None;
            match page {
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(page) => {
                    if page.scanned_to <= this.after {
                        this.done = true;
                        continue;
                    }
                    this.after = page.scanned_to;
                    this.buffer
                        .extend(page.entries.into_iter().map(|e| (e.seq, e.signal)));
                    if this.buffer.is_empty() {
                        // A page of other types: read on.
                        continue;
                    }
                    // The next read starts when this page is consumed.
                }
            }
        }
    }
}

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

/// Pages read at once while the journal keeps giving full pages of consecutive sequence
/// numbers: the next page and the one after it, so the database reads one while this
/// process parses the other (and the caller consumes the page before them).
const AHEAD: usize = 2;

type Read = BoxFuture<'static, Result<JournalPage, JournalError>>;

/// One page being read: where it starts, the read, and the task running it (aborted when
/// the read is dropped unfinished).
struct PageRead {
    after: u64,
    read: Read,
    task: Option<tokio::task::AbortHandle>,
}

impl Drop for PageRead {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The signals of a journal that match a pattern, in journal order: what
/// [`Bus::replay`](crate::Bus::replay) returns. Reads the journal a page (1,000 entries) at
/// a time, never the whole journal, and ends once it has read every entry the journal held
/// when that last page was read. A store failure is yielded as an error item; the stream
/// ends after it.
///
/// Within a Tokio runtime, page reads run on tasks of their own: the next page is read as
/// soon as the one before it arrives, while that one is consumed, and while pages come back
/// full and with consecutive sequence numbers (a journal being read from its past), the page
/// after it too; at most three pages (3,000 signals) are held at a time. A page read ahead is
/// used only when it starts exactly where the page before it ended; otherwise it is dropped
/// and read again from the right place, so reading ahead never skips or repeats an entry. So
/// the read that finds the end of the journal can run before the caller has consumed the last
/// page; entries appended after it are not part of this replay. Outside a runtime, each page
/// is read when the stream is polled.
pub struct ReplayStream {
    store: Arc<dyn JournalStore>,
    journal: Arc<str>,
    pattern: Arc<Pattern>,
    after: u64,
    buffer: VecDeque<(u64, Arc<Signal>)>,
    reads: VecDeque<PageRead>,
    /// Whether the last page was full and consecutive: then reading ahead pays.
    ahead: bool,
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
            reads: VecDeque::new(),
            ahead: false,
            done: false,
            last_seq: after,
        }
    }

    /// The sequence number of the last signal yielded (or where the replay started).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The read of the page after `after`: on a task of its own when a Tokio runtime is
    /// at hand (so it proceeds while the caller consumes the page before it), else when
    /// polled.
    fn page_read(&self, after: u64) -> PageRead {
        let store = Arc::clone(&self.store);
        let journal = Arc::clone(&self.journal);
        let pattern = Arc::clone(&self.pattern);
        let backend = self.store.backend();
        let read = async move {
            let filter = |ty: &str| pattern.matches(ty);
            store.read(&journal, after, PAGE, Some(&filter)).await
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // In the caller's span, as a read polled in place would be.
                let task = runtime.spawn(tracing::Instrument::in_current_span(read));
                let abort = task.abort_handle();
                PageRead {
                    after,
                    read: Box::pin(async move {
                        match task.await {
                            Ok(page) => page,
                            // A store that panics panics the caller, as a read polled in
                            // place would.
                            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                            // Cancelled: this stream aborts a read only once it is dropped, so
                            // the runtime is shutting down.
                            Err(_) => Err(JournalError::store(
                                backend,
                                "the page read was cancelled: the runtime is shutting down",
                            )),
                        }
                    }),
                    task: Some(abort),
                }
            }
            Err(_) => PageRead {
                after,
                read: Box::pin(read),
                task: None,
            },
        }
    }

    /// Starts the reads the stream needs: the next page, and while pages come back full and
    /// consecutive, the one after it.
    fn start_reads(&mut self) {
        if self.reads.is_empty() {
            self.reads.push_back(self.page_read(self.after));
        }
        while self.ahead && self.reads.len() < AHEAD {
            let after = self.reads.back().map_or(self.after, |r| r.after) + PAGE as u64;
            self.reads.push_back(self.page_read(after));
        }
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
            this.start_reads();
            let Some(next) = this.reads.front_mut() else {
                continue;
            };
            let page = match next.read.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(page) => page,
            };
            if let Some(mut read) = this.reads.pop_front() {
                // Finished: nothing to abort.
                read.task = None;
            }
            match page {
                Err(e) => {
                    this.done = true;
                    this.reads.clear();
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(page) => {
                    if page.scanned_to <= this.after {
                        this.done = true;
                        this.reads.clear();
                        continue;
                    }
                    // Full and consecutive: the page read ahead starts where this one ends.
                    // Otherwise (the end of the journal, or a gap) it does not: read again
                    // from where this page ended.
                    let full = page.scanned_to == this.after + PAGE as u64;
                    if !full {
                        this.reads.clear();
                    }
                    this.ahead = full;
                    this.after = page.scanned_to;
                    this.buffer
                        .extend(page.entries.into_iter().map(|e| (e.seq, e.signal)));
                    // The next pages are read while this one is consumed.
                    this.start_reads();
                    if this.buffer.is_empty() {
                        // A page of other types: read on.
                        continue;
                    }
                }
            }
        }
    }
}

//! The node graph in one process: each [`Node`] is a tokio task with one bounded queue per
//! subscribed topic, and [`Graph`] routes every publication to the queues of its subscribers.
//!
//! Drop policy: a full queue drops its OLDEST message and counts it (per stage and topic), so a
//! slow stage works on the newest data and memory stays bounded by the queue depths; nothing
//! queues without bound. In lossless mode (`stars run --rate max`) the player instead waits
//! after each input until the whole graph is idle ([`Graph::settle`]), so nothing is dropped
//! and the output is deterministic; the feature and detector stages still run concurrently.
//!
//! Node logic runs on tokio's blocking pool (model inference is CPU-bound); publishing is a
//! lock and a push. The input clock reaches the nodes through [`Graph::tick`], after the
//! messages published before it.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Bus, Msg, Node};

/// One subscription's bounded queue.
struct TopicQueue {
    topic: &'static str,
    depth: usize,
    items: VecDeque<(u64, Arc<Msg>)>,
    dropped: u64,
    high_water: usize,
}

/// What waits for one stage: its subscriptions' queues and the newest clock tick.
#[derive(Default)]
struct InboxState {
    queues: Vec<TopicQueue>,
    clock: Option<i64>,
    closed: bool,
}

/// A stage's input side.
struct Inbox {
    state: Mutex<InboxState>,
    wake: Notify,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Work taken from an inbox.
enum Work {
    Message(&'static str, Arc<Msg>),
    Clock(i64),
    Closed,
}

/// Outstanding work in the graph (queued messages, pending ticks, running handlers), so
/// lossless replay knows when everything published so far has been handled.
#[derive(Default)]
struct Inflight {
    count: AtomicUsize,
    idle: Notify,
}

impl Inflight {
    fn add(&self, n: usize) {
        self.count.fetch_add(n, Ordering::SeqCst);
    }

    fn done(&self, n: usize) {
        if n > 0 && self.count.fetch_sub(n, Ordering::SeqCst) == n {
            self.idle.notify_waiters();
        }
    }
}

/// The router: topic -> (stage inbox, queue index).
struct Router {
    routes: HashMap<&'static str, Vec<(Arc<Inbox>, usize)>>,
    seq: AtomicU64,
    inflight: Arc<Inflight>,
}

impl Bus for Router {
    fn publish(&self, topic: &str, msg: Arc<Msg>) {
        let Some(routes) = self.routes.get(topic) else {
            return;
        };
        // Every subscriber's queue receives the message under one set of locks, so no stage
        // can handle a reply to it (a detector map of this frame) before another stage has
        // been given the message itself. Routes are kept in inbox-address order with one
        // entry per inbox ([`Graph::start`]), so two publishers never wait on each other in a
        // cycle.
        let mut guards: Vec<_> = routes.iter().map(|(inbox, q)| (inbox.lock(), *q)).collect();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        for (state, q) in &mut guards {
            let queue = &mut state.queues[*q];
            self.inflight.add(1);
            queue.items.push_back((seq, msg.clone()));
            if queue.items.len() > queue.depth {
                queue.items.pop_front();
                queue.dropped += 1;
                self.inflight.done(1);
            }
            queue.high_water = queue.high_water.max(queue.items.len());
        }
        drop(guards);
        for (inbox, _) in routes {
            inbox.wake.notify_one();
        }
    }
}

/// Handler times a stage keeps for its report.
pub const HANDLE_SAMPLES: usize = 10_000;

/// A stage's result after the graph stops.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageReport {
    /// The node's name.
    pub name: &'static str,
    /// Messages handled.
    pub handled: u64,
    /// Messages whose handling failed (logged, counted, skipped).
    pub errors: u64,
    /// Messages dropped from full queues, per subscribed topic.
    pub dropped: Vec<(&'static str, u64)>,
    /// The most messages any of its queues held at once.
    pub high_water: usize,
    /// Time each handled message spent in the node's handler, nanoseconds, in order: the last
    /// [`HANDLE_SAMPLES`] messages (so a long run's memory stays flat).
    pub handle_ns: Vec<u64>,
    /// The node's own counters at the end.
    pub counters: Vec<(&'static str, u64)>,
}

impl StageReport {
    /// All drops of this stage.
    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

/// A stage's counts while it runs (for health diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveCounts {
    /// Messages handled so far.
    pub handled: u64,
    /// Messages whose handling failed so far.
    pub errors: u64,
    /// Messages dropped from its full queues so far.
    pub dropped: u64,
}

/// Handled and failed messages, updated by the stage's task.
#[derive(Default)]
struct Progress {
    handled: AtomicU64,
    errors: AtomicU64,
}

struct Stage {
    name: &'static str,
    inbox: Arc<Inbox>,
    progress: Arc<Progress>,
    task: JoinHandle<StageReport>,
}

/// Malloc arenas the process keeps once a graph has started (unless `MALLOC_ARENA_MAX` is set).
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`], unless the user set `MALLOC_ARENA_MAX`.
///
/// glibc gives a thread that finds the arenas busy an arena of its own (up to 8 per core) and
/// keeps their pages for the life of the process. The graph's handlers run on tokio's blocking
/// pool, so a long run kept collecting arenas: the 100,000-frame soak grew from 107 to 113 MiB
/// by frame 30,000; with two arenas it stays at 31-32 MiB (docs/reliability.md, Soak).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets one allocator parameter; glibc serialises it with allocation.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// The in-process graph. Build it inside a tokio runtime (multi-threaded: handlers run on the
/// blocking pool).
pub struct Graph {
    router: Arc<Router>,
    stages: Vec<Stage>,
}

impl Graph {
    /// Starts one task per node; `depths[i]` is the queue depth of each of node i's
    /// subscriptions. Caps the process's malloc arenas first (see [`MALLOC_ARENAS`]).
    pub fn start(nodes: Vec<(Box<dyn Node>, usize)>) -> Self {
        limit_malloc_arenas();
        let inflight = Arc::new(Inflight::default());
        let mut routes: HashMap<&'static str, Vec<(Arc<Inbox>, usize)>> = HashMap::new();
        let mut inboxes = Vec::new();
        for (node, depth) in &nodes {
            let mut topics = node.subscriptions();
            // one queue per topic, so an inbox appears once in a topic's routes
            let mut seen = std::collections::HashSet::new();
            topics.retain(|t| seen.insert(*t));
            let queues: Vec<TopicQueue> = topics
                .into_iter()
                .map(|topic| TopicQueue {
                    topic,
                    depth: node.queue_depth(topic, *depth).max(1),
                    items: VecDeque::new(),
                    dropped: 0,
                    high_water: 0,
                })
                .collect();
            let inbox = Arc::new(Inbox {
                state: Mutex::new(InboxState {
                    queues,
                    ..InboxState::default()
                }),
                wake: Notify::new(),
            });
            for (i, q) in inbox.lock().queues.iter().enumerate() {
                routes.entry(q.topic).or_default().push((inbox.clone(), i));
            }
            inboxes.push(inbox);
        }
        // A fixed lock order for `Router::publish`.
        for r in routes.values_mut() {
            r.sort_by_key(|(inbox, _)| Arc::as_ptr(inbox));
        }
        let router = Arc::new(Router {
            routes,
            seq: AtomicU64::new(0),
            inflight,
        });
        let stages = nodes
            .into_iter()
            .zip(inboxes)
            .map(|((node, _), inbox)| {
                let progress = Arc::new(Progress::default());
                Stage {
                    name: node.name(),
                    task: tokio::spawn(run_stage(
                        node,
                        inbox.clone(),
                        router.clone(),
                        progress.clone(),
                    )),
                    inbox,
                    progress,
                }
            })
            .collect();
        Self { router, stages }
    }

    /// Publishes `msg` on `topic` (the player's input, e.g. camera frames).
    pub fn publish(&self, topic: &str, msg: Msg) {
        self.router.publish(topic, Arc::new(msg));
    }

    /// Advances every node's input clock to `now_ns` (after what was published before).
    pub fn tick(&self, now_ns: i64) {
        self.tick_where(|_| true, now_ns);
    }

    /// Advances the input clock of the stages whose name passes `which` to `now_ns`.
    pub fn tick_where(&self, which: impl Fn(&str) -> bool, now_ns: i64) {
        for stage in self.stages.iter().filter(|s| which(s.name)) {
            let mut state = stage.inbox.lock();
            if state.clock.is_none() {
                self.router.inflight.add(1);
            }
            state.clock = Some(now_ns);
            drop(state);
            stage.inbox.wake.notify_one();
        }
    }

    /// Each stage's name and counts so far.
    pub fn live(&self) -> Vec<(&'static str, LiveCounts)> {
        self.stages
            .iter()
            .map(|stage| {
                let dropped = stage.inbox.lock().queues.iter().map(|q| q.dropped).sum();
                let counts = LiveCounts {
                    handled: stage.progress.handled.load(Ordering::Relaxed),
                    errors: stage.progress.errors.load(Ordering::Relaxed),
                    dropped,
                };
                (stage.name, counts)
            })
            .collect()
    }

    /// Waits until every message published so far has been handled (outputs included).
    pub async fn settle(&self) {
        let inflight = &self.router.inflight;
        loop {
            let idle = inflight.idle.notified();
            if inflight.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            // A bounded wait guards against a missed wake-up; the count is what decides.
            let _ = tokio::time::timeout(Duration::from_millis(50), idle).await;
        }
    }

    /// Lets the stages finish what is queued, stops them, and reports each.
    pub async fn stop(self) -> Vec<StageReport> {
        for stage in &self.stages {
            stage.inbox.lock().closed = true;
            stage.inbox.wake.notify_one();
        }
        let mut reports = Vec::new();
        for stage in self.stages {
            match stage.task.await {
                Ok(report) => reports.push(report),
                Err(e) => tracing::error!("a graph stage failed: {e}"),
            }
        }
        reports
    }
}

/// Takes the next work item: the oldest queued message, then a clock tick, then closure.
fn next_work(inbox: &Inbox) -> Option<Work> {
    let mut state = inbox.lock();
    let oldest = state
        .queues
        .iter()
        .enumerate()
        .filter_map(|(i, q)| q.items.front().map(|(seq, _)| (*seq, i)))
        .min();
    if let Some((_, i)) = oldest {
        let queue = &mut state.queues[i];
        let (_, msg) = queue.items.pop_front()?;
        return Some(Work::Message(queue.topic, msg));
    }
    if let Some(now) = state.clock.take() {
        return Some(Work::Clock(now));
    }
    state.closed.then_some(Work::Closed)
}

async fn run_stage(
    mut node: Box<dyn Node>,
    inbox: Arc<Inbox>,
    router: Arc<Router>,
    progress: Arc<Progress>,
) -> StageReport {
    let name = node.name();
    let (mut handled, mut errors) = (0u64, 0u64);
    let mut handle_ns = VecDeque::with_capacity(HANDLE_SAMPLES);
    loop {
        let work = match next_work(&inbox) {
            Some(Work::Closed) => break,
            Some(work) => work,
            None => {
                inbox.wake.notified().await;
                continue;
            }
        };
        let is_message = matches!(work, Work::Message(..));
        // Model inference blocks: run the handler on the blocking pool and take the node back.
        let joined = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            // A panicking handler is one failed message, not a dead stage (which would stall
            // lossless replay forever).
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match work {
                Work::Message(topic, msg) => node.handle(topic, msg).map_err(|e| (topic, e)),
                Work::Clock(now) => Ok(node.on_clock(now)),
                Work::Closed => Ok(Vec::new()),
            }))
            .unwrap_or_else(|_| Err(("(any)", anyhow::anyhow!("handler panicked"))));
            (node, out, started.elapsed().as_nanos() as u64)
        })
        .await;
        let Ok((back, out, spent)) = joined else {
            tracing::error!("{name}: stage cancelled");
            router.inflight.done(1);
            return report(name, (handled, errors, handle_ns), &inbox, Vec::new());
        };
        node = back;
        if is_message {
            if handle_ns.len() == HANDLE_SAMPLES {
                handle_ns.pop_front();
            }
            handle_ns.push_back(spent);
        }
        let publications = match out {
            Ok(publications) => {
                handled += u64::from(is_message);
                progress
                    .handled
                    .fetch_add(u64::from(is_message), Ordering::Relaxed);
                publications
            }
            Err((topic, e)) => {
                errors += 1;
                progress.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{name}: message on {topic}: {e:#}");
                Vec::new()
            }
        };
        super::publish_all(&*router, publications);
        router.inflight.done(1);
    }
    report(name, (handled, errors, handle_ns), &inbox, node.counters())
}

fn report(
    name: &'static str,
    (handled, errors, handle_ns): (u64, u64, VecDeque<u64>),
    inbox: &Inbox,
    counters: Vec<(&'static str, u64)>,
) -> StageReport {
    let state = inbox.lock();
    StageReport {
        name,
        handled,
        errors,
        dropped: state.queues.iter().map(|q| (q.topic, q.dropped)).collect(),
        high_water: state.queues.iter().map(|q| q.high_water).max().unwrap_or(0),
        handle_ns: handle_ns.into(),
        counters,
    }
}

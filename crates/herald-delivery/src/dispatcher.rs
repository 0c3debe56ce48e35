//! The dispatcher: one task that owns every subscription's delivery state (the router, in
//! rumqttd's terms) and talks to the rest of Herald through channels. It carries out decisions
//! made elsewhere: what to send next and what an outcome changes are pure functions
//! (`transition`), when to look again is a schedule (`timers`), and how a notification reaches
//! a subscriber is a [`Channel`] (rest-hook, websocket). So the queue, the order, the retries and
//! the status rules are the same for every channel.
//!
//! * Commands come in: a subscription was created, changed or deleted; events were committed
//!   for a subscription (`wake`); a socket asks to be bound (`bind`); an operator
//!   asked for a redrive or another action (`act`: retry, pause, resume, resend), or for the
//!   live view of every subscription (`snapshot`, see `live`).
//! * Per subscription at most one attempt is in flight; attempts run as tasks and report back.
//! * A failure stores the next attempt time (retries are data); one timer — the earliest due
//!   time — wakes the dispatcher: no task sleeps per retry and nothing polls.
//! * Status changes (`requested` → `active`, → `error`, back to `active`) are requested from the
//!   server through `StatusChange` messages, because a status is part of the stored
//!   Subscription resource and goes through the server's write path.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use herald_fhir::FhirVersion;
use herald_store::{AttemptRecord, DeliveryState, DeliveryStore, Surfaces};
use herald_subscriptions::{ChannelType, Subscription, SubscriptionStatus};
use tokio::sync::{mpsc, oneshot};

use crate::attempt::{Attempt, Visibility, kind_of};
use crate::channel::{Channel, Key, Sent};
use crate::config::DeliveryConfig;
use crate::live::{Action, ActionError, LiveState};
use crate::metrics::DeliveryMetrics;
use crate::policy::RetryPolicy;
use crate::resthook::RestHook;
use crate::timers::{Clock, Deadlines, SystemClock};
use crate::transition::{Job, Next, Outcome, Rules, View, after_attempt, next_step};
use crate::websocket::{Socket, WsHub};

/// How long a moved delivery cursor waits to ride along with a writer's log sync before it
/// asks for one of its own.
const CURSOR_PATIENCE: Duration = Duration::from_millis(1);

/// A request from the dispatcher to change a Subscription's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// Tenant.
    pub tenant: String,
    /// Subscription id.
    pub subscription: String,
    /// The new status.
    pub status: SubscriptionStatus,
    /// The reason, for `error`.
    pub error: Option<String>,
}

enum Command {
    Upsert {
        tenant: String,
        version: FhirVersion,
        sub: Box<Subscription>,
    },
    Remove(Key),
    Release(Key),
    Wake(Key, u64),
    Redrive(Key),
    Bind(Bind),
    Snapshot(oneshot::Sender<Vec<LiveState>>),
    Act(Key, Action, oneshot::Sender<Result<(), ActionError>>),
}

/// A socket asks to be bound to subscriptions (it redeemed a token for them).
pub struct Bind {
    /// Tenant of the subscriptions.
    pub tenant: String,
    /// Their ids.
    pub ids: Vec<String>,
    /// The socket.
    pub socket: Arc<Socket>,
    /// Per subscription id, the last event number the client has processed: the subscription's
    /// cursor is moved back to it, so that what followed is sent again.
    pub resume: HashMap<String, u64>,
    /// Where the outcome per id goes.
    pub reply: oneshot::Sender<Vec<(String, Result<(), String>)>>,
}

/// The channels the dispatcher delivers through, by type.
#[derive(Clone, Default)]
pub struct Channels {
    by_kind: HashMap<ChannelType, Arc<dyn Channel>>,
    websocket: Option<Arc<WsHub>>,
}

impl Channels {
    /// Adds (or replaces) a channel.
    pub fn with(mut self, channel: Arc<dyn Channel>) -> Self {
        self.by_kind.insert(channel.kind(), channel);
        self
    }

    /// Adds the websocket channel (the dispatcher binds sockets to it).
    pub fn with_websocket(mut self, hub: Arc<WsHub>) -> Self {
        self.websocket = Some(Arc::clone(&hub));
        self.with(hub)
    }
}

/// Handle to the dispatcher task (cheap to clone).
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::UnboundedSender<Command>,
    kinds: Arc<HashSet<ChannelType>>,
    websocket: Option<Arc<WsHub>>,
    visibility: Arc<std::sync::OnceLock<Visibility>>,
    metrics: DeliveryMetrics,
}

impl Dispatcher {
    /// Starts the dispatcher with the rest-hook, message and websocket channels. `base_urls` maps each tenant to the
    /// base URL used in notification references; `status_tx` receives the status changes to
    /// apply.
    pub fn start(
        store: Surfaces,
        config: DeliveryConfig,
        base_urls: HashMap<String, String>,
        status_tx: mpsc::UnboundedSender<StatusChange>,
    ) -> Result<(Dispatcher, tokio::task::JoinHandle<()>), reqwest::Error> {
        let hub = Arc::new(WsHub::new(
            config.ws_send_buffer,
            Duration::from_secs(config.ws_token_ttl_secs.max(1)),
        ));
        let channels = Channels::default()
            .with(Arc::new(RestHook::new(
                &config.guard(),
                config.attempt_log_body_bytes,
            )?))
            .with(Arc::new(crate::message::MessageChannel::new(
                &config.guard(),
                config.attempt_log_body_bytes,
            )?))
            .with_websocket(hub);
        Ok(Self::start_with(
            store,
            config,
            base_urls,
            status_tx,
            channels,
            Arc::new(SystemClock),
        ))
    }

    /// Starts the dispatcher with the given channels and clock.
    pub fn start_with(
        store: Surfaces,
        config: DeliveryConfig,
        base_urls: HashMap<String, String>,
        status_tx: mpsc::UnboundedSender<StatusChange>,
        channels: Channels,
        clock: Arc<dyn Clock>,
    ) -> (Dispatcher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let kinds = Arc::new(channels.by_kind.keys().copied().collect());
        let websocket = channels.websocket.clone();
        let visibility = Arc::new(std::sync::OnceLock::new());
        let metrics = DeliveryMetrics::default();
        let router = Router {
            metrics: metrics.clone(),
            policy: RetryPolicy::new(&config),
            cfg: config,
            store,
            channels: channels.by_kind,
            websocket: channels.websocket,
            visibility: Arc::clone(&visibility),
            clock,
            base_urls,
            status_tx,
            done_tx,
            subs: HashMap::new(),
            durable: HashMap::new(),
            timers: Deadlines::default(),
            ends: Deadlines::default(),
            logged: 0,
        };
        let handle = tokio::spawn(router.run(rx, done_rx));
        (
            Dispatcher {
                tx,
                kinds,
                websocket,
                visibility,
                metrics,
            },
            handle,
        )
    }

    /// Whether notifications of this channel type are delivered (others are refused at
    /// creation: accepting them would queue events nobody will ever receive).
    pub fn delivers(&self, kind: ChannelType) -> bool {
        self.kinds.contains(&kind)
    }

    /// Installs the send-time access check (once; later calls are ignored).
    pub fn set_visibility(&self, check: Visibility) {
        let _ = self.visibility.set(check);
    }

    /// The websocket channel, when there is one (tokens are issued and sockets opened there).
    pub fn websocket(&self) -> Option<&Arc<WsHub>> {
        self.websocket.as_ref()
    }

    /// A subscription was created or changed (or loaded at start-up).
    pub fn upsert(&self, tenant: &str, version: FhirVersion, sub: Subscription) {
        let _ = self.tx.send(Command::Upsert {
            tenant: tenant.to_owned(),
            version,
            sub: Box::new(sub),
        });
    }

    /// A subscription was deleted.
    pub fn remove(&self, tenant: &str, id: &str) {
        let _ = self
            .tx
            .send(Command::Remove((tenant.to_owned(), id.to_owned())));
    }

    /// This node stops delivering a subscription that still exists (in a cluster, another node
    /// took its delivery lease): it is forgotten here, its stored delivery state is kept for the
    /// next owner. An attempt in flight finishes; its outcome is not acted on.
    pub fn release(&self, tenant: &str, id: &str) {
        let _ = self
            .tx
            .send(Command::Release((tenant.to_owned(), id.to_owned())));
    }

    /// Events up to number `upto` are durable for a subscription (a write that recorded them
    /// was made durable, or they were found on disk at start-up). Only durable events are ever
    /// delivered: one lost in a crash would have its number reused by a different event.
    pub fn wake(&self, tenant: &str, id: &str, upto: u64) {
        let _ = self
            .tx
            .send(Command::Wake((tenant.to_owned(), id.to_owned()), upto));
    }

    /// Binds a socket to subscriptions: for each, its handshake goes into the socket's queue,
    /// the socket is attached, and queued events follow. Answers per id.
    pub async fn bind(
        &self,
        tenant: &str,
        ids: Vec<String>,
        socket: Arc<Socket>,
        resume: HashMap<String, u64>,
    ) -> Vec<(String, Result<(), String>)> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Command::Bind(Bind {
            tenant: tenant.to_owned(),
            ids,
            socket,
            resume,
            reply,
        }));
        if sent.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Clears a subscription's failure streak and parking, and tries again now.
    pub fn redrive(&self, tenant: &str, id: &str) {
        let _ = self
            .tx
            .send(Command::Redrive((tenant.to_owned(), id.to_owned())));
    }

    /// The live delivery state of every subscription the dispatcher holds, in key order.
    pub async fn snapshot(&self) -> Vec<LiveState> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Snapshot(reply)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Carries out an operator action on one subscription's delivery (the new state is stored
    /// before this returns; it is durable with the next log sync).
    pub async fn act(&self, tenant: &str, id: &str, action: Action) -> Result<(), ActionError> {
        let (reply, rx) = oneshot::channel();
        let key = (tenant.to_owned(), id.to_owned());
        self.tx
            .send(Command::Act(key, action, reply))
            .map_err(|_| ActionError::Stopped)?;
        rx.await.unwrap_or(Err(ActionError::Stopped))
    }

    /// Delivery's metric families, for the server's registry.
    pub fn metrics(&self) -> &DeliveryMetrics {
        &self.metrics
    }
}

struct Entry {
    version: FhirVersion,
    sub: Subscription,
    state: DeliveryState,
    in_flight: bool,
    asked_status: Option<SubscriptionStatus>,
    /// The attempt in flight and when it started (Unix ms), for the live view.
    flying: Option<(Job, u64)>,
    /// Delivered events an operator asked to send again.
    resend: Option<(u64, u64)>,
}

struct Done {
    key: Key,
    job: Job,
    sent: Sent,
}

/// What finished tasks report to the router.
enum Report {
    /// An attempt came back.
    Attempt(Done),
    /// The cursor advanced by a delivery is durable: the next batch may go.
    CursorDurable(Key),
}

struct Router {
    metrics: DeliveryMetrics,
    cfg: DeliveryConfig,
    policy: RetryPolicy,
    store: Surfaces,
    channels: HashMap<ChannelType, Arc<dyn Channel>>,
    websocket: Option<Arc<WsHub>>,
    visibility: Arc<std::sync::OnceLock<Visibility>>,
    clock: Arc<dyn Clock>,
    base_urls: HashMap<String, String>,
    status_tx: mpsc::UnboundedSender<StatusChange>,
    done_tx: mpsc::UnboundedSender<Report>,
    subs: HashMap<Key, Entry>,
    /// Highest event number known durable per subscription (from `wake`; kept apart from
    /// `subs` because a wake can overtake the upsert of a subscription just created).
    durable: HashMap<Key, u64>,
    /// Retries and heartbeats: when to look at a subscription again.
    timers: Deadlines,
    /// `Subscription.end` of each subscription that has one and is not off: when it passes the
    /// dispatcher asks for `off`.
    ends: Deadlines,
    logged: u64,
}

impl Router {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut done_rx: mpsc::UnboundedReceiver<Report>,
    ) {
        loop {
            let next = match (self.timers.earliest(), self.ends.earliest()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait = next.map(|t| Duration::from_millis(t.saturating_sub(self.clock.now_ms())));
            let sleep = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some(report) = done_rx.recv() => match report {
                    Report::Attempt(done) => self.finished(done),
                    Report::CursorDurable(key) => {
                        if let Some(e) = self.subs.get_mut(&key) {
                            e.in_flight = false;
                        }
                        self.consider(&key);
                    }
                },
                _ = sleep => self.fire_timers(),
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Upsert {
                tenant,
                version,
                sub,
            } => {
                let key = (tenant, sub.id.clone());
                let sub = *sub;
                match self.subs.get_mut(&key) {
                    Some(e) => {
                        let re_requested = sub.status == SubscriptionStatus::Requested
                            && e.sub.status != SubscriptionStatus::Requested;
                        let moved = sub.channel.endpoint != e.sub.channel.endpoint;
                        if re_requested || moved {
                            // The client asked again (or pointed elsewhere): verify the
                            // endpoint anew and forget the old failure streak. The cursor
                            // stays: nothing queued is dropped.
                            e.state.verified = false;
                            e.state.parked = false;
                            e.state.consecutive_failures = 0;
                            e.state.next_attempt_at_ms = None;
                            e.state.failing_since_ms = None;
                            persist(&*self.store.delivery, &key, &e.state);
                        }
                        e.sub = sub;
                        e.version = version;
                        e.asked_status = None;
                        // The `error` this dispatcher asked for can land after the next
                        // notification already succeeded (the success saw `active` and asked
                        // nothing): delivery has recovered, so ask for `active` again.
                        let recovered = e.sub.status == SubscriptionStatus::Error
                            && e.state.verified
                            && e.state.consecutive_failures == 0
                            && e.state.last_error.is_none();
                        if recovered {
                            self.ask(&key, SubscriptionStatus::Active, None);
                        }
                    }
                    None => {
                        let state = match self.store.delivery.delivery_state(&key.0, &key.1) {
                            Ok(s) => s,
                            Err(err) => {
                                tracing::error!(tenant = %key.0, subscription = %key.1, error = %err, "cannot read delivery state");
                                DeliveryState::default()
                            }
                        };
                        // A handshake accepted just before a crash may have lost its status
                        // write: the endpoint is verified, so finish the transition.
                        let stuck = state.verified && sub.status == SubscriptionStatus::Requested;
                        self.subs.insert(
                            key.clone(),
                            Entry {
                                version,
                                sub,
                                state,
                                in_flight: false,
                                asked_status: None,
                                flying: None,
                                resend: None,
                            },
                        );
                        if stuck {
                            self.ask(&key, SubscriptionStatus::Active, None);
                        }
                    }
                }
                self.schedule_end(&key);
                self.consider(&key);
            }
            Command::Remove(key) => {
                self.subs.remove(&key);
                self.durable.remove(&key);
                self.timers.clear(&key);
                self.ends.clear(&key);
                if let Err(e) = self.store.delivery.remove_delivery_state(&key.0, &key.1) {
                    tracing::warn!(error = %e, "cannot remove delivery state");
                }
            }
            Command::Release(key) => {
                self.subs.remove(&key);
                self.timers.clear(&key);
                self.ends.clear(&key);
            }
            Command::Wake(key, upto) => {
                let d = self.durable.entry(key.clone()).or_default();
                *d = (*d).max(upto);
                self.consider(&key);
            }
            Command::Bind(bind) => {
                let mut results = Vec::new();
                for id in &bind.ids {
                    let key = (bind.tenant.clone(), id.clone());
                    let r = self.bind_one(&key, &bind.socket, bind.resume.get(id).copied());
                    results.push((id.clone(), r));
                }
                let _ = bind.reply.send(results);
            }
            Command::Redrive(key) => {
                if let Some(e) = self.subs.get_mut(&key) {
                    e.state.parked = false;
                    e.state.consecutive_failures = 0;
                    e.state.next_attempt_at_ms = None;
                    e.state.failing_since_ms = None;
                    persist(&*self.store.delivery, &key, &e.state);
                }
                self.timers.clear(&key);
                self.consider(&key);
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Act(key, action, reply) => {
                let _ = reply.send(self.act(&key, action));
            }
        }
    }

    fn snapshot(&self) -> Vec<LiveState> {
        let mut out: Vec<LiveState> = self
            .subs
            .iter()
            .map(|(key, e)| {
                let durable = self.durable.get(key).copied().unwrap_or(0);
                LiveState {
                    tenant: key.0.clone(),
                    id: key.1.clone(),
                    status: e.sub.status.code().to_owned(),
                    channel: e.sub.channel.kind.code().to_owned(),
                    durable,
                    acked: e.state.acked,
                    queue_depth: durable.saturating_sub(e.state.acked),
                    in_flight: e.flying.map(|(job, _)| describe(job)),
                    in_flight_since_ms: e.flying.map(|(_, at)| at),
                    next_attempt_at_ms: e.state.next_attempt_at_ms,
                    consecutive_failures: e.state.consecutive_failures,
                    last_error: e.state.last_error.clone(),
                    last_attempt_at_ms: e.state.last_attempt_at_ms,
                    last_delivered_at_ms: e.state.last_sent_at_ms,
                    paused: e.state.paused,
                    parked: e.state.parked,
                    verified: e.state.verified,
                    resend: e.resend,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)));
        out
    }

    fn act(&mut self, key: &Key, action: Action) -> Result<(), ActionError> {
        let Some(e) = self.subs.get_mut(key) else {
            return Err(ActionError::Unknown(key.1.clone()));
        };
        match action {
            Action::Retry => {
                e.state.parked = false;
                e.state.next_attempt_at_ms = None;
            }
            Action::Redrive => {
                e.state.parked = false;
                e.state.consecutive_failures = 0;
                e.state.next_attempt_at_ms = None;
                e.state.failing_since_ms = None;
            }
            Action::Pause => e.state.paused = true,
            Action::Resume => e.state.paused = false,
            Action::Resend(first, last) => {
                if first == 0 || first > last {
                    return Err(ActionError::BadRange(format!(
                        "resend needs 1 <= from <= to, got {first}-{last}"
                    )));
                }
                if last > e.state.acked {
                    return Err(ActionError::BadRange(format!(
                        "only delivered events can be resent: Subscription/{} has delivered up to event {}, asked for {first}-{last} (later events are still queued and go out on their own)",
                        key.1, e.state.acked
                    )));
                }
                let pruned = self
                    .store
                    .events
                    .pruned_through(&key.0, &key.1)
                    .unwrap_or(0);
                if first <= pruned {
                    return Err(ActionError::BadRange(format!(
                        "events up to {pruned} of Subscription/{} were removed by retention; resend from {} on",
                        key.1,
                        pruned + 1
                    )));
                }
                e.resend = Some((first, last));
            }
        }
        tracing::info!(tenant = %key.0, subscription = %key.1, action = action.name(), "operator action on delivery");
        persist(&*self.store.delivery, key, &e.state);
        self.timers.clear(key);
        self.consider(key);
        Ok(())
    }

    /// Binds one subscription to a socket: handshake first (into the socket's queue, before
    /// the socket is attached, so nothing overtakes it), then attach, rewind for a resume, and
    /// let queued events follow.
    fn bind_one(
        &mut self,
        key: &Key,
        socket: &Arc<Socket>,
        resume: Option<u64>,
    ) -> Result<(), String> {
        let Some(hub) = self.websocket.clone() else {
            return Err("this server has no websocket channel".to_owned());
        };
        let Some(base_url) = self.base_urls.get(&key.0).cloned() else {
            return Err(format!("unknown tenant '{}'", key.0));
        };
        let Some(e) = self.subs.get_mut(key) else {
            return Err(format!(
                "Subscription/{} is not known or not deliverable",
                key.1
            ));
        };
        if e.sub.channel.kind != ChannelType::Websocket {
            return Err(format!(
                "Subscription/{} does not use the websocket channel",
                key.1
            ));
        }
        if matches!(
            e.sub.status,
            SubscriptionStatus::Off | SubscriptionStatus::EnteredInError
        ) {
            return Err(format!("Subscription/{} is {}", key.1, e.sub.status.code()));
        }
        let handshake = Attempt {
            store: self.store.clone(),
            channel: hub.clone(),
            key: key.clone(),
            version: e.version,
            base_url,
            sub: e.sub.clone(),
            job: Job::Handshake,
            durable: self.durable.get(key).copied().unwrap_or(0),
            state: e.state.clone(),
            timeout: Duration::from_secs(1),
            visibility: None,
        };
        let bundle = crate::attempt::bundle(&handshake)
            .map_err(|err| format!("cannot build the handshake: {err}"))?;
        if !socket.push(bytes::Bytes::from(bundle.to_string())) {
            return Err("the socket's send buffer is full".to_owned());
        }
        hub.attach(key, socket);
        // A new socket is a new way to the subscriber: a retry wait or a parking earned by the
        // sockets before it does not apply to it (the failure count stays until a success, so
        // recovery to `active` follows the same rule as rest-hook).
        if e.state.next_attempt_at_ms.is_some() || e.state.parked {
            e.state.next_attempt_at_ms = None;
            e.state.parked = false;
            persist(&*self.store.delivery, key, &e.state);
        }
        if let Some(last) = resume
            && last < e.state.acked
        {
            tracing::info!(tenant = %key.0, subscription = %key.1, from = last + 1, to = e.state.acked, "websocket resume: resending");
            e.state.acked = last;
            persist(&*self.store.delivery, key, &e.state);
        }
        let now = self.clock.now_ms();
        e.state.last_sent_at_ms = Some(now);
        let requested = e.sub.status == SubscriptionStatus::Requested;
        self.record(
            &Done {
                key: key.clone(),
                job: Job::Handshake,
                sent: Sent {
                    failure: None,
                    status: None,
                    error: None,
                    retry_after: None,
                    latency: Duration::ZERO,
                    body: None,
                    headers: Vec::new(),
                    endpoint: format!("websocket: socket {}", socket.id()),
                },
            },
            now,
        );
        if requested {
            self.ask(key, SubscriptionStatus::Active, None);
        }
        self.consider(key);
        Ok(())
    }

    /// (Re)arms the end timer of `key` from its `Subscription.end`; one already passed asks for
    /// `off` at once.
    fn schedule_end(&mut self, key: &Key) {
        self.ends.clear(key);
        let Some(e) = self.subs.get(key) else { return };
        if matches!(
            e.sub.status,
            SubscriptionStatus::Off | SubscriptionStatus::EnteredInError
        ) {
            return;
        }
        let Some(end_ms) = e.sub.end_ms() else { return };
        let end_ms = u64::try_from(end_ms).unwrap_or(0);
        if end_ms <= self.clock.now_ms() {
            self.ask(key, SubscriptionStatus::Off, None);
            return;
        }
        self.ends.set(key, end_ms);
    }

    fn fire_timers(&mut self) {
        let now = self.clock.now_ms();
        for key in self.ends.take_due(now) {
            tracing::info!(tenant = %key.0, subscription = %key.1, "Subscription.end has passed: turning it off");
            self.ask(&key, SubscriptionStatus::Off, None);
        }
        for key in self.timers.take_due(now) {
            self.consider(&key);
        }
    }

    /// Decides whether `key` has something to send now ([`next_step`]), and starts it.
    fn consider(&mut self, key: &Key) {
        let now = self.clock.now_ms();
        let Some(e) = self.subs.get(key) else { return };
        if e.in_flight {
            return;
        }
        let Some(channel) = self.channels.get(&e.sub.channel.kind).cloned() else {
            return;
        };
        let durable = self.durable.get(key).copied().unwrap_or(0);
        let view = View {
            status: e.sub.status,
            end_ms: e.sub.end_ms(),
            max_count: e
                .sub
                .channel
                .max_count
                .unwrap_or(self.cfg.default_max_count),
            heartbeat_secs: e.sub.channel.heartbeat_period,
            state: &e.state,
            durable,
            verifies: channel.verifies_endpoint(),
            ready: channel.ready(key),
            resend: e.resend,
        };
        let job = match next_step(&view, now) {
            Next::Send(job) => job,
            Next::WaitUntil(t) => {
                self.timers.set(key, t);
                return;
            }
            Next::Idle => {
                self.timers.clear(key);
                return;
            }
        };
        self.timers.clear(key);
        let Some(base_url) = self.base_urls.get(&key.0).cloned() else {
            return;
        };
        let Some(e) = self.subs.get_mut(key) else {
            return;
        };
        e.in_flight = true;
        e.flying = Some((job, now));
        let attempt = Attempt {
            store: self.store.clone(),
            channel,
            key: key.clone(),
            version: e.version,
            base_url,
            sub: e.sub.clone(),
            job,
            durable,
            state: e.state.clone(),
            timeout: Duration::from_secs(
                e.sub
                    .channel
                    .timeout
                    .map_or(self.cfg.default_timeout_secs, u64::from)
                    .max(1),
            ),
            visibility: self.visibility.get().cloned(),
        };
        let done_tx = self.done_tx.clone();
        let key = key.clone();
        let (metrics, store, clock) =
            (self.metrics.clone(), self.store.clone(), self.clock.clone());
        tokio::spawn(async move {
            let sent = attempt.run().await;
            // Commit → delivery, measured off the dispatcher's task (it reads the events).
            if sent.failure.is_none()
                && let Job::Events(first, last) = job
            {
                metrics.delivered(&*store.events, &key, first, last, clock.now_ms());
            }
            let _ = done_tx.send(Report::Attempt(Done { key, job, sent }));
        });
    }

    /// Requests a status change from the server, once per target status.
    fn ask(&mut self, key: &Key, status: SubscriptionStatus, error: Option<String>) {
        let Some(e) = self.subs.get_mut(key) else {
            return;
        };
        if e.sub.status == status || e.asked_status == Some(status) {
            return;
        }
        e.asked_status = Some(status);
        let _ = self.status_tx.send(StatusChange {
            tenant: key.0.clone(),
            subscription: key.1.clone(),
            status,
            error,
        });
    }

    fn record(&mut self, done: &Done, now: u64) {
        let events = match done.job {
            Job::Events(first, last) => (first..=last).collect(),
            _ => Vec::new(),
        };
        let attempt = AttemptRecord {
            at_ms: now,
            at: herald_store::now_instant(),
            tenant: done.key.0.clone(),
            subscription: done.key.1.clone(),
            notification_type: kind_of(done.job).code().to_owned(),
            events,
            outcome: if done.sent.failure.is_none() {
                "delivered"
            } else {
                "failed"
            }
            .to_owned(),
            http_status: done.sent.status,
            error: done.sent.error.clone(),
            latency_ms: done.sent.latency.as_secs_f64() * 1000.0,
            response_body: done.sent.body.clone(),
            request_headers: done.sent.headers.clone(),
            endpoint: done.sent.endpoint.clone(),
        };
        if let Err(e) = self.store.attempts.record_attempt(&attempt) {
            tracing::warn!(error = %e, "cannot log delivery attempt");
        }
        self.logged += 1;
        if self.logged.is_multiple_of(1000)
            && let Err(e) = self.store.attempts.prune_attempts(self.cfg.attempt_log_max)
        {
            tracing::warn!(error = %e, "cannot prune the delivery log");
        }
    }

    /// Applies an attempt's outcome ([`after_attempt`]) and carries out what it decided.
    fn finished(&mut self, done: Done) {
        let now = self.clock.now_ms();
        self.record(&done, now);
        let key = done.key;
        let Some(e) = self.subs.get_mut(&key) else {
            return;
        };
        e.flying = None;
        let channel = e.sub.channel.kind.code();
        self.metrics.attempt(channel, done.sent.failure.is_none());
        let failures_before = e.state.consecutive_failures;
        if done.sent.failure.is_none()
            && let (Job::Events(first, last), Some((from, to))) = (done.job, e.resend)
            && first == from
        {
            e.resend = (last < to).then_some((last + 1, to));
        }
        let host = endpoint_host(&done.sent.endpoint);
        let outcome = match done.sent.failure {
            None => Outcome::Delivered,
            Some(failure) => Outcome::Failed {
                failure,
                reason: done.sent.error.unwrap_or_else(|| "failed".into()),
                retry_after: done.sent.retry_after,
            },
        };
        let rules = Rules {
            policy: &self.policy,
            error_after_failures: self.cfg.error_after_failures,
        };
        let t = after_attempt(
            &e.state,
            e.sub.status,
            done.job,
            &outcome,
            now,
            &rules,
            fastrand::f64(),
        );
        e.state = t.state;
        e.in_flight = t.cursor_moved;
        match &outcome {
            Outcome::Failed { reason, .. } => {
                let next = match e.state.next_attempt_at_ms {
                    Some(at) => humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + Duration::from_millis(at),
                    )
                    .to_string(),
                    None => "none (parked until retried)".to_owned(),
                };
                tracing::warn!(
                    tenant = %key.0,
                    subscription = %key.1,
                    notification = %describe(done.job),
                    endpoint = %host,
                    cause = %reason,
                    failures = e.state.consecutive_failures,
                    next_attempt = %next,
                    "delivery attempt failed"
                );
            }
            Outcome::Delivered if failures_before > 0 => {
                tracing::info!(
                    tenant = %key.0,
                    subscription = %key.1,
                    notification = %describe(done.job),
                    endpoint = %host,
                    failed_attempts = failures_before,
                    "delivery recovered"
                );
            }
            Outcome::Delivered => {}
        }
        if t.parked_now {
            tracing::warn!(tenant = %key.0, subscription = %key.1, "retry horizon passed: delivery parked until redriven");
        }
        persist(&*self.store.delivery, &key, &e.state);
        let acked = e.state.acked;
        if let Some((status, error)) = t.ask {
            self.ask(&key, status, error);
        }
        if !t.cursor_moved {
            self.consider(&key);
            return;
        }
        // A delivered batch moved the cursor: make that durable before the next batch goes, so
        // a crash can redeliver at most the batch that was in flight. Events already recorded
        // beyond the cursor (durable or still syncing) wait for it: sync now, alongside their
        // writes' syncs. Otherwise the next batch is a write away; the cursor rides along with
        // that write's sync, or after a moment gets one of its own.
        let delivery = Arc::clone(&self.store.delivery);
        let done_tx = self.done_tx.clone();
        let waiting = self
            .store
            .events
            .recorded_event_count(&key.0, &key.1)
            .is_ok_and(|n| n > acked);
        tokio::spawn(async move {
            let patience = if waiting {
                Duration::ZERO
            } else {
                CURSOR_PATIENCE
            };
            let synced = delivery.make_cursor_durable(patience).await;
            if let Err(e) = synced {
                tracing::error!(error = %e, "cannot flush the delivery cursor");
            }
            let _ = done_tx.send(Report::CursorDurable(key));
        });
    }
}

/// `handshake`, `heartbeat`, `events 4-6`: what an attempt carries, for logs and the live view.
fn describe(job: Job) -> String {
    match job {
        Job::Handshake => "handshake".to_owned(),
        Job::Heartbeat => "heartbeat".to_owned(),
        Job::Events(a, b) if a == b => format!("event {a}"),
        Job::Events(a, b) => format!("events {a}-{b}"),
    }
}

/// The host (and port) of an endpoint URL, for logs: never its path, query or user info, which
/// may carry credentials.
fn endpoint_host(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => u.scheme().to_owned(),
        },
        // A websocket's "endpoint" is a description of its sockets, with no secrets in it.
        Err(_) => endpoint.chars().take(80).collect(),
    }
}

fn persist(store: &dyn DeliveryStore, key: &Key, state: &DeliveryState) {
    if let Err(e) = store.put_delivery_state(&key.0, &key.1, state) {
        tracing::error!(tenant = %key.0, subscription = %key.1, error = %e, "cannot store delivery state");
    }
}

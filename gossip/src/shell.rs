//! The tokio shell: one task owns the `Node`, the UDP socket and the timer queue.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use foca::Timer;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use crate::{
    GossipConfig, GossipError, Keyring, Member, MembershipEvent, Node, NodeIdentity, Output, Stats,
};

/// Events buffered per subscriber before the slowest one starts losing them.
const EVENT_BUFFER: usize = 1024;

enum Command {
    Join(Vec<SocketAddr>),
    Set(String, Vec<u8>, oneshot::Sender<Result<(), GossipError>>),
    Leave(oneshot::Sender<()>),
    Block(Vec<SocketAddr>),
    UnblockAll,
}

/// What the task publishes after each input, so reads never wait on the task.
#[derive(Default)]
struct Published {
    members: Vec<Member>,
    stats: Stats,
    state: BTreeMap<String, Vec<u8>>,
}

/// Entry point of the UDP membership service.
pub struct Gossip;

impl Gossip {
    /// Binds `identity.gossip_addr` and starts the membership task. The node is
    /// alone until [`GossipHandle::join`] is called with seeds. Port 0 binds an
    /// ephemeral port, which then becomes the advertised gossip address.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn start(
        mut identity: NodeIdentity,
        keyring: Keyring,
        config: GossipConfig,
    ) -> Result<GossipHandle, GossipError> {
        let addr = identity.gossip_addr;
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| GossipError::Bind { addr, source })?;
        if addr.port() == 0 {
            identity.gossip_addr = socket
                .local_addr()
                .map_err(|source| GossipError::Bind { addr, source })?;
        }
        let addr = identity.gossip_addr;
        let seed = rand::random::<u64>();
        let node = Node::new(identity, config, Some(keyring), seed)?;
        let (tx, rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let published = Arc::new(Mutex::new(Published::default()));
        let task = Task {
            node,
            socket,
            rx,
            events: events.clone(),
            published: Arc::clone(&published),
            timers: BTreeMap::new(),
            timer_seq: 0,
            blocked: HashSet::new(),
            filtered: 0,
        };
        tracing::info!(addr = %addr, "gossip started");
        let join = tokio::spawn(task.run());
        Ok(GossipHandle {
            tx,
            events,
            published,
            task: join,
            addr,
        })
    }
}

/// Handle to a running member: read the view, subscribe to events, write shared
/// state, leave. Dropping it stops the task without a graceful leave.
pub struct GossipHandle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<MembershipEvent>,
    published: Arc<Mutex<Published>>,
    task: JoinHandle<()>,
    addr: SocketAddr,
}

impl GossipHandle {
    /// Gossip address this member is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The membership view (this member first), as of the last input handled.
    pub fn members(&self) -> Vec<Member> {
        self.lock().members.clone()
    }

    /// Counters, as of the last input handled.
    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// Membership changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    /// Value of a shared-state key.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().state.get(key).cloned()
    }

    /// The whole shared state.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().state.clone()
    }

    /// Announces to seeds (gossip addresses); safe to call again, e.g. after a partition.
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<(), GossipError> {
        self.send(Command::Join(seeds.to_vec())).await
    }

    /// Sets a shared-state key; it converges on every member.
    pub async fn set(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Set(key.to_owned(), value.into(), tx))
            .await?;
        rx.await.map_err(|_| GossipError::Stopped)?
    }

    /// Leaves gracefully (peers see `Left`) and stops the task.
    pub async fn leave(self) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Leave(tx)).await?;
        rx.await.map_err(|_| GossipError::Stopped)?;
        let _ = self.task.await;
        Ok(())
    }

    /// Simulates a crash: stops the task and closes the socket with no goodbye.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Fault-injection hook for tests: drop every datagram to or from these peers.
    pub async fn block(&self, peers: &[SocketAddr]) -> Result<(), GossipError> {
        self.send(Command::Block(peers.to_vec())).await
    }

    /// Fault-injection hook for tests: stop dropping datagrams.
    pub async fn unblock_all(&self) -> Result<(), GossipError> {
        self.send(Command::UnblockAll).await
    }

    async fn send(&self, cmd: Command) -> Result<(), GossipError> {
        self.tx.send(cmd).await.map_err(|_| GossipError::Stopped)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published.lock().expect("published view lock poisoned")
    }
}

struct Task {
    node: Node,
    socket: UdpSocket,
    rx: mpsc::Receiver<Command>,
    events: broadcast::Sender<MembershipEvent>,
    published: Arc<Mutex<Published>>,
    timers: BTreeMap<(Instant, u64), Timer<NodeIdentity>>,
    timer_seq: u64,
    blocked: HashSet<SocketAddr>,
    filtered: u64,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Task {
    async fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        let resync_every = self.node.config().state_resync_every;
        let mut resync = tokio::time::interval_at(Instant::now() + resync_every, resync_every);
        self.publish();
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let output = tokio::select! {
                recv = self.socket.recv_from(&mut buf) => match recv {
                    Ok((len, from)) => {
                        if self.blocked.contains(&from) {
                            self.filtered += 1;
                            continue;
                        }
                        self.node.handle_datagram(from, &buf[..len])
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "gossip socket receive failed");
                        continue;
                    }
                },
                _ = sleep_until(next_timer.unwrap_or_else(far_future)), if next_timer.is_some() => {
                    let Some((_, timer)) = self.timers.pop_first() else { continue };
                    self.node.handle_timer(timer)
                }
                _ = resync.tick() => self.node.resync(),
                cmd = self.rx.recv() => match cmd {
                    None => break,
                    Some(Command::Join(seeds)) => self.node.announce(&seeds),
                    Some(Command::Set(k, v, reply)) => match self.node.set(&k, v, now_millis()) {
                        Ok(out) => { let _ = reply.send(Ok(())); out }
                        Err(e) => { let _ = reply.send(Err(e)); continue }
                    },
                    Some(Command::Leave(reply)) => {
                        let out = self.node.leave();
                        self.apply(out).await;
                        tracing::info!(addr = %self.node.identity().gossip_addr, "gossip left the cluster");
                        let _ = reply.send(());
                        break;
                    }
                    Some(Command::Block(peers)) => { self.blocked.extend(peers); continue }
                    Some(Command::UnblockAll) => { self.blocked.clear(); continue }
                },
            };
            self.apply(output).await;
        }
    }

    async fn apply(&mut self, out: Output) {
        for (to, data) in out.sends {
            if self.blocked.contains(&to) {
                self.filtered += 1;
                continue;
            }
            if let Err(e) = self.socket.send_to(&data, to).await {
                tracing::debug!(to = %to, error = %e, "gossip send failed");
            }
        }
        let now = Instant::now();
        for (after, timer) in out.timers {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        for e in out.events {
            tracing::info!(event = ?e, "membership event");
            let _ = self.events.send(e);
        }
        self.publish();
    }

    fn publish(&self) {
        let mut p = self.published.lock().expect("published view lock poisoned");
        p.members = self.node.members();
        p.stats = self.node.stats();
        p.stats.datagrams_dropped_filtered = self.filtered;
        p.state = self.node.snapshot();
    }
}

fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400)
}

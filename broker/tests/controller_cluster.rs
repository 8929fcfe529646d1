//! The controller quorum over real gRPC on 127.0.0.x and real sled directories: election,
//! replication to voters and learners, leader loss and catch-up, fencing, quorum loss.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::BrokerError;
use broker::controller::{
    BrokerRegistration, ClusterState, Command, Controller, ControllerConfig, ControllerHandle, Peer,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

const SESSION: Duration = Duration::from_millis(1500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// One running controller node with its gRPC server.
struct Node {
    id: u64,
    addr: SocketAddr,
    dir: PathBuf,
    handle: ControllerHandle,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

struct Cluster {
    _tmp: tempfile::TempDir,
    voters: Vec<Peer>,
    learners: Vec<Peer>,
    nodes: BTreeMap<u64, Node>,
    snapshot_every: u64,
}

fn registration(id: u64, addr: SocketAddr) -> BrokerRegistration {
    BrokerRegistration {
        id,
        name: format!("b{id}"),
        region: "test".into(),
        grpc_addr: addr.to_string(),
        kafka_addr: None,
    }
}

async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("cannot bind {addr}: {err}"),
        }
    }
}

impl Cluster {
    /// Voters 1..=voters and learners after them, on `ip`, all heartbeating.
    async fn start(ip: &str, voters: u64, learners: u64, snapshot_every: u64) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        for id in 1..=voters + learners {
            let l = TcpListener::bind(format!("{ip}:0")).await.unwrap();
            listeners.insert(id, l);
        }
        let peer = |id: u64| Peer {
            id,
            addr: listeners[&id].local_addr().unwrap().to_string(),
        };
        let mut cluster = Cluster {
            voters: (1..=voters).map(peer).collect(),
            learners: (voters + 1..=voters + learners).map(peer).collect(),
            _tmp: tmp,
            nodes: BTreeMap::new(),
            snapshot_every,
        };
        for (id, listener) in listeners {
            let dir = cluster._tmp.path().join(format!("b{id}/controller"));
            let node = cluster.launch(id, dir, listener).await;
            cluster.nodes.insert(id, node);
        }
        cluster
    }

    fn config(&self, id: u64, dir: PathBuf) -> ControllerConfig {
        let mut config =
            ControllerConfig::new(id, "test", dir, self.voters.clone(), self.learners.clone());
        config.session_timeout = SESSION;
        config.broker_heartbeat_interval = Duration::from_millis(300);
        config.raft_heartbeat = Duration::from_millis(100);
        config.election_timeout = (Duration::from_millis(300), Duration::from_millis(600));
        config.request_timeout = REQUEST_TIMEOUT;
        config.snapshot_every = self.snapshot_every;
        config
    }

    async fn launch(&self, id: u64, dir: PathBuf, listener: TcpListener) -> Node {
        let addr = listener.local_addr().unwrap();
        let handle = Controller::start(self.config(id, dir.clone()))
            .await
            .unwrap();
        let (raft, api) = handle.services();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(raft)
                .add_service(api)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        handle.start_heartbeats(registration(id, addr));
        Node {
            id,
            addr,
            dir,
            handle,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops a node's controller and its server, as a crash would (its dir stays).
    async fn kill(&mut self, id: u64) -> Node {
        let mut node = self.nodes.remove(&id).unwrap();
        node.handle.shutdown().await.unwrap();
        let _ = node.stop.take().unwrap().send(());
        let server = node.server.take().unwrap();
        if tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .is_err()
        {
            panic!("server of node {id} did not stop");
        }
        node
    }

    async fn restart(&mut self, node: Node) {
        let listener = bind(node.addr).await;
        let restarted = self.launch(node.id, node.dir, listener).await;
        self.nodes.insert(node.id, restarted);
    }

    fn handle(&self, id: u64) -> &ControllerHandle {
        &self.nodes[&id].handle
    }

    async fn leader(&self, within: Duration) -> u64 {
        wait_for(within, "a leader among running voters", || {
            self.nodes
                .values()
                .find(|n| n.handle.is_leader())
                .map(|n| n.id)
        })
        .await
    }

    /// Waits until every running node's state satisfies `check`.
    async fn all_states<F: Fn(&ClusterState) -> bool>(
        &self,
        within: Duration,
        what: &str,
        check: F,
    ) {
        wait_for(within, what, || {
            self.nodes
                .values()
                .all(|n| check(&n.handle.current()))
                .then_some(())
        })
        .await
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }
}

async fn wait_for<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn create(name: &str, partitions: u32, rf: u16) -> Command {
    Command::CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
    }
}

fn unfenced(state: &ClusterState) -> usize {
    state.brokers.values().filter(|b| !b.fenced).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_and_a_learner_replicate_a_created_topic() {
    let cluster = Cluster::start("127.0.0.2", 3, 1, 1000).await;
    let leader = cluster.leader(Duration::from_secs(5)).await;
    assert!(leader <= 3, "a learner ({leader}) must never lead");
    cluster
        .all_states(
            Duration::from_secs(5),
            "4 registered brokers everywhere",
            |s| unfenced(s) == 4,
        )
        .await;

    // Proposed on the learner: forwarded to the leader.
    cluster
        .handle(4)
        .propose(create("orders", 4, 3))
        .await
        .unwrap();
    cluster
        .all_states(Duration::from_secs(5), "orders on every node", |s| {
            s.topics.contains_key("orders")
        })
        .await;

    let states: Vec<Arc<ClusterState>> =
        cluster.nodes.values().map(|n| n.handle.current()).collect();
    let orders = &states[0].topics["orders"];
    let mut leaders = std::collections::BTreeSet::new();
    for p in &orders.partitions {
        let mut distinct = p.replicas.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "replicas {:?} are distinct", p.replicas);
        assert_eq!(p.leader, Some(p.replicas[0]));
        assert_eq!(p.isr, p.replicas);
        leaders.insert(p.leader.unwrap());
    }
    assert_eq!(
        leaders.len(),
        4,
        "4 partitions are led by 4 different brokers"
    );
    for state in &states[1..] {
        assert_eq!(
            state.topics, states[0].topics,
            "every node holds the same topics"
        );
    }
    let metrics = cluster.handle(leader).metrics();
    assert_eq!(metrics.voters, vec![1, 2, 3]);
    assert_eq!(metrics.learners, vec![4]);

    let again = cluster.handle(2).propose(create("orders", 1, 1)).await;
    assert!(
        matches!(again, Err(BrokerError::TopicExists { .. })),
        "{again:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_and_catches_up_after_restart() {
    // Snapshots every 5 entries: the restarted node must be brought up by a snapshot.
    let mut cluster = Cluster::start("127.0.0.3", 3, 0, 5).await;
    let old = cluster.leader(Duration::from_secs(5)).await;
    cluster
        .all_states(Duration::from_secs(5), "3 registered brokers", |s| {
            unfenced(s) == 3
        })
        .await;
    cluster
        .handle(old)
        .propose(create("before", 3, 3))
        .await
        .unwrap();

    let killed_last_index = cluster.handle(old).metrics().last_log_index.unwrap();
    let killed = cluster.kill(old).await;
    let new = cluster.leader(Duration::from_secs(5)).await;
    assert_ne!(new, old);
    let survivor = *cluster.nodes.keys().next().unwrap();
    for i in 0..12 {
        cluster
            .handle(survivor)
            .propose(create(&format!("after-{i}"), 1, 1))
            .await
            .unwrap();
    }

    let purged = wait_for(
        Duration::from_secs(5),
        "the leader to purge its log",
        || {
            cluster
                .handle(new)
                .metrics()
                .purged_index
                .filter(|p| *p > killed_last_index)
        },
    )
    .await;
    assert!(purged > killed_last_index, "catching up needs a snapshot");
    cluster.restart(killed).await;
    let reference = cluster.handle(new).clone();
    wait_for(
        Duration::from_secs(10),
        "the restarted node to catch up",
        || {
            let mine = cluster.handle(old).current();
            let theirs = reference.current();
            (mine.topics == theirs.topics && mine.brokers == theirs.brokers).then_some(())
        },
    )
    .await;
    assert_eq!(cluster.handle(old).current().topics.len(), 13);
    assert!(
        cluster.handle(old).metrics().snapshot_index >= Some(purged),
        "the restarted node installed the leader's snapshot"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_broker_is_fenced_and_its_partitions_move_within_the_isr() {
    let cluster = Cluster::start("127.0.0.4", 3, 1, 1000).await;
    cluster.leader(Duration::from_secs(5)).await;
    cluster
        .all_states(Duration::from_secs(5), "4 registered brokers", |s| {
            unfenced(s) == 4
        })
        .await;
    cluster.handle(1).propose(create("t", 4, 2)).await.unwrap();
    cluster
        .all_states(Duration::from_secs(5), "topic t", |s| {
            s.topics.contains_key("t")
        })
        .await;
    let before = cluster.handle(1).current().topics["t"].clone();
    let led: Vec<usize> = (0..4)
        .filter(|i| before.partitions[*i].leader == Some(4))
        .collect();
    assert!(!led.is_empty());

    let silent_since = Instant::now();
    cluster.handle(4).stop_heartbeats();
    cluster
        .all_states(SESSION + Duration::from_secs(3), "broker 4 fenced", |s| {
            s.brokers[&4].fenced
        })
        .await;
    assert!(
        silent_since.elapsed() < SESSION + Duration::from_secs(3),
        "fenced within session timeout + slack"
    );
    let after = cluster.handle(2).current().topics["t"].clone();
    for i in &led {
        let (old, new) = (&before.partitions[*i], &after.partitions[*i]);
        let leader = new.leader.expect("a new leader from the ISR");
        assert_ne!(leader, 4);
        assert!(
            old.isr.contains(&leader),
            "{leader} was in the ISR {:?}",
            old.isr
        );
        assert_eq!(new.leader_epoch, old.leader_epoch + 1);
        assert!(!new.isr.contains(&4));
    }

    // The deposed leader's ISR change under its old epoch is refused.
    let p = led[0];
    let stale = cluster
        .handle(4)
        .propose(Command::AlterIsr {
            topic: "t".into(),
            partition: p as u32,
            leader_id: 4,
            leader_epoch: before.partitions[p].leader_epoch,
            new_isr: vec![4],
        })
        .await;
    assert!(
        matches!(stale, Err(BrokerError::StaleLeaderEpoch { .. })),
        "{stale:?}"
    );
    assert_eq!(cluster.handle(1).current().topics["t"], after);

    // Heartbeating again unfences it.
    cluster
        .handle(4)
        .start_heartbeats(registration(4, cluster.nodes[&4].addr));
    cluster
        .all_states(Duration::from_secs(5), "broker 4 unfenced", |s| {
            !s.brokers[&4].fenced
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_quorum_fails_proposals_clearly_and_keeps_serving_state() {
    let mut cluster = Cluster::start("127.0.0.5", 3, 0, 1000).await;
    cluster.leader(Duration::from_secs(5)).await;
    cluster
        .all_states(Duration::from_secs(5), "3 registered brokers", |s| {
            unfenced(s) == 3
        })
        .await;
    cluster
        .handle(3)
        .propose(create("kept", 2, 2))
        .await
        .unwrap();
    cluster
        .all_states(Duration::from_secs(5), "topic kept", |s| {
            s.topics.contains_key("kept")
        })
        .await;

    // Keep the leader: the hard case, it still believes it leads but cannot commit.
    let survivor = cluster.leader(Duration::from_secs(5)).await;
    for id in [1, 2, 3].into_iter().filter(|id| *id != survivor) {
        cluster.kill(id).await;
    }
    let started = Instant::now();
    let err = cluster
        .handle(survivor)
        .propose(create("lost", 1, 1))
        .await
        .expect_err("no quorum, no commit");
    let took = started.elapsed();
    assert!(
        took < REQUEST_TIMEOUT + Duration::from_secs(2),
        "failed within the bound, took {took:?}"
    );
    assert!(
        matches!(
            err,
            BrokerError::ControllerUnavailable {
                reachable: 1,
                voters: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(
            "the controller quorum of region test has no leader: 1 of 3 voters reachable"
        ),
        "{err}"
    );
    let state = cluster.handle(survivor).state().borrow().clone();
    assert!(state.topics.contains_key("kept"));
    assert!(!state.topics.contains_key("lost"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_recovers_committed_state_from_its_own_dir() {
    let mut cluster = Cluster::start("127.0.0.6", 1, 0, 1000).await;
    cluster.leader(Duration::from_secs(5)).await;
    cluster
        .all_states(Duration::from_secs(5), "broker registered", |s| {
            unfenced(s) == 1
        })
        .await;
    cluster
        .handle(1)
        .propose(create("durable", 2, 1))
        .await
        .unwrap();
    let before = cluster.handle(1).current();
    let term_before = cluster.handle(1).metrics().term;

    let node = cluster.kill(1).await;
    cluster.restart(node).await;
    // Nobody else holds the data: it can only come from the node's own sled dir.
    cluster
        .all_states(
            Duration::from_secs(5),
            "the committed topic after restart",
            |s| s.topics == before.topics,
        )
        .await;
    cluster.leader(Duration::from_secs(5)).await;
    assert!(
        cluster.handle(1).metrics().term >= term_before,
        "the persisted vote is kept: terms never go backwards"
    );
    assert!(cluster.handle(1).metrics().last_log_index >= Some(before.applied_index));
    cluster
        .handle(1)
        .propose(create("next", 1, 1))
        .await
        .unwrap();
    assert!(cluster.handle(1).current().topics.contains_key("next"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controlled_shutdown_moves_leadership_before_the_broker_stops() {
    let cluster = Cluster::start("127.0.0.7", 3, 0, 1000).await;
    cluster.leader(Duration::from_secs(5)).await;
    cluster
        .all_states(Duration::from_secs(5), "3 registered brokers", |s| {
            unfenced(s) == 3
        })
        .await;
    cluster.handle(1).propose(create("t", 3, 3)).await.unwrap();
    cluster
        .all_states(Duration::from_secs(5), "topic t", |s| {
            s.topics.contains_key("t")
        })
        .await;
    let before = cluster.handle(1).current().topics["t"].clone();

    // Broker 2 is still running (and may even be the active controller).
    cluster.handle(2).controlled_shutdown().await.unwrap();
    cluster
        .all_states(Duration::from_secs(5), "broker 2 fenced everywhere", |s| {
            s.brokers[&2].fenced
        })
        .await;
    let after = cluster.handle(2).current();
    for (old, new) in before.partitions.iter().zip(&after.topics["t"].partitions) {
        assert_ne!(new.leader, Some(2), "{new:?}");
        assert!(!new.isr.contains(&2));
        if old.leader == Some(2) {
            assert_eq!(new.leader_epoch, old.leader_epoch + 1);
        }
    }
    // It stopped heartbeating, so it stays fenced.
    tokio::time::sleep(SESSION).await;
    assert!(cluster.handle(1).current().brokers[&2].fenced);
    cluster.shutdown().await;
}

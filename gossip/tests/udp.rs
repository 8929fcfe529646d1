//! Real UDP: members on distinct loopback addresses (127.0.0.11..15), ephemeral ports.

use std::net::SocketAddr;
use std::time::Duration;

use gossip::{
    Gossip, GossipConfig, GossipHandle, Keyring, MemberState, MembershipEvent, NodeIdentity, Role,
};
use rand::SeedableRng;

const OLD: [u8; 32] = [0x11; 32];
const NEW: [u8; 32] = [0x22; 32];

/// LAN preset at loopback speed: the same protocol, shorter periods, so the
/// whole scenario fits in the test budget.
fn fast() -> GossipConfig {
    let mut c = GossipConfig::lan(5);
    c.foca.probe_period = Duration::from_millis(500);
    c.foca.probe_rtt = Duration::from_millis(200);
    c.foca.suspect_to_down_after = Duration::from_secs(2);
    if let Some(p) = c.foca.periodic_gossip.as_mut() {
        p.frequency = Duration::from_millis(100);
    }
    if let Some(p) = c.foca.periodic_announce_to_down_members.as_mut() {
        p.frequency = Duration::from_secs(2);
    }
    c.state_resync_every = Duration::from_secs(1);
    c
}

fn ident(i: u8, incarnation: u64) -> NodeIdentity {
    let addr: SocketAddr = format!("127.0.0.{}:0", 10 + i).parse().unwrap();
    let mut id = NodeIdentity::new(format!("m{i}"), "eu", Role::Broker, addr);
    id.incarnation = incarnation;
    id
}

async fn start(id: NodeIdentity, keys: &[[u8; 32]]) -> GossipHandle {
    Gossip::start(id, Keyring::from_keys(keys).unwrap(), fast())
        .await
        .expect("start member")
}

async fn poll(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !ok() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

async fn eventually(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_of(h: &GossipHandle, addr: SocketAddr) -> Option<(MemberState, u64)> {
    h.members()
        .into_iter()
        .find(|m| m.identity.gossip_addr == addr)
        .map(|m| (m.state, m.incarnation))
}

fn alive(h: &GossipHandle) -> usize {
    h.members()
        .iter()
        .filter(|m| m.state == MemberState::Alive)
        .count()
}

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_join_kill_rejoin_partition_and_heal_over_udp() {
    let mut members = Vec::new();
    for i in 1..=5 {
        members.push(Some(start(ident(i, 1), &[OLD]).await));
    }
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.as_ref().unwrap().addr()).collect();
    let mut events = members[0].as_ref().unwrap().subscribe();
    for m in &members[1..] {
        m.as_ref().unwrap().join(&addrs[..1]).await.unwrap();
    }
    eventually("all 5 see 5 alive", LIMIT, || {
        members.iter().flatten().all(|m| alive(m) == 5)
    })
    .await;

    // shared state written on one member shows up on all
    members[2]
        .as_ref()
        .unwrap()
        .set("flow/eu->us", "paused")
        .await
        .unwrap();
    eventually("shared state converged", LIMIT, || {
        members
            .iter()
            .flatten()
            .all(|m| m.get("flow/eu->us").as_deref() == Some(&b"paused"[..]))
    })
    .await;

    // kill member 5 (index 4): task and socket dropped, no goodbye
    let victim = addrs[4];
    members[4].take().unwrap().kill().await;
    eventually("m5 down everywhere", LIMIT, || {
        members
            .iter()
            .flatten()
            .all(|m| matches!(state_of(m, victim), Some((MemberState::Down, 1))))
    })
    .await;
    let mut saw_down = false;
    while let Ok(e) = events.try_recv() {
        saw_down |= matches!(e, MembershipEvent::Down(ref m) if m.identity.gossip_addr == victim);
    }
    assert!(saw_down, "subscriber on m1 never got Down for m5");

    // rejoin on the same address with a higher incarnation
    let mut id = ident(5, 2);
    id.gossip_addr = victim;
    let back = start(id, &[OLD]).await;
    back.join(&addrs[..1]).await.unwrap();
    members[4] = Some(back);
    eventually("m5 alive again with incarnation 2", LIMIT, || {
        members.iter().flatten().all(|m| alive(m) == 5)
            && members[..4]
                .iter()
                .flatten()
                .all(|m| state_of(m, victim) == Some((MemberState::Alive, 2)))
    })
    .await;

    // partition {m1,m2} | {m3,m4,m5} in the shells
    let (a, b) = addrs.split_at(2);
    for (i, m) in members.iter().flatten().enumerate() {
        let other = if i < 2 { b } else { a };
        m.block(other).await.unwrap();
    }
    eventually("each side sees only itself alive", LIMIT, || {
        members
            .iter()
            .flatten()
            .enumerate()
            .all(|(i, m)| alive(m) == if i < 2 { 2 } else { 3 })
    })
    .await;
    let filtered: u64 = members
        .iter()
        .flatten()
        .map(|m| m.stats().datagrams_dropped_filtered)
        .sum();
    assert!(filtered > 0, "partition filter dropped nothing");

    for m in members.iter().flatten() {
        m.unblock_all().await.unwrap();
    }
    let healed = poll(Duration::from_secs(30), || {
        members.iter().flatten().all(|m| alive(m) == 5)
    })
    .await;
    let views: Vec<_> = members
        .iter()
        .flatten()
        .map(|m| {
            (
                m.addr(),
                m.members()
                    .into_iter()
                    .map(|x| (x.identity.gossip_addr, x.state, x.incarnation))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert!(healed, "not healed within 30 s; views: {views:#?}");

    // graceful leave is seen as such
    let leaver = addrs[1];
    members[1].take().unwrap().leave().await.unwrap();
    eventually("m2's leave seen", LIMIT, || {
        members
            .iter()
            .flatten()
            .all(|m| matches!(state_of(m, leaver), Some((MemberState::Down, _))))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_wrong_key_datagrams_are_dropped_and_counted() {
    let target = start(ident(6, 1), &[NEW]).await;
    let raw = tokio::net::UdpSocket::bind("127.0.0.16:0").await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);

    let wrong = Keyring::from_keys(&[[0x99; 32]])
        .unwrap()
        .seal(b"hello", &mut rng);
    raw.send_to(&wrong, target.addr()).await.unwrap();
    let mut tampered = Keyring::from_keys(&[NEW]).unwrap().seal(b"hello", &mut rng);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    raw.send_to(&tampered, target.addr()).await.unwrap();
    raw.send_to(b"not gossip", target.addr()).await.unwrap();
    eventually("2 auth drops and 1 malformed counted", LIMIT, || {
        let s = target.stats();
        s.datagrams_dropped_auth == 2 && s.datagrams_dropped_malformed == 1
    })
    .await;

    // a member holding a different key cannot join, and its traffic is counted
    let outsider = start(ident(7, 1), &[[0x99; 32]]).await;
    outsider.join(&[target.addr()]).await.unwrap();
    eventually("outsider's announces dropped", LIMIT, || {
        target.stats().datagrams_dropped_auth >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alive(&target), 1, "an outsider with the wrong key got in");
    assert_eq!(
        alive(&outsider),
        1,
        "the outsider learned about the cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_with_only_the_old_key_joins_during_rotation() {
    let mut rotated = Vec::new();
    for i in 8..=10 {
        rotated.push(start(ident(i, 1), &[NEW, OLD]).await);
    }
    let seed = rotated[0].addr();
    for m in &rotated[1..] {
        m.join(&[seed]).await.unwrap();
    }
    let old = start(ident(11, 1), &[OLD]).await;
    old.join(&[seed]).await.unwrap();
    eventually("all 4 see 4 alive across the rotation", LIMIT, || {
        rotated
            .iter()
            .chain(std::iter::once(&old))
            .all(|m| alive(m) == 4)
    })
    .await;
}

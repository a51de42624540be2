//! Multi-node replication over real gRPC on loopback: three nodes, each with its own RocksDB
//! in its own temp dir.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use engram_raft::{GroupId, RaftError};

const T: Duration = Duration::from_secs(30);

/// Every acknowledged (group, memory id) must be stored on every listed replica.
fn assert_all_present(c: &TestCluster, acked: &BTreeMap<GroupId, Vec<String>>, on: &[usize]) {
    for (&gid, ids) in acked {
        for &i in on {
            let state = c.host(i).group(gid).expect("hosted").state().clone();
            let stored: BTreeSet<String> = state.record_ids("mem").unwrap().into_iter().collect();
            for id in ids {
                assert!(
                    stored.contains(id),
                    "acknowledged memory {id} of group {gid} is missing on node {}",
                    c.nodes[i].id
                );
            }
            assert_eq!(
                stored.len(),
                ids.len(),
                "group {gid} on node {} has extra records",
                c.nodes[i].id
            );
        }
    }
}

/// One write of one new memory to every group; records what was acknowledged.
async fn write_round(
    c: &TestCluster,
    groups: &[GroupId],
    n: &mut u64,
    acked: &mut BTreeMap<GroupId, Vec<String>>,
    last_index: &mut BTreeMap<GroupId, u64>,
) {
    for &g in groups {
        let m = *n;
        *n += 1;
        let ack = c
            .write(g, upsert("mem", vec![memory(m, "u")]), T)
            .await
            .unwrap();
        acked.entry(g).or_default().push(format!("m{m}"));
        last_index.insert(g, ack.index);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_groups_survive_kill_restart_and_a_wiped_node() {
    let mut t = test_timing();
    t.heartbeat_ms = 200;
    t.election_min_ms = 1000;
    t.election_max_ms = 2000;
    // No automatic compaction in this test: a briefly absent replica must catch up from the
    // log; before the wiped node returns, every leader compacts explicitly (`compact`).
    let mut c = TestCluster::start(3, t).await;
    let groups: Vec<GroupId> = (1..=100).collect();
    c.create_groups(groups.clone(), &[0, 1, 2]).await;
    for &g in &groups {
        c.leader(g, T).await;
    }
    let mut acked: BTreeMap<GroupId, Vec<String>> = BTreeMap::new();
    let mut last: BTreeMap<GroupId, u64> = BTreeMap::new();
    let mut n = 0u64;
    for &g in &groups {
        c.write(g, create_collection("mem"), T).await.unwrap();
    }
    write_round(&c, &groups, &mut n, &mut acked, &mut last).await;
    for (&g, &ix) in &last {
        c.wait_applied(g, ix, &[0, 1, 2], T).await;
    }
    assert_all_present(&c, &acked, &[0, 1, 2]);

    // Kill the node leading the most groups; writes continue on every group.
    let mut leads = [0usize; 3];
    for &g in &groups {
        leads[c.leader(g, T).await] += 1;
    }
    let victim = (0..3).max_by_key(|&i| leads[i]).unwrap();
    assert!(leads[victim] > 0);
    c.kill(victim).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    write_round(&c, &groups, &mut n, &mut acked, &mut last).await;
    for (&g, &ix) in &last {
        c.wait_applied(g, ix, &survivors, T).await;
    }
    assert_all_present(&c, &acked, &survivors);

    // Restart: briefly down, it catches up from the log.
    c.restart(victim).await;
    for (&g, &ix) in &last {
        c.wait_applied(g, ix, &[victim], T).await;
        let m = c.host(victim).group(g).unwrap().metrics();
        assert!(
            m.snapshot.is_none(),
            "group {g}: a brief absence must not need a snapshot"
        );
    }
    assert_all_present(&c, &acked, &[0, 1, 2]);

    // Another node loses its disk while writes go on long enough to compact the logs past it.
    let wiped = (victim + 1) % 3;
    let keep: Vec<usize> = (0..3).filter(|&i| i != wiped).collect();
    c.kill(wiped).await;
    for _ in 0..10 {
        write_round(&c, &groups, &mut n, &mut acked, &mut last).await;
    }
    // Compaction is asynchronous; make sure every leader has compacted past the lost node.
    for &g in &groups {
        let leader = c.leader(g, T).await;
        c.host(leader).compact(g, T).await.unwrap();
    }
    std::fs::remove_dir_all(&c.nodes[wiped].dir).unwrap();
    // It comes back empty, as a new node: ids are never reused.
    let fresh = c.add_node().await;
    let (old_id, fresh_id) = (c.nodes[wiped].id, c.nodes[fresh].id);
    let voters: BTreeSet<u64> = keep
        .iter()
        .map(|&i| c.nodes[i].id)
        .chain([fresh_id])
        .collect();
    for &g in &groups {
        c.host(fresh).create_group(g).await.unwrap();
        let leader = c.leader(g, T).await;
        c.host(leader)
            .add_learner(g, fresh_id, c.peer(fresh))
            .await
            .unwrap();
        c.host(leader)
            .change_voters(g, voters.clone())
            .await
            .unwrap();
        let m = c.host(leader).group(g).unwrap().metrics();
        let members: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        assert_eq!(
            members, voters,
            "group {g}: node {old_id} should be replaced by {fresh_id}"
        );
    }
    let on = [keep[0], keep[1], fresh];
    for (&g, &ix) in &last {
        c.wait_applied(g, ix, &on, T).await;
        // The metrics trail the install slightly.
        let deadline = tokio::time::Instant::now() + T;
        while c.host(fresh).group(g).unwrap().metrics().snapshot.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "group {g}: the wiped node should catch up by snapshot"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_all_present(&c, &acked, &on);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_service_refuses_calls_without_the_peer_token() {
    use engram_api::peer::peer_client::PeerClient;
    use engram_api::peer::RaftBatchRequest;
    let c = TestCluster::start(1, test_timing()).await;
    let mut client = PeerClient::connect(format!("http://{}", c.nodes[0].addr))
        .await
        .unwrap();
    let err = client
        .raft_batch(RaftBatchRequest {
            from_node: 99,
            messages: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(RaftBatchRequest {
        from_node: 99,
        messages: vec![],
    });
    req.metadata_mut().insert(
        engram_raft::network::PEER_TOKEN_HEADER,
        "client-api-key".parse().unwrap(),
    );
    assert_eq!(
        client.raft_batch(req).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_refuse_writes_and_name_the_leader() {
    let c = TestCluster::start(3, test_timing()).await;
    c.create_groups([5], &[0, 1, 2]).await;
    let leader = c.leader(5, T).await;
    let follower = (leader + 1) % 3;
    // The follower names the leader once it has heard from it (the leader's first append).
    c.host(follower)
        .wait_leader(5, T)
        .await
        .expect("follower learns the leader");
    match c.host(follower).write(5, create_collection("mem")).await {
        Err(RaftError::NotLeader {
            leader: Some((id, _)),
            ..
        }) => {
            assert_eq!(id, c.nodes[leader].id)
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_linearizable_on_the_leader_and_bounded_on_followers() {
    let c = TestCluster::start(3, test_timing()).await;
    c.create_groups([9], &[0, 1, 2]).await;
    c.write(9, create_collection("mem"), T).await.unwrap();
    let ack = c
        .write(9, upsert("mem", vec![memory(1, "u")]), T)
        .await
        .unwrap();
    let leader = c.leader(9, T).await;
    let follower = (leader + 1) % 3;

    // Leader: read index confirms leadership; the acknowledged write is visible.
    let state = c.host(leader).linearizable(9).await.unwrap();
    assert!(state.get("mem", "m1").unwrap().is_some());
    // A follower refuses linearizable reads and names the leader.
    assert!(matches!(
        c.host(follower).linearizable(9).await,
        Err(RaftError::NotLeader { .. })
    ));

    // Follower read: says how stale it is; once applied it has the write.
    c.wait_applied(9, ack.index, &[follower], T).await;
    let (state, staleness) = c.host(follower).follower_read(9).unwrap();
    assert!(staleness.applied_index >= ack.index);
    assert!(staleness.known_committed >= staleness.applied_index);
    let since = staleness
        .since_leader_contact
        .expect("a follower that applied a write has heard from its leader");
    assert!(since < Duration::from_secs(5), "stale contact: {since:?}");
    assert!(state.get("mem", "m1").unwrap().is_some());
    c.shutdown().await;
}

/// CheckQuorum: a leader that has lost contact with a majority of its group refuses writes
/// and linearizable reads with a retryable `Unavailable` soon after (instead of holding them
/// until the caller gives up), and serves again once a majority is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_refuses_instead_of_hanging() {
    let mut c = TestCluster::start(3, test_timing()).await;
    c.create_groups([11], &[0, 1, 2]).await;
    c.write(11, create_collection("mem"), T).await.unwrap();
    let leader = c.leader(11, T).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &others {
        c.kill(i).await;
    }
    // Generous bound: the refusal comes about one election timeout after the last contact;
    // without the check the write would wait forever.
    let write = tokio::time::timeout(
        Duration::from_secs(15),
        c.host(leader).write(11, upsert("mem", vec![memory(1, "u")])),
    )
    .await
    .expect("the write must not hang on a leader without a quorum");
    match write {
        Err(e @ RaftError::Unavailable { .. }) => {
            assert_eq!(e.code(), engram_api::ErrorCode::ShardUnavailable);
            assert!(e.to_string().contains("majority"), "{e}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let read = tokio::time::timeout(Duration::from_secs(15), c.host(leader).linearizable(11))
        .await
        .expect("a linearizable read must not hang either");
    assert!(matches!(read, Err(RaftError::Unavailable { .. })), "{read:?}");
    // A majority back: writes are served again (by whichever node leads then).
    c.restart(others[0]).await;
    c.write(11, upsert("mem", vec![memory(2, "u")]), T)
        .await
        .expect("writes resume once a majority is back");
    c.shutdown().await;
}

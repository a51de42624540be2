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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_groups_survive_a_node_kill_and_restart() {
    let mut t = test_timing();
    t.heartbeat_ms = 200;
    t.election_min_ms = 1000;
    t.election_max_ms = 2000;
    let mut c = TestCluster::start(3, t).await;
    let groups: Vec<GroupId> = (1..=100).collect();
    c.create_groups(groups.clone(), &[0, 1, 2]).await;
    for &g in &groups {
        c.leader(g, T).await;
    }
    let mut acked: BTreeMap<GroupId, Vec<String>> = BTreeMap::new();
    let mut n = 0u64;
    let mut last_index: BTreeMap<GroupId, u64> = BTreeMap::new();
    for &g in &groups {
        c.write(g, create_collection("mem"), T).await.unwrap();
        let ack = c
            .write(g, upsert("mem", vec![memory(n, "u")]), T)
            .await
            .unwrap();
        acked.entry(g).or_default().push(format!("m{n}"));
        last_index.insert(g, ack.index);
        n += 1;
    }
    for (&g, &ix) in &last_index {
        c.wait_applied(g, ix, &[0, 1, 2], T).await;
    }
    assert_all_present(&c, &acked, &[0, 1, 2]);

    // Kill the node leading the most groups.
    let mut leads = [0usize; 3];
    for &g in &groups {
        leads[c.leader(g, T).await] += 1;
    }
    let victim = (0..3).max_by_key(|&i| leads[i]).unwrap();
    assert!(leads[victim] > 0);
    c.kill(victim).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();

    // Writes continue on every group.
    for &g in &groups {
        let ack = c
            .write(g, upsert("mem", vec![memory(n, "u")]), T)
            .await
            .unwrap();
        acked.entry(g).or_default().push(format!("m{n}"));
        last_index.insert(g, ack.index);
        n += 1;
    }
    for (&g, &ix) in &last_index {
        c.wait_applied(g, ix, &survivors, T).await;
    }
    assert_all_present(&c, &acked, &survivors);

    // Restart: it catches up from the log.
    c.restart(victim).await;
    for (&g, &ix) in &last_index {
        c.wait_applied(g, ix, &[victim], T).await;
    }
    assert_all_present(&c, &acked, &[0, 1, 2]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_rejoins_under_a_new_id_via_snapshot() {
    let mut t = test_timing();
    t.snapshot_every_entries = 20;
    t.keep_after_snapshot = 5;
    let mut c = TestCluster::start(3, t).await;
    let groups: Vec<GroupId> = vec![11, 12, 13];
    c.create_groups(groups.clone(), &[0, 1, 2]).await;
    let mut acked: BTreeMap<GroupId, Vec<String>> = BTreeMap::new();
    for &g in &groups {
        c.write(g, create_collection("mem"), T).await.unwrap();
    }
    // Node 3 goes away; enough writes follow that the log is compacted past it.
    c.kill(2).await;
    let mut n = 0;
    for round in 0..60 {
        for &g in &groups {
            let batch: Vec<_> = (0..3).map(|k| memory(n * 3 + k, "u")).collect();
            c.write(g, upsert("mem", batch), T).await.unwrap();
            for k in 0..3 {
                acked.entry(g).or_default().push(format!("m{}", n * 3 + k));
            }
            n += 1;
        }
        let _ = round;
    }
    // Its disk is gone: it comes back empty, as a new node (ids are never reused).
    std::fs::remove_dir_all(&c.nodes[2].dir).unwrap();
    let fresh = c.add_node().await;
    let fresh_id = c.nodes[fresh].id;
    let old_id = c.nodes[2].id;
    for &g in &groups {
        c.host(fresh).create_group(g).await.unwrap();
        let leader = c.leader(g, T).await;
        c.host(leader)
            .add_learner(g, fresh_id, c.peer(fresh))
            .await
            .unwrap();
        let voters: BTreeSet<u64> = [c.nodes[0].id, c.nodes[1].id, fresh_id].into();
        c.host(leader).change_voters(g, voters).await.unwrap();
        let m = c.host(leader).group(g).unwrap().metrics();
        let members: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        assert!(!members.contains(&old_id));
        assert!(members.contains(&fresh_id));
    }
    for &g in &groups {
        let ix = c
            .write(g, upsert("mem", vec![memory(100_000 + g, "u")]), T)
            .await
            .unwrap()
            .index;
        acked
            .entry(g)
            .or_default()
            .push(format!("m{}", 100_000 + g));
        c.wait_applied(g, ix, &[0, 1, fresh], T).await;
        let m = c.host(fresh).group(g).unwrap().metrics();
        assert!(
            m.snapshot.is_some(),
            "group {g}: the new replica should have caught up by snapshot"
        );
    }
    let on = [0, 1, fresh];
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

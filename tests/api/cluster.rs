//! Redis Cluster specifics: keys spread over every master, a failover that tessera rides out
//! without a restart, and WAIT for replicas. (The conformance suite and the cross-instance
//! races run on a cluster too, in their own modules.)

use std::time::{Duration, Instant};

use crate::helpers::{Backend, RedisCluster, RedisServer, Spawn, TestApp, Token};

fn checker(user: &str) -> String {
    Token::user("acme", user).role("otp.check", "acme").sign()
}

/// An instance on `cluster` that answers a change only once one replica has it (the replay
/// marker is on the replica before an acceptance is answered).
async fn waiting_for_one_replica(cluster: &RedisCluster) -> TestApp {
    Spawn::new(Backend::Cluster)
        .external_redis(cluster.seeds())
        .with(|s| {
            s.redis.wait_replicas = 1;
            s.store.timeout_ms = 1_000;
            // No lockout: an attempt answered UNAVAILABLE during a failover may still have
            // counted its failure, and five of them would lock the factor, turning the 503s
            // the tests expect into "locked". (A lock that must reach the replica:
            // store_edges.rs, every_acknowledged_change_waits_for_the_replica.)
            s.lockout.max_otp_attempts = 0;
        })
        .start()
        .await
}

#[actix_web::test]
async fn users_spread_over_every_master_and_each_works() {
    let app = Spawn::new(Backend::Cluster).start().await;
    let cluster = app.cluster.clone().unwrap();
    for n in 0..24 {
        let user = format!("user-{n}");
        let token = checker(&user);
        let secret = app.ready_for_login(&token).await;
        app.check(&token, &user, &app.code(&secret, 0))
            .await
            .assert_ok();
        app.list(&token).await.assert_ok();
    }
    // Each user is one hash (beside it, in its slot, the stream of its events); 24 hashes
    // over 3 masters leave none empty unless routing is broken (a key written to the wrong
    // node would have been refused with MOVED, not stored).
    let per_master: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|node| {
            let hashes = node.cli(&["--scan", "--pattern", "tessera:{*}"]).unwrap();
            hashes.lines().count() as u64
        })
        .collect();
    assert_eq!(per_master.iter().sum::<u64>(), 24, "{per_master:?}");
    assert!(per_master.iter().all(|keys| *keys > 0), "{per_master:?}");
}

#[actix_web::test]
async fn a_killed_master_fails_over_and_no_code_is_accepted_twice() {
    let mut cluster = RedisCluster::start(3, 1);
    let app = waiting_for_one_replica(&cluster).await;
    let alice = checker("alice");
    let secret = app.ready_for_login(&alice).await;
    let spent = app.code(&secret, 0);
    app.check(&alice, "alice", &spent).await.assert_ok();

    let key = "tessera:{acme:alice}";
    let dead_port = {
        let master = cluster.master_of(key);
        let port = master.port;
        master.kill();
        port
    };

    // While the replica is promoted: the spent code is never accepted again, and every other
    // answer is a replay (the marker survived) or UNAVAILABLE (fail closed).
    let mut unavailable = 0;
    let mut promoted = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !promoted && Instant::now() < deadline {
        let answer = app.check(&alice, "alice", &spent).await;
        assert_ne!(
            answer.status.as_u16(),
            200,
            "a spent code was accepted again"
        );
        if answer.status.as_u16() == 400 {
            answer.assert_error(400, 3, "EVENT-8isk2");
            promoted = true;
        } else {
            answer.assert_error(503, 14, "TESSERA-unav1");
            unavailable += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(promoted, "tessera never recovered from the failover");
    assert!(
        unavailable > 0,
        "the failover was not observed: the key's master was not the killed node"
    );
    let new_master = cluster.master_of(key).port;
    assert_ne!(new_master, dead_port);

    // The promoted node has no replica yet: with wait_replicas = 1 an accepted code cannot be
    // made durable, so it is not reported accepted (fail closed) — though the primary spent it.
    app.clock.advance_secs(30);
    let unreplicated = app.code(&secret, 0);
    app.check(&alice, "alice", &unreplicated)
        .await
        .assert_error(503, 14, "TESSERA-unav1");

    // The old master returns as the new master's replica; tessera is not restarted.
    cluster.restart(dead_port);
    cluster.wait_until_served(Duration::from_secs(30));
    app.check(&alice, "alice", &unreplicated)
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.clock.advance_secs(30);
    let next = app.code(&secret, 0);
    app.check(&alice, "alice", &next).await.assert_ok();
    app.check(&alice, "alice", &next)
        .await
        .assert_error(400, 3, "EVENT-8isk2");
}

#[actix_web::test]
async fn waiting_for_a_replica_that_does_not_exist_fails_closed() {
    // A lone server has no replica: WAIT 1 is never satisfied. No change is then reported
    // done, though the primary made it; a wrong code (no marker, no lock) is answered as usual.
    let redis = std::sync::Arc::new(RedisServer::start());
    let clock = std::sync::Arc::new(tessera::clock::ManualClock::new(
        tessera::domain::UnixMicros::from_secs(crate::helpers::PINNED_SECS),
    ));
    let waiting = Spawn::new(Backend::Redis)
        .redis(redis.clone())
        .clock(clock.clone())
        .with(|s| {
            s.redis.wait_replicas = 1;
            s.store.timeout_ms = 300;
        })
        .start()
        .await;
    // An instance that does not wait enrolls, so that the test knows the secret.
    let plain = Spawn::new(Backend::Redis)
        .redis(redis)
        .clock(clock)
        .start()
        .await;
    let alice = checker("alice");
    waiting
        .add(&alice)
        .await
        .assert_error(503, 14, "TESSERA-unav1");
    let added = plain.add(&alice).await;
    let secret = added.body["secret"].as_str().unwrap().to_owned();
    waiting
        .verify(&alice, &waiting.code(&secret, 0))
        .await
        .assert_error(503, 14, "TESSERA-unav1");
    // The primary did commit it: the enrollment is complete, though it was not confirmed.
    waiting
        .verify(&alice, &waiting.code(&secret, 0))
        .await
        .assert_error(400, 9, "COMMAND-qx4ls");
    waiting
        .check(&alice, "alice", "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    waiting.clock.advance_secs(30);
    waiting
        .check(&alice, "alice", &waiting.code(&secret, 0))
        .await
        .assert_error(503, 14, "TESSERA-unav1");
}

#[actix_web::test]
async fn a_change_during_a_slot_migration_waits_for_the_replicas_of_the_node_that_made_it() {
    // While a slot migrates, its old master answers ASK for the keys it has handed over and
    // stays the slot's master in every client's map. A change then runs on the new node, and
    // its WAIT must count the new node's replicas, not the old master's.
    let mut cluster = RedisCluster::start(3, 1);
    let app = waiting_for_one_replica(&cluster).await;
    let alice = checker("alice");
    let secret = app.ready_for_login(&alice).await;
    app.check(&alice, "alice", &app.code(&secret, 0))
        .await
        .assert_ok();

    let key = "tessera:{acme:alice}";
    let source = cluster.master_of(key).port;
    let role = |node: &RedisServer| node.cli(&["INFO", "replication"]);
    let target = cluster
        .nodes
        .iter()
        .find(|node| node.port != source && role(node).is_some_and(|i| i.contains("role:master")))
        .map(|node| node.port)
        .expect("another master");
    // The target loses its replica: a change made there cannot be made durable.
    let target_replica = cluster
        .nodes
        .iter()
        .position(|node| role(node).is_some_and(|i| i.contains(&format!("master_port:{target}\r"))))
        .expect("the target has a replica");
    cluster.nodes[target_replica].kill();
    let node = |port: u16| cluster.nodes.iter().find(|n| n.port == port).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !role(node(target)).is_some_and(|i| i.contains("connected_slaves:0")) {
        assert!(
            Instant::now() < deadline,
            "the target still counts its replica"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Move every key of the user's slot to the target, and leave the slot migrating.
    let slot = node(source).cli(&["CLUSTER", "KEYSLOT", key]).unwrap();
    let slot = slot.trim();
    let id = |port: u16| {
        node(port)
            .cli(&["CLUSTER", "MYID"])
            .unwrap()
            .trim()
            .to_owned()
    };
    let (source_id, target_id) = (id(source), id(target));
    node(target)
        .cli(&["CLUSTER", "SETSLOT", slot, "IMPORTING", &source_id])
        .unwrap();
    node(source)
        .cli(&["CLUSTER", "SETSLOT", slot, "MIGRATING", &target_id])
        .unwrap();
    let keys = node(source)
        .cli(&["CLUSTER", "GETKEYSINSLOT", slot, "100"])
        .unwrap();
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(keys.contains(&key), "{keys:?}");
    let target_port = target.to_string();
    let mut migrate = vec![
        "MIGRATE",
        "127.0.0.1",
        &target_port,
        "",
        "0",
        "5000",
        "KEYS",
    ];
    migrate.extend(keys.iter().copied());
    let migrated = node(source).cli(&migrate).unwrap();
    assert_eq!(migrated.trim(), "OK");

    // The code is spent on the target, which no replica follows: not reported accepted.
    app.clock.advance_secs(30);
    let code = app.code(&secret, 0);
    app.check(&alice, "alice", &code)
        .await
        .assert_error(503, 14, "TESSERA-unav1");
    app.check(&alice, "alice", &code)
        .await
        .assert_error(400, 3, "EVENT-8isk2");
}

//! What `tessera rekey` needs of the store: every primary (one server, or every master of a
//! cluster), a walk over each one's user hashes with SCAN, and the compare-and-set that
//! puts a re-sealed secret in place (`lua/reseal.lua`).

use std::time::Instant;

use redis::cluster_routing::SingleNodeRoutingInfo;

use super::connections::Connection;
use super::{RedisStore, redis_key, user_of_key};
use crate::store::{StoreError, UserKey};

/// A server that holds a share of the keys: the one server, or a cluster master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Primary {
    Server,
    ClusterMaster { host: String, port: u16 },
}

impl std::fmt::Display for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server => f.write_str("the server"),
            Self::ClusterMaster { host, port } => write!(f, "master {host}:{port}"),
        }
    }
}

impl Primary {
    fn routing(&self) -> SingleNodeRoutingInfo {
        match self {
            Self::Server => SingleNodeRoutingInfo::Random,
            Self::ClusterMaster { host, port } => SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            },
        }
    }
}

/// A user's record as a rekey reads it: whose, the enrollment's sealed secret if there is
/// one, and the ids of the seal keys its recovery codes were hashed under (one per code).
pub struct SealedRecord {
    pub user: UserKey,
    pub sealed_secret: Option<Vec<u8>>,
    pub recovery_code_keys: Vec<String>,
}

/// What the compare-and-set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resealed {
    Done,
    /// The record changed since it was read (re-enrolled, removed): left alone.
    Changed,
}

impl RedisStore {
    /// Every primary: the server, or each master of the cluster (from `CLUSTER NODES`).
    pub async fn primaries(&self, until: Instant) -> Result<Vec<Primary>, StoreError> {
        let connection = self.connections.shared(until).await?;
        let Connection::Cluster(_) = connection else {
            return Ok(vec![Primary::Server]);
        };
        let nodes: String = self
            .query_any_node(redis::cmd("CLUSTER").arg("NODES").clone(), until)
            .await?;
        Ok(cluster_masters(&nodes))
    }

    /// One page of the walk over `primary`'s user hashes, from `cursor` (0 to start): the
    /// records found and the next cursor (0: done). SCAN may return a key twice; the
    /// compare-and-set makes a second visit harmless.
    pub async fn scan_sealed(
        &self,
        primary: &Primary,
        cursor: u64,
        count: usize,
        until: Instant,
    ) -> Result<(u64, Vec<SealedRecord>), StoreError> {
        let pattern = format!("{}:{{*", glob_escape(&self.prefix));
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count)
            .arg("TYPE")
            .arg("hash");
        let routing = primary.routing();
        let (next, keys): (u64, Vec<String>) = self
            .on_shared(until, |mut connection: Connection| async move {
                connection.query_routed(scan, routing).await
            })
            .await?;
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(user) = user_of_key(&self.prefix, &key) else {
                continue;
            };
            let mut read = redis::cmd("HGETALL");
            read.arg(&key);
            let mut fields: std::collections::HashMap<String, Vec<u8>> = self
                .on_shared(until, |mut connection: Connection| async move {
                    read.query_async(&mut connection).await
                })
                .await?;
            // "r:<key id>:<hex>": the key id is what a rotation needs to know.
            let recovery_code_keys: Vec<String> = fields
                .keys()
                .filter_map(|field| field.strip_prefix("r:")?.split_once(':'))
                .map(|(key_id, _)| key_id.to_owned())
                .collect();
            let sealed_secret = fields.remove("k");
            if sealed_secret.is_some() || !recovery_code_keys.is_empty() {
                records.push(SealedRecord {
                    user,
                    sealed_secret,
                    recovery_code_keys,
                });
            }
        }
        Ok((next, records))
    }

    /// Puts `resealed` in place of `read` if the record still holds `read`, acknowledged by
    /// `wait_replicas` replicas like every other change. The one change without an audit
    /// event: the same secret under another key, made by an operator's run, not a request.
    pub async fn reseal(
        &self,
        user: &UserKey,
        read: &[u8],
        resealed: &[u8],
        deadline: Instant,
    ) -> Result<Resealed, StoreError> {
        let until = self.until(deadline);
        let redis_deadline = self.redis_deadline(until).await?.to_string();
        let args: [&[u8]; 3] = [redis_deadline.as_bytes(), read, resealed];
        let reply = self
            .run(
                self.change_lane(),
                &self.scripts.reseal,
                &[&self.key(user)],
                &args,
                until,
                |reply| reply.status == "ok",
            )
            .await?;
        match reply.status.as_str() {
            "ok" => Ok(Resealed::Done),
            "changed" => Ok(Resealed::Changed),
            _ => Err(reply.unexpected()),
        }
    }

    /// The key of `user` (for reports).
    pub fn key_of(&self, user: &UserKey) -> String {
        redis_key(&self.prefix, user)
    }
}

/// The masters of `CLUSTER NODES` that are not failing: `<id> <ip:port@bus[,host]> <flags> …`.
fn cluster_masters(nodes: &str) -> Vec<Primary> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let (host, port) = address.split('@').next()?.rsplit_once(':')?;
            Some(Primary::ClusterMaster {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port: port.parse().ok()?,
            })
        })
        .collect()
}

/// `prefix` as a SCAN pattern that matches it literally.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002,redis-2 master,fail - 0 0 3 connected
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 [::1]:7004@17004 master - 0 0 4 connected 10923-16383";
        assert_eq!(
            cluster_masters(nodes),
            vec![
                Primary::ClusterMaster {
                    host: "127.0.0.1".into(),
                    port: 7000
                },
                Primary::ClusterMaster {
                    host: "127.0.0.1".into(),
                    port: 7001
                },
                Primary::ClusterMaster {
                    host: "::1".into(),
                    port: 7004
                },
            ]
        );
    }

    #[test]
    fn the_prefix_is_matched_literally() {
        assert_eq!(glob_escape("tessera"), "tessera");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}

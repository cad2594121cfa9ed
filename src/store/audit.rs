//! The audit trail as the store keeps it.
//!
//! Each user's events are a list beside the user's hash, in the same slot
//! (`<prefix>:{<org>:<user>}:events`, newest first), appended by the very script that makes
//! the change (`lua/audit.lua`): no change without its event, no event without its change.
//! An organization's own events (its policy changes) are a list in the `{policies}` slot.
//! An event's id there is `<sequence>-<n>`: the change's sequence and the event's place in
//! the change, so ids grow with the user's changes.
//!
//! The organization's feed (`<prefix>:audit:{<org>}`) lives in a slot of its own, which no
//! user's script can reach under Redis Cluster: it is assembled after the fact by copying
//! from those lists (`tenant::audit_feed`). The feed keeps, in its own slot, how far it
//! copied each source (`<prefix>:audit:{<org>}:copied`), and the copy appends only what lies
//! past that, in one script: each event reaches the feed once and in its user's order, and
//! the feed holds nothing that a user's list does not.
//!
//! An element of a user's list is the event's fields joined by newlines (`event_of_entry`).
//! The feed is a stream, whose fields are: `t` the kind, `q` the change's sequence, `at` the
//! replica's time (Unix µs), `rid` the request id, `by`/`bo` the acting user and
//! organization, `ip` the client address as recorded (absent: none), `u` the user (absent for
//! the organization's own events) and `src` the event's id in its source list.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{StoreError, UserKey};
use crate::domain::UnixMicros;
use crate::domain::audit::{AuditEvent, Author, EventKind, Retention};

/// A change's moment and author: its date, and what its event records and keeps.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub now: UnixMicros,
    pub actor: Arc<Author>,
    pub retention: Retention,
}

impl Stamp {
    /// The stamp as the scripts take it (ARGV[2], `lua/audit.lua`): the events a user keeps,
    /// their maximum age in milliseconds, then the part of every event's element that is the
    /// stamp's (now, request id, acting user and organization, address), joined here once so
    /// that the script only prepends the id, kind and sequence. Lines are separated by a
    /// newline, which no field holds (ids have no control characters, request ids are tokens,
    /// addresses are addresses).
    pub fn script_arg(&self) -> String {
        let actor = &self.actor;
        let fields = [
            self.retention.max_events_per_user.to_string(),
            (self.retention.max_age_micros() / 1000).to_string(),
            self.now.0.to_string(),
            actor.request_id.to_string(),
            actor.user.to_string(),
            actor.org.to_string(),
            actor.address.as_deref().unwrap_or_default().to_owned(),
        ];
        debug_assert!(fields.iter().all(|field| !field.contains('\n')));
        fields.join("\n")
    }
}

/// A list the organization's feed copies from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FeedSource {
    User(UserKey),
    /// The organization's own events (policy changes).
    Policies(Arc<str>),
}

impl FeedSource {
    pub fn org(&self) -> &Arc<str> {
        match self {
            Self::User(key) => &key.org,
            Self::Policies(org) => org,
        }
    }

    /// Its name in the feed's record of how far it copied each source.
    pub fn cursor_field(&self) -> String {
        match self {
            Self::User(key) => format!("u:{}", key.user),
            Self::Policies(_) => "p".to_owned(),
        }
    }

    pub fn user(&self) -> Option<&Arc<str>> {
        match self {
            Self::User(key) => Some(&key.user),
            Self::Policies(_) => None,
        }
    }
}

/// Sources of one organization's feed, copied together (`Store::copy_to_feed`): one read of
/// how far the feed copied each, one append of all their new events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSources {
    org: Arc<str>,
    sources: Vec<FeedSource>,
}

impl FeedSources {
    /// The sources of `notes` by organization, each once, with the retention of its
    /// organization's latest note; an organization's in groups of at most `at_most`.
    pub fn by_org(
        notes: impl IntoIterator<Item = (FeedSource, Retention)>,
        at_most: usize,
    ) -> Vec<(FeedSources, Retention)> {
        let mut orgs: HashMap<Arc<str>, (Vec<FeedSource>, Retention)> = HashMap::new();
        // Each source once, by hash: a batch holds hundreds of notes of one organization,
        // and a search of its list for each was the copier's largest cost (BENCHMARKS, "The
        // audit feed's copier").
        let mut seen: HashSet<FeedSource> = HashSet::new();
        for (source, retention) in notes {
            let (sources, latest) = orgs
                .entry(source.org().clone())
                .or_insert_with(|| (Vec::new(), retention));
            *latest = retention;
            if seen.insert(source.clone()) {
                sources.push(source);
            }
        }
        let at_most = at_most.max(1);
        let mut groups = Vec::with_capacity(orgs.len());
        for (org, (sources, retention)) in orgs {
            for group in sources.chunks(at_most) {
                let sources = group.to_vec();
                groups.push((
                    FeedSources {
                        org: org.clone(),
                        sources,
                    },
                    retention,
                ));
            }
        }
        groups
    }

    pub fn org(&self) -> &Arc<str> {
        &self.org
    }

    pub fn sources(&self) -> &[FeedSource] {
        &self.sources
    }
}

/// What a copy into a feed did: how many events it appended, and the sources it left out
/// because their events do not read back (`StoreError::Corrupt`, `NewerFormat`): no retry
/// mends those, and they must not hold up the others.
#[derive(Debug, Default)]
pub struct FeedCopy {
    pub appended: usize,
    pub left_out: Vec<(FeedSource, StoreError)>,
}

/// An event's id, `<sequence>-<n>` in a source or `<ms>-<n>` in the feed (a stream), as two
/// numbers that order like the events.
pub fn entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, n) = id.split_once('-')?;
    Some((ms.parse().ok()?, n.parse().ok()?))
}

/// An event from an element of a source list (`lua/audit.lua`): id, kind, sequence, time,
/// request id, acting user, acting organization, address ("" for none), one per line.
pub fn event_of_entry(entry: &str, user: Option<Arc<str>>) -> Result<AuditEvent, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("audit event {entry:?}"));
    let fields: Vec<&str> = entry.split('\n').collect();
    let [
        id,
        kind,
        sequence,
        at,
        request_id,
        actor_user,
        actor_org,
        address,
    ] = fields[..]
    else {
        return Err(corrupt());
    };
    if entry_id(id).is_none() {
        return Err(corrupt());
    }
    Ok(AuditEvent {
        id: id.to_owned(),
        kind: EventKind::parse(kind).ok_or_else(corrupt)?,
        user,
        at: UnixMicros(at.parse().map_err(|_| corrupt())?),
        sequence: sequence.parse().map_err(|_| corrupt())?,
        request_id: request_id.to_owned(),
        actor_user: actor_user.to_owned(),
        actor_org: actor_org.to_owned(),
        address: Some(address.to_owned()).filter(|address| !address.is_empty()),
    })
}

/// The fields the feed keeps of an event (without `u` and `src`).
pub fn feed_fields(event: &AuditEvent) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("t", event.kind.as_str().to_owned()),
        ("q", event.sequence.to_string()),
        ("at", event.at.0.to_string()),
        ("rid", event.request_id.clone()),
        ("by", event.actor_user.clone()),
        ("bo", event.actor_org.clone()),
    ];
    if let Some(address) = &event.address {
        fields.push(("ip", address.clone()));
    }
    fields
}

/// An event from a feed entry's fields (the feed names the user in `u`; `user` overrides
/// it).
pub fn event_from(
    id: String,
    fields: &HashMap<String, String>,
    user: Option<Arc<str>>,
) -> Result<AuditEvent, StoreError> {
    let field = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("event {id} has no {name}")))
    };
    let number = |name: &str| -> Result<i64, StoreError> {
        field(name)?
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("event {id}: {name} is not a number")))
    };
    let kind = EventKind::parse(&field("t")?)
        .ok_or_else(|| StoreError::Corrupt(format!("event {id}: unknown kind")))?;
    let user = user.or_else(|| fields.get("u").map(|user| Arc::from(user.as_str())));
    Ok(AuditEvent {
        kind,
        user,
        at: UnixMicros(number("at")?),
        sequence: u64::try_from(number("q")?).unwrap_or(0),
        request_id: field("rid")?,
        actor_user: field("by")?,
        actor_org: field("bo")?,
        address: fields.get("ip").cloned(),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_is_one_line_per_field() {
        let stamp = Stamp {
            now: UnixMicros(17),
            actor: Arc::new(Author {
                request_id: "r1".into(),
                user: "ops".into(),
                org: "acme".into(),
                address: None,
            }),
            retention: Retention {
                max_events_per_user: 5,
                max_events: 9,
                max_age_days: 1,
            },
        };
        assert_eq!(stamp.script_arg(), "5\n86400000\n17\nr1\nops\nacme\n");
    }

    #[test]
    fn a_list_element_reads_back() {
        let entry = "1796-2\nlocked\n1796\n17\nr1\nops\nacme\n";
        let event = event_of_entry(entry, Some("alice".into())).unwrap();
        assert_eq!(event.id, "1796-2");
        assert_eq!(event.kind, EventKind::Locked);
        assert_eq!((event.sequence, event.at), (1796, UnixMicros(17)));
        assert_eq!(event.address, None);
        assert!(event_of_entry("1796-2\nlocked", None).is_err());
        assert!(event_of_entry("x\nlocked\n1\n1\nr\nb\no\n", None).is_err());
    }

    #[test]
    fn entry_ids_order_like_the_events() {
        assert!(entry_id("10-2") > entry_id("9-30"));
        assert!(entry_id("10-10") > entry_id("10-9"));
        assert_eq!(entry_id("x-1"), None);
    }

    #[test]
    fn an_event_reads_back() {
        let event = AuditEvent {
            id: "5-0".into(),
            kind: EventKind::Locked,
            user: Some("alice".into()),
            at: UnixMicros(3),
            sequence: 8,
            request_id: "r".into(),
            actor_user: "alice".into(),
            actor_org: "acme".into(),
            address: Some("10.0.0.0/24".into()),
        };
        let fields: HashMap<String, String> = feed_fields(&event)
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        assert_eq!(
            event_from("5-0".into(), &fields, Some("alice".into())).unwrap(),
            event
        );
    }
}

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
//! the feed holds nothing that a user's list did not.
//!
//! A check's script also answers the events it wrote and the id of the list's event before
//! them (`Written`), and its note carries them: the copy appends them without reading the
//! list while the feed's mark of that list is that id, and reads the list past the mark
//! otherwise (a note lost or late, a change made on another replica). One exception to "did
//! not": a refused check's change that a failover lost before any replica had it (such a
//! change is not waited for) may reach the feed from its note, though the new master's list
//! lacks it; the feed then records the answer the client got.
//!
//! An element of a user's list is the event's fields joined by newlines (`event_of_entry`).
//! The feed is a stream, whose fields are: `t` the kind, `q` the change's sequence, `at` the
//! replica's time (Unix µs), `rid` the request id, `by`/`bo` the acting user and
//! organization, `ip` the client address as recorded (absent: none), `u` the user (absent for
//! the organization's own events) and `src` the event's id in its source list.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
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
    /// The stamp as the scripts take it (ARGV[2], `lua/audit.lua`) for a change to the list of
    /// `user` ("" for the organization's own events): the events a user keeps, their maximum
    /// age in milliseconds, the events the organization's feed keeps, the user, then the part
    /// of every event's element that is the stamp's (now, request id, acting user and
    /// organization, address), joined here once so that the script only prepends the id, kind
    /// and sequence. Lines are separated by a newline, which no field holds (ids have no
    /// control characters, request ids are tokens, addresses are addresses).
    pub fn script_arg(&self, user: &str) -> String {
        let actor = &self.actor;
        let fields = [
            self.retention.max_events_per_user.to_string(),
            (self.retention.max_age_micros() / 1000).to_string(),
            self.retention.max_events.to_string(),
            user.to_owned(),
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

/// What the organization's feed still needs of a change's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedDue {
    /// Nothing: the change appended them to the feed in its own step (Redis on one server,
    /// `lua/audit.lua`'s `hand_on`).
    Nothing,
    /// A copy from the user's list (`tenant::audit_feed`), of these events when the store
    /// answered them.
    Copy(Option<Written>),
}

/// The events one change wrote to its source, as its script answered them. The feed appends
/// them without reading the source again, while its mark of the source is the event before
/// them (`lua/feed_append.lua`); else they are read from the source like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The id of the source's newest event before them; `None`: the source held none.
    pub before: Option<String>,
    /// Oldest first; never empty.
    pub events: Vec<AuditEvent>,
}

impl Written {
    /// `next`'s events after these, when `next` directly follows them in the source.
    fn followed_by(mut self, next: Written) -> Option<Written> {
        let last = self.events.last().map(|event| &event.id);
        if next.before.as_ref() != last {
            return None;
        }
        self.events.extend(next.events);
        Some(self)
    }
}

/// A source with new events: how long its organization keeps them, and what the change
/// wrote, when its script answered that (`Written`).
#[derive(Debug, Clone)]
pub struct FeedNote {
    pub source: FeedSource,
    pub retention: Retention,
    pub written: Option<Written>,
}

/// Sources of one organization's feed, copied together (`Store::copy_to_feed`): in Redis one
/// script appends what the notes carried, and the sources without it are read first (one
/// read of the marks, one of each source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSources {
    org: Arc<str>,
    sources: Vec<FeedSource>,
    /// Per source, what its changes wrote, when the notes carried all of it.
    written: Vec<Option<Written>>,
}

impl FeedSources {
    /// The sources of `notes` by organization, each once, with the retention of its
    /// organization's latest note; an organization's in groups of at most `at_most`. A
    /// source noted twice keeps what its changes wrote only when the second change directly
    /// followed the first (notes of changes that raced may come in either order).
    pub fn by_org(
        notes: impl IntoIterator<Item = FeedNote>,
        at_most: usize,
    ) -> Vec<(FeedSources, Retention)> {
        struct Org {
            sources: Vec<FeedSource>,
            written: Vec<Option<Written>>,
            retention: Retention,
        }
        let mut orgs: HashMap<Arc<str>, Org> = HashMap::new();
        // Each source once, found by hash: a batch holds hundreds of notes of one
        // organization, and a search of its list for each was the copier's largest cost
        // (BENCHMARKS, "The audit feed's copier").
        let mut places: HashMap<FeedSource, usize> = HashMap::new();
        for note in notes {
            let org = orgs
                .entry(note.source.org().clone())
                .or_insert_with(|| Org {
                    sources: Vec::new(),
                    written: Vec::new(),
                    retention: note.retention,
                });
            org.retention = note.retention;
            match places.entry(note.source) {
                Entry::Occupied(place) => {
                    if let Some(written) = org.written.get_mut(*place.get()) {
                        *written = match (written.take(), note.written) {
                            (Some(first), Some(next)) => first.followed_by(next),
                            _ => None,
                        };
                    }
                }
                Entry::Vacant(place) => {
                    org.sources.push(place.key().clone());
                    org.written.push(note.written);
                    place.insert(org.sources.len() - 1);
                }
            }
        }
        let at_most = at_most.max(1);
        let mut groups = Vec::with_capacity(orgs.len());
        for (name, org) in orgs {
            // Moved into the groups, not cloned: `written` holds the notes' events.
            let (mut sources, mut written) = (org.sources.into_iter(), org.written.into_iter());
            loop {
                let group: Vec<FeedSource> = sources.by_ref().take(at_most).collect();
                if group.is_empty() {
                    break;
                }
                groups.push((
                    FeedSources {
                        org: name.clone(),
                        sources: group,
                        written: written.by_ref().take(at_most).collect(),
                    },
                    org.retention,
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

    /// Per source (in `sources`' order), what its changes wrote, when the notes carried it.
    pub fn written(&self) -> &[Option<Written>] {
        &self.written
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
        assert_eq!(
            stamp.script_arg("alice"),
            "5\n86400000\n9\nalice\n17\nr1\nops\nacme\n"
        );
        assert_eq!(
            stamp.script_arg(""),
            "5\n86400000\n9\n\n17\nr1\nops\nacme\n",
            "the organization's own events"
        );
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

    fn written(before: Option<&str>, ids: &[&str]) -> Written {
        let event = |id: &&str| {
            let entry = format!("{id}\nlocked\n1\n17\nr1\nops\nacme\n");
            event_of_entry(&entry, Some("alice".into())).unwrap()
        };
        Written {
            before: before.map(str::to_owned),
            events: ids.iter().map(event).collect(),
        }
    }

    /// A source noted twice in a batch keeps what its changes wrote only when the second
    /// change directly follows the first; a note without it, or out of order, leaves the
    /// source to be read.
    #[test]
    fn notes_of_one_source_keep_what_was_written_only_when_it_follows_on() {
        let alice = FeedSource::User(UserKey {
            org: "acme".into(),
            user: "alice".into(),
        });
        let note = |written| FeedNote {
            source: alice.clone(),
            retention: Retention::default(),
            written,
        };
        let first = written(Some("1-1"), &["2-1", "2-2"]);
        let next = written(Some("2-2"), &["3-1"]);
        let merged = |notes: Vec<FeedNote>| {
            let groups = FeedSources::by_org(notes, 32);
            assert_eq!(groups.len(), 1);
            assert_eq!(groups[0].0.sources(), std::slice::from_ref(&alice));
            groups[0].0.written()[0].clone()
        };
        assert_eq!(
            merged(vec![note(Some(first.clone())), note(Some(next.clone()))]),
            Some(written(Some("1-1"), &["2-1", "2-2", "3-1"]))
        );
        assert_eq!(
            merged(vec![note(Some(next.clone())), note(Some(first.clone()))]),
            None
        );
        assert_eq!(merged(vec![note(None), note(Some(next.clone()))]), None);
        assert_eq!(merged(vec![note(Some(first.clone())), note(None)]), None);
        let after_gap = written(Some("2-9"), &["3-1"]);
        assert_eq!(merged(vec![note(Some(first)), note(Some(after_gap))]), None);
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

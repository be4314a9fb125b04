//! Bounded heartbeats: what a host's beat carries when it runs many
//! replicas, and how a receiver puts its picture of the host back together.
//!
//! A host with at most [`BEAT_PAGE`] replicas sends them all in every beat
//! ([`BeatContent::Full`]), as it always did. A larger host sends only what
//! changed since the beat before ([`BeatContent::Changes`]: replicas whose
//! status, load or work changed, and the copies that stopped), at most
//! [`BEAT_PAGE`] replicas a beat: every change of state goes out at once,
//! in as many beats as it takes (so that a host starting thousands of
//! replicas confirms them all within a beat or two), load figures fill the
//! last beat's room and wait for the next beat where there is none. Its
//! whole set goes out now and then as a
//! snapshot of pages ([`BeatContent::Page`], in consecutive beats): at
//! start, when asked (a receiver that missed a beat asks on
//! [`crate::subjects::host_resync`]), when a new leader is announced, and
//! every [`SNAPSHOT_INTERVAL`]. Every beat numbers itself (`seq`) and
//! carries the count and a digest of the set the receiver should now hold,
//! so a receiver knows when its picture is whole. The digest is a sum of
//! one hash per replica, so both ends keep it up to date change by change
//! instead of hashing every replica on every beat.
//!
//! So a beat is at most [`BEAT_PAGE`] replicas (about 64 KiB) whatever a
//! host runs, plus a few shadow reports (a host sends at most 8, about
//! 2 KiB each). A host of `n` replicas sends about `c` replicas a second
//! where `c` is how many changed, plus `n` every [`SNAPSHOT_INTERVAL`].

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::{Heartbeat, ReplicaId, ReplicaStatus};

/// The most replicas one beat carries.
pub const BEAT_PAGE: usize = 128;

/// The most stopped copies one beat lists (each is a few dozen bytes).
pub const BEAT_STOPPED: usize = 512;

/// A large host sends its whole set at least this often, so that a
/// receiver that lost track catches up even without asking.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);

/// A host sends a snapshot asked for at most this often.
pub const SNAPSHOT_MIN_GAP: Duration = Duration::from_secs(1);

/// The header telling a beat's content without parsing it, so that a
/// receiver behind can skip every beat a later full one replaces.
pub const BEAT_HEADER: &str = "Shoal-Beat";

/// What a heartbeat's `replicas` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BeatContent {
    /// Every replica the host runs.
    #[default]
    Full,
    /// Page `page` (from 0) of `pages` of every replica, in order of id
    /// and revision. The pages of one snapshot come in consecutive beats.
    Page {
        /// Which page.
        page: u32,
        /// How many.
        pages: u32,
    },
    /// Only what changed since the beat before (`seq - 1`).
    Changes,
}

impl BeatContent {
    /// The value of [`BEAT_HEADER`] for a beat with this content.
    pub fn header(&self) -> &'static str {
        match self {
            BeatContent::Full => "full",
            BeatContent::Page { .. } => "page",
            BeatContent::Changes => "changes",
        }
    }
}

/// A copy of a replica: which, and at what revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CopyRef {
    /// Which replica.
    pub id: ReplicaId,
    /// Its revision.
    pub revision: u64,
}

fn copy_of(r: &ReplicaStatus) -> CopyRef {
    CopyRef {
        id: r.id.clone(),
        revision: r.revision,
    }
}

fn order(a: &ReplicaStatus, b: &ReplicaStatus) -> std::cmp::Ordering {
    (&a.id, a.revision).cmp(&(&b.id, b.revision))
}

/// A digest of `replicas` in everything but load and work: the wrapping sum
/// of each replica's [`replica_hash`], so it does not depend on order and
/// follows a change by taking the old hash away and adding the new.
pub fn digest(replicas: &[ReplicaStatus]) -> u64 {
    replicas
        .iter()
        .fold(0u64, |sum, r| sum.wrapping_add(replica_hash(r)))
}

/// One replica's part of a [`digest`]: FNV-1a of everything but load and
/// work, stable across builds, so hosts and schedulers of different
/// versions agree.
pub fn replica_hash(r: &ReplicaStatus) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that fields cannot run into each other.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(r.id.namespace.as_str().as_bytes());
    eat(r.id.app.as_str().as_bytes());
    eat(r.id.pod.as_str().as_bytes());
    eat(&r.id.index.to_le_bytes());
    eat(&r.revision.to_le_bytes());
    eat(&r.memory.to_le_bytes());
    // Derived from the enum itself: stable for as long as the enum is.
    eat(format!("{:?}", r.state).as_bytes());
    eat(&[u8::from(r.ready)]);
    eat(&r.restarts.to_le_bytes());
    eat(r.last_error.as_deref().unwrap_or("").as_bytes());
    hash
}

/// What a host remembers of the beats it sent, to send only changes.
#[derive(Debug, Default)]
pub struct BeatWriter {
    seq: u64,
    /// What receivers hold of this host, by copy, as of the last beat.
    sent: HashMap<CopyRef, ReplicaStatus>,
    /// The digest of `sent`.
    sent_digest: u64,
    /// The next beat must be a snapshot.
    snapshot_due: bool,
    /// When the last snapshot went out.
    last_snapshot: Option<std::time::Instant>,
}

impl BeatWriter {
    /// A writer whose first large beat is a snapshot.
    pub fn new() -> BeatWriter {
        BeatWriter {
            snapshot_due: true,
            ..BeatWriter::default()
        }
    }

    /// Asks for a snapshot in the next beat (no sooner than
    /// [`SNAPSHOT_MIN_GAP`] after the last one).
    pub fn want_snapshot(&mut self) {
        self.snapshot_due = true;
    }

    /// The beats to publish now, in order, for a host running `now`, each
    /// beat being `header` (everything but the replicas) with its part.
    pub fn beats(
        &mut self,
        header: &Heartbeat,
        mut now: Vec<ReplicaStatus>,
        at: std::time::Instant,
    ) -> Vec<Heartbeat> {
        now.sort_by(order);
        if now.len() <= BEAT_PAGE {
            self.hold(&now);
            return vec![self.beat(header, BeatContent::Full, now, Vec::new(), None)];
        }
        let snapshot = self.last_snapshot.is_none_or(|last| {
            let since = at.saturating_duration_since(last);
            since >= SNAPSHOT_INTERVAL || (self.snapshot_due && since >= SNAPSHOT_MIN_GAP)
        });
        if snapshot {
            self.snapshot_due = false;
            self.last_snapshot = Some(at);
            self.hold(&now);
            let digest = self.sent_digest;
            let pages: Vec<Vec<ReplicaStatus>> = now
                .chunks(BEAT_PAGE)
                .map(<[ReplicaStatus]>::to_vec)
                .collect();
            let count = u32::try_from(pages.len()).unwrap_or(u32::MAX);
            return pages
                .into_iter()
                .enumerate()
                .map(|(i, page)| {
                    let content = BeatContent::Page {
                        page: u32::try_from(i).unwrap_or(u32::MAX),
                        pages: count,
                    };
                    self.beat(header, content, page, Vec::new(), Some((now.len(), digest)))
                })
                .collect();
        }
        // Changes: every change of state, then load and work where there
        // is room; the rest of the load figures next time.
        let mut state_changes = Vec::new();
        let mut load_changes = Vec::new();
        for r in &now {
            match self.sent.get(&copy_of(r)) {
                Some(before) if before == r => {}
                Some(before) if before.same_apart_from_load(r) => load_changes.push(r),
                _ => state_changes.push(r),
            }
        }
        // What the last beat of state changes leaves free.
        let room = match state_changes.len() % BEAT_PAGE {
            0 if !state_changes.is_empty() => 0,
            used => BEAT_PAGE - used,
        };
        let changed: Vec<ReplicaStatus> = state_changes
            .into_iter()
            .chain(load_changes.into_iter().take(room))
            .cloned()
            .collect();
        let live: std::collections::HashSet<CopyRef> = now.iter().map(copy_of).collect();
        let mut stopped: Vec<CopyRef> = self
            .sent
            .keys()
            .filter(|c| !live.contains(*c))
            .take(BEAT_STOPPED)
            .cloned()
            .collect();
        let mut pages: Vec<Vec<ReplicaStatus>> = changed
            .chunks(BEAT_PAGE)
            .map(<[ReplicaStatus]>::to_vec)
            .collect();
        if pages.is_empty() {
            pages.push(Vec::new());
        }
        // The stopped copies go in the first beat.
        for c in &stopped {
            self.forget(c);
        }
        let mut beats = Vec::with_capacity(pages.len());
        for page in pages {
            for r in &page {
                self.remember(r.clone());
            }
            let summary = (self.sent.len(), self.sent_digest);
            let gone = std::mem::take(&mut stopped);
            beats.push(self.beat(header, BeatContent::Changes, page, gone, Some(summary)));
        }
        beats
    }

    /// Holds `now` as what receivers have.
    fn hold(&mut self, now: &[ReplicaStatus]) {
        self.sent = now.iter().map(|r| (copy_of(r), r.clone())).collect();
        self.sent_digest = digest(now);
    }

    /// Notes that receivers now hold `r`.
    fn remember(&mut self, r: ReplicaStatus) {
        self.sent_digest = self.sent_digest.wrapping_add(replica_hash(&r));
        if let Some(before) = self.sent.insert(copy_of(&r), r) {
            self.sent_digest = self.sent_digest.wrapping_sub(replica_hash(&before));
        }
    }

    /// Notes that receivers no longer hold copy `c`.
    fn forget(&mut self, c: &CopyRef) {
        if let Some(before) = self.sent.remove(c) {
            self.sent_digest = self.sent_digest.wrapping_sub(replica_hash(&before));
        }
    }

    fn beat(
        &mut self,
        header: &Heartbeat,
        content: BeatContent,
        replicas: Vec<ReplicaStatus>,
        stopped: Vec<CopyRef>,
        summary: Option<(usize, u64)>,
    ) -> Heartbeat {
        self.seq += 1;
        let (total, digest) = summary.unwrap_or_else(|| (replicas.len(), digest(&replicas)));
        Heartbeat {
            seq: self.seq,
            content,
            replicas,
            stopped,
            total: u32::try_from(total).unwrap_or(u32::MAX),
            digest,
            ..header.clone()
        }
    }
}

/// Why a receiver could not take a beat in: it should ask the host for a
/// snapshot ([`crate::subjects::host_resync`]) and wait for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeatGap {
    /// Changes came without the picture they apply to.
    #[error("changes came before any snapshot")]
    NoPicture,
    /// A beat was missed between the last one taken and this one.
    #[error("beat {got} came after beat {had}")]
    Missed {
        /// The last beat taken in.
        had: u64,
        /// The beat that came.
        got: u64,
    },
    /// After taking the beat in, the picture does not match its digest.
    #[error("the picture does not match the host's digest")]
    Diverged,
}

/// What taking a beat in did.
#[derive(Debug, Default)]
pub struct Taken {
    /// Each changed copy's status before the beat (none for a new one) and
    /// now.
    pub changed: Vec<(Option<ReplicaStatus>, ReplicaStatus)>,
    /// The copies that stopped, as they last were.
    pub stopped: Vec<ReplicaStatus>,
}

/// What a receiver keeps to put its picture of one host's replicas back
/// together from the host's beats. The picture itself (the replicas, in
/// order of id and revision) is the receiver's, passed to [`Self::take`].
#[derive(Debug, Clone, Default)]
pub struct BeatReader {
    /// The host process the picture is of (its start time).
    started_at_ms: u64,
    /// The last beat taken in.
    seq: u64,
    /// Whether the picture is whole.
    whole: bool,
    /// A snapshot being received: the next page's beat and the pages so far.
    snapshot: Option<(u64, Vec<ReplicaStatus>)>,
    /// The digest of the picture, kept up to date change by change.
    digest: u64,
}

impl BeatReader {
    /// Whether the picture is whole (the last beat applied cleanly).
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// Takes `beat` into `picture`. `Ok(None)`: a snapshot is still
    /// arriving. `Ok(Some(_))`: the picture is whole and changed as the
    /// value says. A gap leaves the picture as it was, marked not whole,
    /// until a snapshot arrives.
    pub fn take(
        &mut self,
        picture: &mut Vec<ReplicaStatus>,
        beat: &Heartbeat,
    ) -> Result<Option<Taken>, BeatGap> {
        if beat.started_at_ms != self.started_at_ms {
            // A new host process: nothing of the old one holds.
            *self = BeatReader {
                started_at_ms: beat.started_at_ms,
                ..BeatReader::default()
            };
        }
        let result = match beat.content {
            BeatContent::Full => {
                let mut now = beat.replicas.clone();
                now.sort_by(order);
                Ok(Some(self.replace(picture, now, beat.seq)))
            }
            BeatContent::Page { page, pages } => self.page(picture, beat, page, pages),
            BeatContent::Changes => self.changes(picture, beat),
        };
        if result.is_err() {
            self.whole = false;
            self.snapshot = None;
        }
        result
    }

    fn page(
        &mut self,
        picture: &mut Vec<ReplicaStatus>,
        beat: &Heartbeat,
        page: u32,
        pages: u32,
    ) -> Result<Option<Taken>, BeatGap> {
        if page == 0 {
            self.snapshot = Some((beat.seq, Vec::new()));
        }
        let Some((expected, mut got)) = self.snapshot.take() else {
            return Err(BeatGap::NoPicture);
        };
        if beat.seq != expected {
            return Err(BeatGap::Missed {
                had: expected.saturating_sub(1),
                got: beat.seq,
            });
        }
        got.extend(beat.replicas.iter().cloned());
        if page + 1 < pages {
            self.snapshot = Some((beat.seq + 1, got));
            return Ok(None);
        }
        got.sort_by(order);
        if got.len() != beat.total as usize || digest(&got) != beat.digest {
            return Err(BeatGap::Diverged);
        }
        Ok(Some(self.replace(picture, got, beat.seq)))
    }

    fn changes(
        &mut self,
        picture: &mut Vec<ReplicaStatus>,
        beat: &Heartbeat,
    ) -> Result<Option<Taken>, BeatGap> {
        if !self.whole {
            return Err(BeatGap::NoPicture);
        }
        if beat.seq != self.seq + 1 {
            return Err(BeatGap::Missed {
                had: self.seq,
                got: beat.seq,
            });
        }
        let mut taken = Taken::default();
        for c in &beat.stopped {
            if let Ok(i) =
                picture.binary_search_by(|r| (&r.id, r.revision).cmp(&(&c.id, c.revision)))
            {
                let gone = picture.remove(i);
                self.digest = self.digest.wrapping_sub(replica_hash(&gone));
                taken.stopped.push(gone);
            }
        }
        for r in &beat.replicas {
            self.digest = self.digest.wrapping_add(replica_hash(r));
            match picture.binary_search_by(|x| order(x, r)) {
                Ok(i) => {
                    let before = std::mem::replace(&mut picture[i], r.clone());
                    self.digest = self.digest.wrapping_sub(replica_hash(&before));
                    taken.changed.push((Some(before), r.clone()));
                }
                Err(i) => {
                    picture.insert(i, r.clone());
                    taken.changed.push((None, r.clone()));
                }
            }
        }
        self.seq = beat.seq;
        if picture.len() != beat.total as usize || self.digest != beat.digest {
            return Err(BeatGap::Diverged);
        }
        Ok(Some(taken))
    }

    /// Replaces `picture` with `now` (sorted), whole as of beat `seq`.
    fn replace(
        &mut self,
        picture: &mut Vec<ReplicaStatus>,
        now: Vec<ReplicaStatus>,
        seq: u64,
    ) -> Taken {
        let mut before: HashMap<CopyRef, ReplicaStatus> = std::mem::take(picture)
            .into_iter()
            .map(|r| (copy_of(&r), r))
            .collect();
        let changed = now
            .iter()
            .map(|r| (before.remove(&copy_of(r)), r.clone()))
            .collect();
        let mut stopped: Vec<ReplicaStatus> = before.into_values().collect();
        stopped.sort_by(order);
        self.digest = digest(&now);
        *picture = now;
        self.seq = seq;
        self.whole = true;
        self.snapshot = None;
        Taken { changed, stopped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Name;
    use crate::wire::{Capacity, HostId, ReplicaState};
    use std::time::Instant;

    fn header() -> Heartbeat {
        Heartbeat {
            host: HostId::new("h1").unwrap(),
            labels: Default::default(),
            capacity: Capacity {
                memory: 1 << 30,
                slots: 20_000,
            },
            http: None,
            started_at_ms: 7,
            replicas: Vec::new(),
            draining: false,
            seal_key: None,
            epoch: 0,
            seq: 0,
            content: BeatContent::Full,
            stopped: Vec::new(),
            total: 0,
            digest: 0,
            shadows: Vec::new(),
        }
    }

    fn replica(i: usize) -> ReplicaStatus {
        ReplicaStatus {
            id: ReplicaId {
                namespace: Name::new("default").unwrap(),
                app: Name::new(format!("a{i}")).unwrap(),
                pod: Name::new("web").unwrap(),
                index: 0,
            },
            revision: 1,
            memory: 1 << 20,
            state: ReplicaState::Running,
            ready: true,
            restarts: 0,
            last_error: None,
            load_milli: 0,
            stats: Default::default(),
        }
    }

    /// A receiver: its reader and its picture.
    #[derive(Default)]
    struct Receiver {
        reader: BeatReader,
        picture: Vec<ReplicaStatus>,
    }

    impl Receiver {
        fn is_whole(&self) -> bool {
            self.reader.is_whole()
        }

        fn replicas(&self) -> &[ReplicaStatus] {
            &self.picture
        }
    }

    fn take_all(receiver: &mut Receiver, beats: &[Heartbeat]) -> Result<(), BeatGap> {
        for b in beats {
            receiver.reader.take(&mut receiver.picture, b)?;
        }
        Ok(())
    }

    #[test]
    fn a_small_host_sends_everything_every_beat() {
        let mut writer = BeatWriter::new();
        let beats = writer.beats(&header(), (0..3).map(replica).collect(), Instant::now());
        assert_eq!(beats.len(), 1);
        assert_eq!(beats[0].content, BeatContent::Full);
        assert_eq!(beats[0].replicas.len(), 3);
    }

    #[test]
    fn a_large_host_sends_pages_then_bounded_changes_and_the_picture_holds() {
        let start = Instant::now();
        let mut writer = BeatWriter::new();
        let mut reader = Receiver::default();
        let mut now: Vec<ReplicaStatus> = (0..1000).map(replica).collect();
        let pages = writer.beats(&header(), now.clone(), start);
        assert_eq!(pages.len(), 1000usize.div_ceil(BEAT_PAGE));
        assert!(pages.iter().all(|b| b.replicas.len() <= BEAT_PAGE));
        take_all(&mut reader, &pages).unwrap();
        assert!(reader.is_whole());
        assert_eq!(reader.replicas().len(), 1000);

        // Nothing changed: an empty beat.
        let quiet = writer.beats(&header(), now.clone(), start + Duration::from_secs(1));
        assert_eq!(quiet.len(), 1);
        assert!(quiet[0].replicas.is_empty() && quiet[0].stopped.is_empty());
        take_all(&mut reader, &quiet).unwrap();

        // 300 change state, 5 stop, 200 change load only: every change of
        // state goes at once in bounded beats, load figures fill the room
        // left and the rest wait for the next beat.
        for r in now.iter_mut().take(300) {
            r.ready = false;
        }
        for r in now.iter_mut().skip(300).take(200) {
            r.load_milli = 7;
        }
        now.truncate(995);
        let first = writer.beats(&header(), now.clone(), start + Duration::from_secs(2));
        let sizes: Vec<usize> = first.iter().map(|b| b.replicas.len()).collect();
        assert_eq!(sizes, vec![BEAT_PAGE, BEAT_PAGE, BEAT_PAGE]);
        assert_eq!(first[0].stopped.len(), 5);
        assert!(first[1..].iter().all(|b| b.stopped.is_empty()));
        let state_changes = first
            .iter()
            .flat_map(|b| &b.replicas)
            .filter(|r| !r.ready)
            .count();
        assert_eq!(state_changes, 300);
        take_all(&mut reader, &first).unwrap();
        let next = writer.beats(&header(), now.clone(), start + Duration::from_secs(3));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].replicas.len(), 200 - (3 * BEAT_PAGE - 300));
        take_all(&mut reader, &next).unwrap();
        let mut expected = now.clone();
        expected.sort_by(order);
        assert_eq!(reader.replicas(), expected.as_slice());
        assert_eq!(reader.reader.digest, digest(&expected));
    }

    #[test]
    fn a_missed_beat_is_noticed_and_a_snapshot_mends_it() {
        let start = Instant::now();
        let mut writer = BeatWriter::new();
        let mut reader = Receiver::default();
        let mut now: Vec<ReplicaStatus> = (0..500).map(replica).collect();
        take_all(&mut reader, &writer.beats(&header(), now.clone(), start)).unwrap();
        now[7].restarts = 1;
        let lost = writer.beats(&header(), now.clone(), start + Duration::from_secs(1));
        assert_eq!(lost[0].replicas.len(), 1);
        now[8].restarts = 1;
        let next = writer.beats(&header(), now.clone(), start + Duration::from_secs(2));
        assert!(matches!(
            take_all(&mut reader, &next),
            Err(BeatGap::Missed { .. })
        ));
        assert!(!reader.is_whole());
        // The receiver asks; the next beat is a snapshot.
        writer.want_snapshot();
        let snapshot = writer.beats(&header(), now.clone(), start + Duration::from_secs(3));
        assert!(matches!(
            snapshot[0].content,
            BeatContent::Page { page: 0, .. }
        ));
        take_all(&mut reader, &snapshot).unwrap();
        assert!(reader.is_whole());
        let restarts = |i: usize| {
            reader
                .replicas()
                .iter()
                .find(|r| r.id == replica(i).id)
                .map(|r| r.restarts)
        };
        assert_eq!(
            (restarts(7), restarts(8), restarts(9)),
            (Some(1), Some(1), Some(0))
        );
    }

    #[test]
    fn a_restarted_host_starts_a_new_picture() {
        let mut reader = Receiver::default();
        let mut writer = BeatWriter::new();
        let now: Vec<ReplicaStatus> = (0..200).map(replica).collect();
        take_all(&mut reader, &writer.beats(&header(), now, Instant::now())).unwrap();
        let mut restarted = header();
        restarted.started_at_ms = 8;
        let mut writer = BeatWriter::new();
        let beats = writer.beats(&restarted, vec![replica(1)], Instant::now());
        take_all(&mut reader, &beats).unwrap();
        assert_eq!(reader.replicas().len(), 1);
    }

    #[test]
    fn a_beat_stays_under_its_bound_whatever_the_host_runs() {
        let mut writer = BeatWriter::new();
        let start = Instant::now();
        let mut now: Vec<ReplicaStatus> = (0..10_000).map(replica).collect();
        let pages = writer.beats(&header(), now.clone(), start);
        for r in &mut now {
            r.load_milli = 5;
        }
        let changes = writer.beats(&header(), now, start + Duration::from_secs(1));
        let largest = pages
            .iter()
            .chain(&changes)
            .map(|b| serde_json::to_vec(b).unwrap().len())
            .max()
            .unwrap();
        assert!(largest < 96 * 1024, "{largest} bytes");
    }
}

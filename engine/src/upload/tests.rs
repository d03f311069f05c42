//! Uploads on real files in temporary directories: threads, and other processes (this test
//! binary run again, see [`child_process`]).

use super::*;
use crate::hashing::MultiHasher;
use crate::session::write_all_at;
use crate::store::HashedDir;
use std::fs;
use std::io::{IoSlice, Write as _};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};

pub(crate) fn store(root: &Path, levels: &[usize]) -> UploadStore {
    UploadStore::new(SessionStore::new(
        HashedDir::new(root.join("data"), levels),
        HashedDir::new(root.join("state"), levels),
        0o600,
    ))
}

pub(crate) fn id(s: &str) -> SessionId {
    SessionId::parse(s.as_bytes()).unwrap()
}

pub(crate) fn meta(pairs: &[(&str, &[u8])]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

/// Writes `data` at `offset` through the claim and commits it, as a request whose body is
/// complete, without hashes.
pub(crate) fn put(claim: &Claim, offset: u64, data: &[u8]) -> Result<Recorded, UploadError> {
    write_all_at(claim.file(), offset, &[IoSlice::new(data)]).unwrap();
    claim.commit(done(offset, offset + data.len() as u64))
}

fn done(start: u64, end: u64) -> Commit {
    Commit {
        start,
        end,
        hashes: None,
        algorithms: Algorithms::NONE,
        finishing: true,
    }
}

fn checkpoint(start: u64, end: u64) -> Commit {
    Commit {
        finishing: false,
        ..done(start, end)
    }
}

fn set_state_age(st: &UploadStore, sid: &str, age: Duration) {
    let state = File::options()
        .write(true)
        .open(st.state_path(&id(sid)).unwrap())
        .unwrap();
    state.set_modified(SystemTime::now() - age).unwrap();
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = fs::read_dir(d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn digests_of(content: &[u8], algorithms: Algorithms) -> Digests {
    let mut h = MultiHasher::new(algorithms);
    h.update(content);
    h.finish()
}

#[test]
fn an_upload_is_created_and_opened_by_id() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1, 2]);
    let metadata = meta(&[
        ("filename", "Grüße.txt".as_bytes()),
        ("x:raw", &[0, 255, b'\n', b' ']),
        ("empty", b""),
    ]);
    let up = st
        .create(&id("abc123"), Some(10), metadata.clone())
        .unwrap();
    assert_eq!(up.id().as_str(), "abc123");
    assert_eq!(up.data_path(), tmp.join("data/3/12/abc123"));
    assert_eq!(up.state_path(), tmp.join("state/e/at/abc123.state"));
    assert_eq!(up.state().length, Some(10));
    assert_eq!(up.state().metadata, metadata);
    assert!(up.state().received.is_empty());
    assert_eq!(up.file().metadata().unwrap().len(), 0);
    assert_eq!(up.expires_at(), None);
    let text = fs::read_to_string(up.state_path()).unwrap();
    assert!(text.starts_with("ngx-upload-state 1\ntotal 10\nreceived \nfile "));
    assert!(text.contains("\nmeta x:raw AP8KIA==\n"), "{text}");

    let opened = st.open(&id("abc123")).unwrap();
    assert_eq!(opened.state(), up.state());
    assert_eq!(opened.current_state().unwrap(), *up.state());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn creating_an_existing_upload_is_a_conflict_and_changes_nothing() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let up = st
        .create(&id("dup1"), Some(4), meta(&[("a", b"1")]))
        .unwrap();
    put(&up.claim(0, Some(2)).unwrap(), 0, b"ab").unwrap();
    let state_before = fs::read(up.state_path()).unwrap();
    for length in [Some(4), Some(8), None, Some(0)] {
        let e = st.create(&id("dup1"), length, Metadata::new()).unwrap_err();
        assert!(matches!(e, UploadError::AlreadyExists), "{e}");
    }
    assert_eq!(fs::read(up.state_path()).unwrap(), state_before);
    assert_eq!(fs::read(up.data_path()).unwrap(), b"ab");
    // Even once complete (and so until it is handed off and forgotten).
    put(&up.claim(2, Some(2)).unwrap(), 2, b"cd").unwrap();
    assert!(matches!(
        st.create(&id("dup1"), Some(4), Metadata::new()),
        Err(UploadError::AlreadyExists)
    ));
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_missing_upload_is_not_found_and_nothing_is_created() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    assert!(matches!(st.open(&id("none1")), Err(UploadError::NotFound)));
    assert!(matches!(
        st.terminate(&id("none1")),
        Err(UploadError::NotFound)
    ));
    assert!(files_under(&tmp).is_empty());
    assert!(!tmp.join("data").exists() && !tmp.join("state").exists());
    // A data file alone (a crash before its state, or a hand-off's file) is no upload.
    fs::create_dir_all(tmp.join("data/1")).unwrap();
    fs::write(tmp.join("data/1/none1"), b"xyz").unwrap();
    assert!(matches!(st.open(&id("none1")), Err(UploadError::NotFound)));
    // Nor is a state without its data file.
    fs::create_dir_all(tmp.join("state/e")).unwrap();
    fs::write(
        tmp.join("state/e/none2.state"),
        b"ngx-upload-state 1\ntotal 3\nreceived 0-2\n",
    )
    .unwrap();
    assert!(matches!(st.open(&id("none2")), Err(UploadError::NotFound)));
    let st = store(&tmp, &[2, 2]);
    for e in [
        st.open(&id("abc")).unwrap_err(),
        st.create(&id("abc"), None, Metadata::new()).unwrap_err(),
    ] {
        assert!(matches!(e, UploadError::IdTooShort { need: 4 }), "{e}");
    }
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bad_lengths_and_metadata_are_refused_before_anything_is_created() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let e = st
        .create(&id("bad1"), Some(MAX_OFFSET + 1), Metadata::new())
        .unwrap_err();
    assert!(matches!(e, UploadError::LengthTooLarge { .. }), "{e}");
    for key in ["", "a b", "naïve", &"k".repeat(129)] {
        let e = st
            .create(&id("bad1"), None, meta(&[(key, b"v")]))
            .unwrap_err();
        assert!(matches!(e, UploadError::BadMetadataKey { .. }), "{e}");
    }
    let big = vec![0u8; MAX_METADATA_LEN];
    let e = st
        .create(&id("bad1"), None, meta(&[("k", &big)]))
        .unwrap_err();
    assert!(
        matches!(e, UploadError::MetadataTooLarge { len, max } if len == MAX_METADATA_LEN + 1 && max == MAX_METADATA_LEN),
        "{e}"
    );
    assert!(files_under(&tmp).is_empty());
    // Exactly at the limit is fine, and it round-trips.
    let at_limit = vec![0xa5u8; MAX_METADATA_LEN - 1];
    st.create(&id("bad1"), Some(MAX_OFFSET), meta(&[("k", &at_limit)]))
        .unwrap();
    assert_eq!(
        st.open(&id("bad1")).unwrap().state().metadata["k"],
        at_limit
    );
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn threads_racing_to_create_one_upload_get_exactly_one() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    for round in 0..20 {
        let sid = format!("race{round}");
        let barrier = Arc::new(Barrier::new(6));
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let (st, barrier, sid) = (st.clone(), barrier.clone(), sid.clone());
                std::thread::spawn(move || {
                    let m = meta(&[("creator", &[t])]);
                    barrier.wait();
                    st.create(&id(&sid), Some(100), m)
                        .map(|u| u.state().clone())
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        assert!(results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, UploadError::AlreadyExists)));
        // The state on disk is the winner's.
        assert_eq!(st.open(&id(&sid)).unwrap().state(), won[0]);
    }
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn create_replaces_what_is_not_a_live_upload() {
    let tmp = crate::store::tests::tempdir();
    let mut st = store(&tmp, &[]);
    st.sessions.expire_after = Some(Duration::from_secs(3600));
    let data = |sid: &str| st.data_path(&id(sid)).unwrap();
    // A data file without a state: left by a crash, or by a hand-off.
    fs::create_dir_all(tmp.join("data")).unwrap();
    fs::write(data("orphan"), b"left over").unwrap();
    let before = file_identity(&File::open(data("orphan")).unwrap()).unwrap();
    let up = st.create(&id("orphan"), Some(3), Metadata::new()).unwrap();
    assert_eq!(fs::read(up.data_path()).unwrap(), b"");
    // A new file (its inode number may be the old one's again, not its birth time).
    assert_ne!(file_identity(up.file()).unwrap(), before);
    // A state naming another (earlier) data file.
    let old = st.create(&id("stale"), Some(3), Metadata::new()).unwrap();
    put(&old.claim(0, Some(3)).unwrap(), 0, b"old").unwrap();
    fs::remove_file(data("stale")).unwrap();
    fs::write(data("stale"), b"other file").unwrap();
    let new = st.create(&id("stale"), None, Metadata::new()).unwrap();
    assert!(new.state().received.is_empty() && new.state().length.is_none());
    // An expired upload: replaced, and its handles find it gone.
    let expired = st.create(&id("expired"), Some(3), Metadata::new()).unwrap();
    put(&expired.claim(0, Some(1)).unwrap(), 0, b"x").unwrap();
    set_state_age(&st, "expired", Duration::from_secs(7200));
    let fresh = st.create(&id("expired"), Some(5), Metadata::new()).unwrap();
    assert_eq!(fresh.state().length, Some(5));
    assert!(matches!(expired.claim(1, Some(1)), Err(UploadError::Gone)));
    assert!(matches!(expired.current_state(), Err(UploadError::Gone)));
    // But not an expired upload a request is still writing, nor a file being handed off
    // (its state already forgotten).
    let busy = st.create(&id("busy"), Some(3), Metadata::new()).unwrap();
    let claim = busy.claim(0, None).unwrap();
    set_state_age(&st, "busy", Duration::from_secs(7200));
    assert!(matches!(
        st.create(&id("busy"), Some(3), Metadata::new()),
        Err(UploadError::AlreadyExists)
    ));
    let rec = put(&claim, 0, b"abc").unwrap();
    assert!(rec.hand_off);
    busy.forget_state().unwrap();
    assert!(matches!(
        st.create(&id("busy"), Some(3), Metadata::new()),
        Err(UploadError::AlreadyExists)
    ));
    assert_eq!(fs::read(data("busy")).unwrap(), b"abc");
    drop(claim);
    // Once the hand-off is over, the id can be used again.
    st.create(&id("busy"), Some(3), Metadata::new()).unwrap();
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_damaged_state_is_reported_not_replaced() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let up = st.create(&id("dmg1"), Some(4), Metadata::new()).unwrap();
    fs::write(up.state_path(), b"garbage").unwrap();
    for e in [
        st.open(&id("dmg1")).unwrap_err(),
        st.create(&id("dmg1"), Some(4), Metadata::new())
            .unwrap_err(),
        up.claim(0, None).unwrap_err(),
    ] {
        assert!(matches!(e, UploadError::DamagedState(_)), "{e}");
    }
    assert_eq!(fs::read(up.state_path()).unwrap(), b"garbage");
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_deferred_length_is_declared_once_and_never_changed() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let up = st.create(&id("def1"), None, Metadata::new()).unwrap();
    assert_eq!(up.state().limit(), MAX_OFFSET);
    assert!(fs::read_to_string(up.state_path())
        .unwrap()
        .contains("\nlength deferred\n"));
    // A session reader cannot take it for a session.
    assert!(matches!(
        st.sessions().progress(&id("def1")),
        Err(crate::session::SessionError::DamagedState(_))
    ));
    put(&up.claim(0, None).unwrap(), 0, &[1; 100]).unwrap();
    put(&up.claim(150, Some(50)).unwrap(), 150, &[2; 50]).unwrap();
    let e = up.declare_length(199).unwrap_err();
    assert!(
        matches!(
            e,
            UploadError::LengthBelowHeld {
                held_end: 200,
                requested: 199
            }
        ),
        "{e}"
    );
    let e = up.declare_length(MAX_OFFSET + 1).unwrap_err();
    assert!(matches!(e, UploadError::LengthTooLarge { .. }), "{e}");
    let state = up.declare_length(200).unwrap();
    assert_eq!(state.length, Some(200));
    assert_eq!(up.declare_length(200).unwrap(), state);
    let e = up.declare_length(300).unwrap_err();
    assert!(
        matches!(
            e,
            UploadError::LengthAlreadyDeclared {
                declared: 200,
                requested: 300
            }
        ),
        "{e}"
    );
    // The declared length is a session's total now: any reader sees it.
    let p = st.sessions().progress(&id("def1")).unwrap().unwrap();
    assert_eq!(
        p.received.report(p.total).to_string(),
        "0-99/200,150-199/200"
    );
    // And it bounds claims.
    assert!(matches!(
        up.claim(190, Some(20)),
        Err(UploadError::BeyondLength {
            end: 210,
            length: Some(200)
        })
    ));
    let rest = up.claim(100, None).unwrap();
    assert_eq!((rest.start(), rest.end()), (100, 200));
    // A length of zero, declared late.
    let zero = st.create(&id("def0"), None, Metadata::new()).unwrap();
    assert!(!zero.state().is_complete());
    assert!(zero.declare_length(0).unwrap().is_complete());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_claim_past_a_new_length_stops_its_declaration_unless_it_is_the_declarers() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let up = st.create(&id("def2"), None, Metadata::new()).unwrap();
    let writer = up.claim(0, None).unwrap();
    assert_eq!(writer.end(), MAX_OFFSET);
    let e = up.declare_length(10).unwrap_err();
    assert!(
        matches!(e, UploadError::InFlight { first: 10, last } if last == MAX_OFFSET - 1),
        "{e}"
    );
    assert_eq!(up.current_state().unwrap().length, None);
    // The writer itself may declare it (tus: Upload-Length on the PATCH that carries it).
    writer.declare_length(10).unwrap();
    write_all_at(writer.file(), 0, &[IoSlice::new(&[7; 12])]).unwrap();
    let e = writer.commit(done(0, 12)).unwrap_err();
    assert!(
        matches!(
            e,
            UploadError::BeyondLength {
                end: 12,
                length: Some(10)
            }
        ),
        "{e}"
    );
    let rec = writer.commit(done(0, 10)).unwrap();
    assert!(rec.state.is_complete() && rec.hand_off);
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_deferred_upload_completes_only_once_its_length_is_declared() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let content: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    let algs = Algorithms::MD5 | Algorithms::SHA256;
    let up = st.create(&id("def3"), None, Metadata::new()).unwrap();
    for chunk in 0..3 {
        let a = chunk * 1000;
        let claim = up.claim_append(a as u64, None).unwrap();
        let mut hashes = claim.streaming_hash(algs);
        assert!(hashes.is_some(), "in order: hashed as it streams");
        let piece = &content[a..a + 1000];
        write_all_at(claim.file(), a as u64, &[IoSlice::new(piece)]).unwrap();
        hashes.as_mut().unwrap().advance(a as u64, piece);
        let rec = claim
            .commit(Commit {
                hashes,
                algorithms: algs,
                ..done(a as u64, a as u64 + 1000)
            })
            .unwrap();
        assert!(!rec.state.is_complete() && !rec.hand_off && rec.digests.is_none());
    }
    up.declare_length(3000).unwrap();
    let rec = up.finish(algs).unwrap();
    assert!(rec.state.is_complete() && rec.hand_off);
    assert_eq!(rec.digests.unwrap(), digests_of(&content, algs));
    // The hand-off is this handle's until it is dropped.
    let other = st.open(&id("def3")).unwrap();
    assert!(!other.finish(algs).unwrap().hand_off);
    drop(up);
    assert!(other.finish(algs).unwrap().hand_off);
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn an_empty_upload_is_complete_at_once() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let up = st.create(&id("zero1"), Some(0), Metadata::new()).unwrap();
    assert!(up.state().is_complete());
    assert!(fs::read_to_string(up.state_path())
        .unwrap()
        .contains("\nlength 0\n"));
    let rec = up.finish(Algorithms::ALL).unwrap();
    assert!(rec.hand_off);
    assert_eq!(rec.digests.unwrap(), digests_of(b"", Algorithms::ALL));
    // A write of nothing (a tus PATCH with an empty body) is fine, a byte is not.
    let claim = up.claim_append(0, Some(0)).unwrap();
    let rec = claim.commit(done(0, 0)).unwrap();
    assert!(rec.state.is_complete() && !rec.hand_off);
    assert!(matches!(
        up.claim(0, Some(1)),
        Err(UploadError::BeyondLength {
            end: 1,
            length: Some(0)
        })
    ));
    assert_eq!(up.file().metadata().unwrap().len(), 0);
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn claims_exclude_each_other_across_handles_and_threads() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let a = st.create(&id("cl1"), Some(1000), Metadata::new()).unwrap();
    let b = st.open(&id("cl1")).unwrap();
    let held = a.claim(100, Some(100)).unwrap();
    for (start, len) in [(150, Some(100)), (0, Some(101)), (199, Some(1)), (0, None)] {
        for up in [&a, &b] {
            let e = up.claim(start, len).unwrap_err();
            assert!(matches!(e, UploadError::InFlight { .. }), "{e}");
        }
    }
    // From another thread, the same.
    let b2 = b.try_clone().unwrap();
    let e = std::thread::spawn(move || b2.claim(120, Some(10)).unwrap_err())
        .join()
        .unwrap();
    assert!(matches!(e, UploadError::InFlight { .. }), "{e}");
    // Next to it is free; a refused claim changed nothing.
    let next = b.claim(200, Some(100)).unwrap();
    let before = b.claim(0, Some(100)).unwrap();
    assert!(b.current_state().unwrap().received.is_empty());
    drop((held, next, before));
    // A claim of unknown length reaches to the length: nothing after it can be claimed.
    let open_ended = b.claim(500, None).unwrap();
    assert_eq!(open_ended.end(), 1000);
    assert!(a.claim(999, Some(1)).is_err());
    assert!(a.claim(400, Some(100)).is_ok());
    // A clone of a claim shares it.
    let clone = open_ended.try_clone().unwrap();
    drop(open_ended);
    assert!(a.claim(999, Some(1)).is_err());
    drop(clone);
    assert!(a.claim(999, Some(1)).is_ok());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn an_append_must_start_at_the_offset() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let up = st.create(&id("tus1"), Some(100), Metadata::new()).unwrap();
    put(&up.claim_append(0, Some(10)).unwrap(), 0, &[1; 10]).unwrap();
    // Bytes held beyond the prefix do not move the offset.
    put(&up.claim(50, Some(10)).unwrap(), 50, &[5; 10]).unwrap();
    let state_before = fs::read(up.state_path()).unwrap();
    let len_before = up.file().metadata().unwrap().len();
    for wrong in [0, 9, 11, 50, 60] {
        let e = up.claim_append(wrong, Some(5)).unwrap_err();
        assert!(
            matches!(e, UploadError::OffsetMismatch { held: 10, requested } if requested == wrong),
            "{e}"
        );
    }
    assert_eq!(fs::read(up.state_path()).unwrap(), state_before);
    assert_eq!(up.file().metadata().unwrap().len(), len_before);
    // The right offset; a second writer at the same offset is refused while the first writes.
    let first = up.claim_append(10, None).unwrap();
    let e = up.claim_append(10, Some(5)).unwrap_err();
    assert!(matches!(e, UploadError::InFlight { .. }), "{e}");
    let rec = put(&first, 10, &[2; 40]).unwrap();
    assert_eq!(rec.state.offset(), 60);
    drop(first);
    let e = up.claim_append(10, Some(5)).unwrap_err();
    assert!(
        matches!(
            e,
            UploadError::OffsetMismatch {
                held: 60,
                requested: 10
            }
        ),
        "{e}"
    );
    assert!(up.claim_append(60, None).is_ok());
    fs::remove_dir_all(&tmp).unwrap();
}

/// Appends `chunks` chunks of `size` bytes of `tag` to `sid`, each at the offset it finds,
/// retrying when another writer got there first; returns the number of retries.
fn append_chunks(st: &UploadStore, sid: &str, tag: u8, chunks: usize, size: usize) -> usize {
    let up = st.open(&id(sid)).unwrap();
    let mut retries = 0;
    let mut written = 0;
    while written < chunks {
        let offset = up.current_state().unwrap().offset();
        match up.claim_append(offset, Some(size as u64)) {
            Ok(claim) => {
                let rec = put(&claim, offset, &vec![tag; size]).unwrap();
                assert!(rec.state.offset() >= offset + size as u64);
                written += 1;
            }
            Err(UploadError::OffsetMismatch { .. } | UploadError::InFlight { .. }) => {
                retries += 1;
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    retries
}

/// Every `size` bytes of the file are one writer's, and each writer wrote `chunks` of them.
fn check_chunks(content: &[u8], tags: &[u8], chunks: usize, size: usize) {
    assert_eq!(content.len(), tags.len() * chunks * size);
    for tag in tags {
        let n = content
            .chunks(size)
            .filter(|c| c.iter().all(|b| b == tag))
            .count();
        assert_eq!(n, chunks, "writer {tag}");
    }
}

#[test]
fn threads_appending_at_the_offset_never_overwrite_each_other() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    st.create(&id("tus2"), None, Metadata::new()).unwrap();
    let tags = [1u8, 2, 3, 4];
    let threads: Vec<_> = tags
        .iter()
        .map(|&tag| {
            let st = st.clone();
            std::thread::spawn(move || append_chunks(&st, "tus2", tag, 25, 64))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let up = st.open(&id("tus2")).unwrap();
    assert_eq!(up.state().offset(), 4 * 25 * 64);
    assert_eq!(up.state().received.len(), 1);
    check_chunks(&fs::read(up.data_path()).unwrap(), &tags, 25, 64);
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn commits_stay_in_their_claim_the_length_and_the_range_cap() {
    let tmp = crate::store::tests::tempdir();
    let mut st = store(&tmp, &[]);
    st.sessions.max_ranges = 2;
    let up = st.create(&id("lim1"), Some(100), Metadata::new()).unwrap();
    let claim = up.claim(10, Some(10)).unwrap();
    for (a, b) in [(9, 15), (15, 21), (12, 11), (0, 0)] {
        let e = claim.commit(done(a, b)).unwrap_err();
        assert!(
            matches!(
                e,
                UploadError::OutsideClaim {
                    claimed: (10, 20),
                    ..
                }
            ),
            "{e}"
        );
    }
    put(&claim, 10, &[1; 10]).unwrap();
    // An empty commit inside the claim records nothing, and is fine.
    assert_eq!(claim.commit(done(15, 15)).unwrap().state.held(), 10);
    drop(claim);
    put(&up.claim(30, Some(5)).unwrap(), 30, &[3; 5]).unwrap();
    let before = fs::read(up.state_path()).unwrap();
    let e = up.claim(50, Some(5)).unwrap_err();
    assert!(matches!(e, UploadError::TooManyRanges { max: 2 }), "{e}");
    // An open-ended claim counts as its shortest write.
    let e = up.claim(50, None).unwrap_err();
    assert!(matches!(e, UploadError::TooManyRanges { max: 2 }), "{e}");
    // A claim that may fill a gap is fine; its commit is refused if it does not.
    let gap = up.claim(20, None).unwrap();
    write_all_at(gap.file(), 40, &[IoSlice::new(&[4; 5])]).unwrap();
    let e = gap.commit(done(40, 45)).unwrap_err();
    assert!(matches!(e, UploadError::TooManyRanges { max: 2 }), "{e}");
    assert_eq!(fs::read(up.state_path()).unwrap(), before);
    let rec = gap.commit(done(20, 30)).unwrap();
    assert_eq!(rec.state.received.report(100).to_string(), "10-34/100");
    assert!(matches!(
        up.claim(90, Some(11)),
        Err(UploadError::BeyondLength {
            end: 101,
            length: Some(100)
        })
    ));
    assert!(matches!(
        up.claim(u64::MAX - 1, Some(5)),
        Err(UploadError::BeyondLength { .. })
    ));
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn exactly_one_commit_hands_a_complete_upload_off() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    for round in 0..10 {
        let sid = format!("last{round}");
        st.create(&id(&sid), Some(800), Metadata::new()).unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let (st, barrier, sid) = (st.clone(), barrier.clone(), sid.clone());
                std::thread::spawn(move || {
                    let up = st.open(&id(&sid)).unwrap();
                    let claim = up.claim(t * 100, Some(100)).unwrap();
                    write_all_at(claim.file(), t * 100, &[IoSlice::new(&[t as u8; 100])]).unwrap();
                    barrier.wait();
                    let rec = claim.commit(done(t * 100, t * 100 + 100)).unwrap();
                    // Keep the claim (and the hand-off) until every thread has committed.
                    barrier.wait();
                    rec.hand_off
                })
            })
            .collect();
        let hand_offs = threads
            .into_iter()
            .filter(|_| true)
            .map(|t| t.join().unwrap())
            .filter(|h| *h)
            .count();
        assert_eq!(hand_offs, 1, "round {round}");
    }
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_terminated_upload_is_not_brought_back_by_its_writers() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    let up = st.create(&id("term1"), Some(10), Metadata::new()).unwrap();
    let writer = up.claim(0, Some(10)).unwrap();
    write_all_at(writer.file(), 0, &[IoSlice::new(b"01234")]).unwrap();
    writer.commit(checkpoint(0, 5)).unwrap();
    st.terminate(&id("term1")).unwrap();
    assert!(files_under(&tmp).is_empty(), "{:?}", files_under(&tmp));
    write_all_at(writer.file(), 5, &[IoSlice::new(b"56789")]).unwrap();
    for commit in [checkpoint(0, 10), done(0, 10)] {
        let e = writer.commit(commit).unwrap_err();
        assert!(matches!(e, UploadError::Gone), "{e}");
    }
    assert!(matches!(writer.declare_length(10), Err(UploadError::Gone)));
    assert!(matches!(up.claim(0, None), Err(UploadError::Gone)));
    assert!(matches!(
        up.finish(Algorithms::NONE),
        Err(UploadError::Gone)
    ));
    assert!(matches!(up.terminate(), Err(UploadError::Gone)));
    assert!(matches!(up.forget_state(), Err(UploadError::Gone)));
    assert!(files_under(&tmp).is_empty(), "{:?}", files_under(&tmp));
    assert!(matches!(st.open(&id("term1")), Err(UploadError::NotFound)));
    // A new upload of the same id is not the old writer's either.
    let again = st.create(&id("term1"), Some(10), Metadata::new()).unwrap();
    assert!(matches!(writer.commit(done(0, 10)), Err(UploadError::Gone)));
    assert!(again.current_state().unwrap().received.is_empty());
    assert_eq!(fs::read(again.data_path()).unwrap(), b"");
    // The old writer's claim does not hold up the new upload's writers.
    assert!(again.claim(0, Some(10)).is_ok());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn expired_uploads_are_reported_once_and_their_files_removed() {
    let tmp = crate::store::tests::tempdir();
    let mut st = store(&tmp, &[]);
    let hour = Duration::from_secs(3600);
    st.sessions.expire_after = Some(hour);
    let up = st.create(&id("exp1"), Some(10), Metadata::new()).unwrap();
    let modified = fs::metadata(up.state_path()).unwrap().modified().unwrap();
    assert_eq!(up.expires_at(), Some(modified + hour));
    let rec = put(&up.claim(0, Some(5)).unwrap(), 0, b"01234").unwrap();
    let modified = fs::metadata(up.state_path()).unwrap().modified().unwrap();
    assert_eq!(rec.expires_at, Some(modified + hour));
    let opened = st.open(&id("exp1")).unwrap();
    assert_eq!(opened.expires_at(), Some(modified + hour));

    set_state_age(&st, "exp1", 2 * hour);
    let e = st.open(&id("exp1")).unwrap_err();
    assert!(matches!(e, UploadError::Expired), "{e}");
    assert!(files_under(&tmp).is_empty(), "{:?}", files_under(&tmp));
    assert!(matches!(st.open(&id("exp1")), Err(UploadError::NotFound)));
    assert!(matches!(up.claim(5, None), Err(UploadError::Gone)));

    // An upload a request is writing does not expire under it.
    let busy = st.create(&id("exp2"), Some(10), Metadata::new()).unwrap();
    let claim = busy.claim(0, None).unwrap();
    set_state_age(&st, "exp2", 2 * hour);
    let again = st.open(&id("exp2")).unwrap();
    put(&claim, 0, b"x").unwrap();
    drop(claim);
    assert!(again.expires_at().unwrap() < SystemTime::now());
    assert!(st.open(&id("exp2")).is_ok(), "the commit wrote the state");
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn the_sweep_removes_expired_uploads_of_any_length() {
    let tmp = crate::store::tests::tempdir();
    let mut st = store(&tmp, &[1]);
    st.sessions.expire_after = Some(Duration::from_secs(60));
    for (sid, length) in [("sw1", None), ("sw2", Some(0)), ("sw3", Some(5))] {
        st.create(&id(sid), length, meta(&[("k", b"v")])).unwrap();
    }
    let busy = st.open(&id("sw3")).unwrap().claim(0, None).unwrap();
    let later = SystemTime::now() + Duration::from_secs(120);
    let sweep = st.sweep_expired(later).unwrap();
    assert_eq!(
        sweep.sessions,
        Sweep {
            removed: 2,
            busy: 1
        }
    );
    assert_eq!(sweep.temporaries, 0);
    drop(busy);
    assert_eq!(st.sweep_expired(later).unwrap().sessions.removed, 1);
    assert!(files_under(&tmp).is_empty(), "{:?}", files_under(&tmp));
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn hashes_stream_in_order_and_are_caught_up_out_of_order() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let content: Vec<u8> = (0..7777u32).map(|i| (i * 31 % 253) as u8).collect();
    let algs = Algorithms::ALL;
    for (n, order) in [vec![0, 1, 2, 3, 4, 5, 6, 7], vec![3, 0, 7, 1, 6, 2, 5, 4]]
        .into_iter()
        .enumerate()
    {
        let sid = format!("hash{n}");
        let up = st
            .create(&id(&sid), Some(content.len() as u64), Metadata::new())
            .unwrap();
        let mut last = None;
        let mut streamed = 0;
        for k in order {
            let (a, b) = (k * 1000, ((k + 1) * 1000).min(content.len()));
            let claim = up.claim(a as u64, Some((b - a) as u64)).unwrap();
            let mut hashes = claim.streaming_hash(algs);
            streamed += usize::from(hashes.is_some());
            let mid = a + (b - a) / 2;
            for (x, y) in [(a, mid), (mid, b)] {
                claim.file().write_all_at(&content[x..y], x as u64).unwrap();
                if let Some(h) = &mut hashes {
                    h.advance(x as u64, &content[x..y]);
                }
            }
            last = Some(
                claim
                    .commit(Commit {
                        hashes,
                        algorithms: algs,
                        ..done(a as u64, b as u64)
                    })
                    .unwrap(),
            );
        }
        let rec = last.unwrap();
        assert!(rec.state.is_complete() && rec.hand_off);
        assert_eq!(rec.digests.unwrap(), digests_of(&content, algs));
        if n == 0 {
            assert_eq!(streamed, 8);
        }
    }
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn session_states_are_uploads_and_uploads_of_known_length_are_sessions() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let sessions = st.sessions();
    let range = |s: &str| crate::content_range::parse(s.as_bytes()).unwrap();
    // A session, written by the session API.
    let s = sessions.open(&id("old1"), &range("bytes 0-4/10")).unwrap();
    s.file().write_all_at(b"01234", 0).unwrap();
    s.commit(done(0, 5)).unwrap();
    drop(s);
    let up = st.open(&id("old1")).unwrap();
    assert_eq!(up.state().length, Some(10));
    assert_eq!(up.state().offset(), 5);
    assert!(matches!(
        st.create(&id("old1"), Some(10), Metadata::new()),
        Err(UploadError::AlreadyExists)
    ));
    let rec = put(&up.claim_append(5, None).unwrap(), 5, b"56789").unwrap();
    assert!(rec.state.is_complete() && rec.hand_off);
    // The file is still a session's: the session API reads what the upload API appended.
    let p = sessions.progress(&id("old1")).unwrap().unwrap();
    assert!(p.is_complete());

    // A state file as the first versions wrote it: no file id, hand-written.
    fs::write(st.data_path(&id("old2")).unwrap(), b"abc").unwrap();
    fs::write(
        st.state_path(&id("old2")).unwrap(),
        b"ngx-upload-state 1\ntotal 6\nreceived 0-2\n+ 2-2\nhash 1 upto=0\n",
    )
    .unwrap();
    let up = st.open(&id("old2")).unwrap();
    assert_eq!(up.state().received.report(6).to_string(), "0-2/6");
    assert_eq!(up.state().file, None);
    let rec = put(&up.claim_append(3, Some(3)).unwrap(), 3, b"def").unwrap();
    assert!(rec.state.is_complete());
    assert_eq!(fs::read(up.data_path()).unwrap(), b"abcdef");

    // An upload of known length, written by the upload API, continued as a session.
    let up = st
        .create(&id("new1"), Some(6), meta(&[("name", b"n")]))
        .unwrap();
    put(&up.claim(0, Some(3)).unwrap(), 0, b"abc").unwrap();
    let s = sessions.open(&id("new1"), &range("bytes 3-5/6")).unwrap();
    s.file().write_all_at(b"def", 3).unwrap();
    assert!(s.commit(done(3, 6)).unwrap().state.is_complete());
    let state = st.open(&id("new1")).unwrap().state().clone();
    assert!(state.is_complete());
    assert_eq!(state.metadata["name"], b"n", "appends keep the metadata");
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn large_sparse_uploads() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let tib = 1u64 << 40;
    let up = st.create(&id("big1"), Some(tib), Metadata::new()).unwrap();
    let first = up.claim(0, Some(4096)).unwrap();
    let last = up.claim(tib - 4096, None).unwrap();
    assert_eq!(last.end(), tib);
    let e = up.claim(tib - 1, Some(1)).unwrap_err();
    assert!(matches!(e, UploadError::InFlight { .. }), "{e}");
    put(&last, tib - 4096, &[9; 4096]).unwrap();
    let rec = put(&first, 0, &[1; 4096]).unwrap();
    assert_eq!(rec.state.received.len(), 2);
    assert!(!rec.state.is_complete());
    let meta_data = fs::metadata(up.data_path()).unwrap();
    assert_eq!(meta_data.len(), tib);
    assert!(meta_data.blocks() * 512 < 1 << 20, "sparse");
    // The middle, as one claim, completes it; the hand-off is the byte at 1 TiB.
    let middle = up.claim(4096, Some(tib - 8192)).unwrap();
    let rec = middle.commit(done(4096, tib - 4096)).unwrap();
    assert!(rec.state.is_complete() && rec.hand_off);
    let mut byte = [0u8; 1];
    up.file().read_exact_at(&mut byte, tib - 1).unwrap();
    assert_eq!(byte, [9]);

    // A deferred length, written far out, declared near the largest offset.
    let up = st.create(&id("big2"), None, Metadata::new()).unwrap();
    // Far out, within what ext4 holds (16 TiB).
    let far = 1u64 << 43;
    let claim = up.claim(far, None).unwrap();
    assert_eq!(claim.end(), MAX_OFFSET);
    assert!(up.claim(MAX_OFFSET - 1, Some(1)).is_err());
    put(&claim, far, b"far").unwrap();
    claim.declare_length(MAX_OFFSET).unwrap();
    let state = up.current_state().unwrap();
    assert_eq!(
        (state.length, state.held_end()),
        (Some(MAX_OFFSET), far + 3)
    );
    assert!(fs::read_to_string(up.state_path())
        .unwrap()
        .contains(&format!("\ntotal {MAX_OFFSET}\n")));
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn forgetting_the_state_leaves_the_file_to_the_backend() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let up = st.create(&id("fgt1"), Some(3), Metadata::new()).unwrap();
    let rec = put(&up.claim(0, None).unwrap(), 0, b"abc").unwrap();
    assert!(rec.hand_off);
    up.forget_state().unwrap();
    assert!(!up.state_path().exists());
    assert_eq!(fs::read(up.data_path()).unwrap(), b"abc");
    assert!(matches!(st.open(&id("fgt1")), Err(UploadError::NotFound)));
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn durable_uploads_record_the_same() {
    let tmp = crate::store::tests::tempdir();
    let mut st = store(&tmp, &[1, 1]);
    st.sessions.durable = true;
    let up = st.create(&id("dur1"), None, meta(&[("k", b"v")])).unwrap();
    put(&up.claim(0, None).unwrap(), 0, b"abcd").unwrap();
    up.declare_length(4).unwrap();
    let rec = up.finish(Algorithms::CRC32).unwrap();
    assert!(rec.state.is_complete() && rec.hand_off);
    assert_eq!(rec.digests.unwrap(), digests_of(b"abcd", Algorithms::CRC32));
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn state_files_are_appended_to_and_compacted() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let total = 1200u64;
    let up = st
        .create(&id("journal1"), Some(total), meta(&[("k", &[1; 1000])]))
        .unwrap();
    let mut order: Vec<u64> = (0..total).collect();
    order.sort_by_key(|i| (i % 2, *i));
    let mut largest = 0;
    for i in order {
        let rec = put(&up.claim(i, Some(1)).unwrap(), i, &[i as u8]).unwrap();
        let on_disk = fs::read(up.state_path()).unwrap();
        largest = largest.max(on_disk.len());
        assert_eq!(UploadState::decode(&on_disk).unwrap(), rec.state);
        assert_eq!(rec.state.metadata["k"], [1; 1000]);
    }
    assert!(st.open(&id("journal1")).unwrap().state().is_complete());
    assert!(largest <= COMPACT_AT + 64, "state file grew to {largest}");
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn errors_read_well_in_an_error_log() {
    let cases: Vec<(UploadError, &str)> = vec![
        (UploadError::AlreadyExists, "exists already"),
        (UploadError::NotFound, "no upload"),
        (UploadError::Expired, "expired"),
        (UploadError::Gone, "terminated"),
        (
            UploadError::OffsetMismatch {
                held: 5,
                requested: 7,
            },
            "starts at offset 7, but the upload's offset is 5",
        ),
        (
            UploadError::LengthAlreadyDeclared {
                declared: 5,
                requested: 7,
            },
            "length is 5 already; it cannot become 7",
        ),
        (
            UploadError::LengthBelowHeld {
                held_end: 9,
                requested: 7,
            },
            "length 7 is below the 9 bytes",
        ),
        (
            UploadError::BeyondLength {
                end: 9,
                length: Some(7),
            },
            "up to offset 9 lie beyond the upload's length 7",
        ),
        (
            UploadError::OutsideClaim {
                start: 1,
                end: 9,
                claimed: (2, 3),
            },
            "bytes 1..9 are outside this request's claim of 2..3",
        ),
        (
            UploadError::InFlight { first: 1, last: 2 },
            "bytes 1-2 are claimed by another request",
        ),
        (
            UploadError::TooManyRanges { max: 4 },
            "more than 4 separate",
        ),
        (
            UploadError::Incomplete {
                held: 1,
                length: None,
            },
            "length not declared",
        ),
        (
            UploadError::Part {
                index: 2,
                error: Box::new(UploadError::NotFound),
            },
            "part 2: no upload",
        ),
        (
            UploadError::Io(io::Error::from_raw_os_error(libc::ENOSPC)),
            "No space left on device",
        ),
    ];
    for (e, text) in cases {
        let shown = e.to_string();
        assert!(shown.contains(text), "{shown:?} lacks {text:?}");
        assert!(!shown.contains('\n'));
    }
}

// Other processes: this test binary run again with `child_process` as its only test, which
// does what NGX_UPLOAD_CHILD says (see `child_main`) and reports on its stdout, a line per
// report, each starting with "child: ".

const CHILD_ENV: &str = "NGX_UPLOAD_CHILD";

fn spawn_child(args: &[&str]) -> Child {
    spawn_child_with_env(args, &[])
}

pub(crate) fn spawn_child_with_env(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .envs(env.iter().copied())
        .args([
            "--ignored",
            "--exact",
            "upload::tests::child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, args.join("\u{1f}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The report in a line of the child's output: the test harness may have written the start of
/// the line.
fn report_in(line: &str) -> Option<String> {
    line.split_once("child: ")
        .map(|(_, r)| r.trim_end().to_string())
}

/// The child's next report, read a byte at a time so that nothing after it is consumed.
fn next_report(child: &mut Child) -> String {
    use std::io::Read;
    let out = child.stdout.as_mut().unwrap();
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8];
        assert_eq!(out.read(&mut byte).unwrap(), 1, "child said nothing");
        if byte[0] != b'\n' {
            line.push(byte[0]);
            continue;
        }
        if let Some(report) = report_in(&String::from_utf8_lossy(&line)) {
            return report;
        }
        line.clear();
    }
}

fn all_reports(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "child failed: {:?}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(report_in)
        .collect()
}

/// A test only in a child process.
#[test]
#[ignore = "run by the tests that start other processes"]
fn child_process() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let args: Vec<&str> = args.split('\u{1f}').collect();
    child_main(&args);
}

fn report(what: impl fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "child: {what}").unwrap();
    out.flush().unwrap();
}

/// Waits until the file `go` exists.
fn wait_for(go: &str) {
    while !Path::new(go).exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn child_main(args: &[&str]) {
    let st = store(Path::new(args[1]), &[1]);
    match args[0] {
        // create <root> <id> <go file>: creates the upload once `go` exists.
        "create" => {
            wait_for(args[3]);
            match st.create(&id(args[2]), Some(10), meta(&[("pid", b"x")])) {
                Ok(_) => report("created"),
                Err(e) => report(format_args!("refused: {e:?}")),
            }
        }
        // claim <root> <id> <start> <len>: claims, says so, and holds the claim until its
        // stdin closes.
        "claim" => {
            let up = st.open(&id(args[2])).unwrap();
            let claim = up
                .claim(args[3].parse().unwrap(), Some(args[4].parse().unwrap()))
                .unwrap();
            report("claimed");
            let _ = std::io::stdin().read_line(&mut String::new());
            drop(claim);
        }
        // crash <root> <id>: claims, writes, and dies before it commits.
        "crash" => {
            let up = st.open(&id(args[2])).unwrap();
            let claim = up.claim_append(0, None).unwrap();
            claim.file().write_all_at(b"lost bytes", 0).unwrap();
            report("written");
            // SAFETY: ends the process at once, like a crash: no destructor runs.
            unsafe { libc::_exit(3) };
        }
        // append <root> <id> <tag> <go file>: appends 20 chunks of 32 bytes of `tag`.
        "append" => {
            wait_for(args[4]);
            let retries = append_chunks(&st, args[2], args[3].parse().unwrap(), 20, 32);
            report(format_args!("appended, {retries} retries"));
        }
        // terminate <root> <id>
        "terminate" => match st.terminate(&id(args[2])) {
            Ok(()) => report("terminated"),
            Err(e) => report(format_args!("refused: {e:?}")),
        },
        // assemble <root> <target> <part>...: see assemble::tests::child_assemble.
        "assemble" => {
            crate::assemble::tests::child_assemble(Path::new(args[1]), args[2], &args[3..]);
            report("assembled");
        }
        other => panic!("no child role {other}"),
    }
}

#[test]
fn processes_racing_to_create_one_upload_get_exactly_one() {
    let tmp = crate::store::tests::tempdir();
    let root = tmp.to_str().unwrap();
    for round in 0..3 {
        let go = tmp.join(format!("go{round}"));
        let sid = format!("prace{round}");
        let children: Vec<_> = (0..4)
            .map(|_| spawn_child(&["create", root, &sid, go.to_str().unwrap()]))
            .collect();
        fs::write(&go, b"").unwrap();
        let reports: Vec<String> = children.into_iter().flat_map(all_reports).collect();
        let created = reports.iter().filter(|r| *r == "created").count();
        assert_eq!(created, 1, "{reports:?}");
        assert!(
            reports
                .iter()
                .all(|r| r == "created" || r == "refused: AlreadyExists"),
            "{reports:?}"
        );
        let st = store(&tmp, &[1]);
        assert_eq!(st.open(&id(&sid)).unwrap().state().length, Some(10));
    }
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_claim_in_another_process_excludes_and_ends_with_it() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    let up = st.create(&id("pcl1"), Some(100), Metadata::new()).unwrap();
    let mut child = spawn_child(&["claim", tmp.to_str().unwrap(), "pcl1", "10", "20"]);
    assert_eq!(next_report(&mut child), "claimed");
    let e = up.claim(25, Some(10)).unwrap_err();
    assert!(matches!(e, UploadError::InFlight { .. }), "{e}");
    let e = up.claim_append(0, None).unwrap_err();
    assert!(matches!(e, UploadError::InFlight { .. }), "{e}");
    assert!(up.claim(30, Some(10)).is_ok());
    // The expiry sweep leaves an upload another process is writing.
    let mut expiring = st.clone();
    expiring.sessions.expire_after = Some(Duration::from_secs(1));
    let later = SystemTime::now() + Duration::from_secs(10);
    assert_eq!(expiring.sweep_expired(later).unwrap().sessions.busy, 1);
    // Killed, its claim is gone with it.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(up.claim(25, Some(10)).is_ok());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_writer_that_dies_before_its_commit_leaves_nothing_claimed() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    let up = st.create(&id("pcr1"), None, Metadata::new()).unwrap();
    let mut child = spawn_child(&["crash", tmp.to_str().unwrap(), "pcr1"]);
    assert_eq!(next_report(&mut child), "written");
    assert_eq!(child.wait().unwrap().code(), Some(3));
    let state = up.current_state().unwrap();
    assert!(state.received.is_empty() && state.length.is_none());
    // Its bytes are in the file but not held; its claim died with it.
    let claim = up.claim_append(0, None).unwrap();
    let rec = put(&claim, 0, b"kept").unwrap();
    assert_eq!(rec.state.offset(), 4);
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn processes_appending_at_the_offset_never_overwrite_each_other() {
    let tmp = crate::store::tests::tempdir();
    let root = tmp.to_str().unwrap();
    let st = store(&tmp, &[1]);
    st.create(&id("papp1"), None, Metadata::new()).unwrap();
    let go = tmp.join("go");
    let tags = [b'a', b'b', b'c'];
    let children: Vec<_> = tags
        .iter()
        .map(|&t| {
            spawn_child(&[
                "append",
                root,
                "papp1",
                &t.to_string(),
                go.to_str().unwrap(),
            ])
        })
        .collect();
    // And this process too.
    fs::write(&go, b"").unwrap();
    append_chunks(&st, "papp1", b'z', 20, 32);
    for child in children {
        let reports = all_reports(child);
        assert!(reports[0].starts_with("appended"), "{reports:?}");
    }
    let up = st.open(&id("papp1")).unwrap();
    up.declare_length(4 * 20 * 32).unwrap();
    assert!(up.finish(Algorithms::NONE).unwrap().hand_off);
    check_chunks(&fs::read(up.data_path()).unwrap(), b"abcz", 20, 32);
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn termination_by_another_process_is_seen_as_gone() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    let up = st.create(&id("pterm1"), Some(10), Metadata::new()).unwrap();
    let claim = up.claim(0, Some(10)).unwrap();
    claim.file().write_all_at(b"0123456789", 0).unwrap();
    let reports = all_reports(spawn_child(&["terminate", tmp.to_str().unwrap(), "pterm1"]));
    assert_eq!(reports, ["terminated"]);
    assert!(matches!(claim.commit(done(0, 10)), Err(UploadError::Gone)));
    assert!(files_under(&tmp).is_empty(), "{:?}", files_under(&tmp));
    let reports = all_reports(spawn_child(&["terminate", tmp.to_str().unwrap(), "pterm1"]));
    assert_eq!(reports, ["refused: NotFound"]);
    fs::remove_dir_all(&tmp).unwrap();
}

/// An ask to yield is a file beside the state: taken back by the writer that sees it, and
/// never left behind by an upload that ends (handed off, terminated) or expires.
#[test]
fn asks_to_yield_are_taken_back_or_removed_with_the_upload() {
    let tmp = crate::store::tests::tempdir();
    let mut st = store(&tmp, &[]);
    let yield_file =
        |st: &UploadStore, sid: &str| st.state_path(&id(sid)).unwrap().with_extension("yield");
    let claimed_at = SystemTime::now();
    let up = st.create(&id("ask1"), Some(10), Metadata::new()).unwrap();
    assert!(!up.take_ask_to_yield(claimed_at), "nobody asked");
    up.ask_to_yield();
    assert!(yield_file(&st, "ask1").exists());
    assert!(up.take_ask_to_yield(claimed_at));
    assert!(!yield_file(&st, "ask1").exists(), "taken back");
    assert!(!up.take_ask_to_yield(claimed_at), "once");
    // An ask from long before this request claimed the upload is not for it.
    up.ask_to_yield();
    assert!(!up.take_ask_to_yield(claimed_at + Duration::from_secs(60)));

    // Handed off: the state goes, and the ask with it (the data is the backend's).
    up.forget_state().unwrap();
    assert!(!yield_file(&st, "ask1").exists());
    fs::remove_file(up.data_path()).unwrap();

    // Terminated: the same.
    let up = st.create(&id("ask2"), Some(10), Metadata::new()).unwrap();
    up.ask_to_yield();
    up.terminate().unwrap();
    assert!(!yield_file(&st, "ask2").exists());

    // An ask whose writer ended before it looked, on an upload that then expired: swept.
    st.sessions.expire_after = Some(Duration::from_secs(60));
    let up = st.create(&id("ask3"), Some(10), Metadata::new()).unwrap();
    up.ask_to_yield();
    let later = SystemTime::now() + Duration::from_secs(120);
    assert_eq!(st.sweep_expired(later).unwrap().sessions.removed, 1);
    assert!(files_under(&tmp).is_empty(), "{:?}", files_under(&tmp));
    fs::remove_dir_all(&tmp).unwrap();
}

/// Each final upload created over an unfinished part adds a line to the part's state: past
/// MAX_AWAITING, those of finals no longer waiting are dropped, and if that many still wait,
/// the next is refused with nothing changed.
#[test]
fn a_part_is_awaited_by_a_bounded_number_of_finals() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    st.create(&id("part1"), Some(10), Metadata::new()).unwrap();
    let finals: Vec<SessionId> = (0..MAX_AWAITING)
        .map(|n| id(&format!("fin{n:03}")))
        .collect();
    for fin in &finals {
        st.open(&id("part1"))
            .unwrap()
            .add_awaited_by(fin, |_| true)
            .unwrap();
    }
    let part = st.open(&id("part1")).unwrap();
    assert_eq!(part.state().awaited_by.len(), MAX_AWAITING);
    let state_before = fs::read(part.state_path()).unwrap();
    // All still waiting: refused, nothing changed.
    let e = part.add_awaited_by(&id("finnew"), |_| true).unwrap_err();
    assert!(
        matches!(e, UploadError::AwaitedByTooMany { max } if max == MAX_AWAITING),
        "{e}"
    );
    assert_eq!(fs::read(part.state_path()).unwrap(), state_before);
    // The first half are over: dropped, and the new one is in.
    let over = |fin: &SessionId| finals[..MAX_AWAITING / 2].contains(fin);
    let state = part
        .add_awaited_by(&id("finnew"), |fin| !over(fin))
        .unwrap();
    assert_eq!(state.awaited_by.len(), MAX_AWAITING / 2 + 1);
    assert!(state.awaited_by.contains(&id("finnew")));
    assert!(!state.awaited_by.iter().any(over));
    // As recorded on disk, for any worker.
    let reread = store(&tmp, &[]).open(&id("part1")).unwrap();
    assert_eq!(reread.state().awaited_by, state.awaited_by);
    fs::remove_dir_all(&tmp).unwrap();
}

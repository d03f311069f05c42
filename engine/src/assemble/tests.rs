//! Assemblies on real files: the copy by the kernel, sparse parts, failing parts, races, and
//! crashes in another process.

use super::*;
use crate::hashing::MultiHasher;
use crate::session::{write_all_at, Commit};
use crate::upload::tests::{id, meta, put, spawn_child_with_env, store};
use std::cell::Cell;
use std::io::IoSlice;
use std::sync::{Arc, Barrier};

/// A way the copy is made to fail in this thread, to test its fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Force {
    NoReflink,
    NoCopyFileRange,
}

thread_local! {
    static FORCED: Cell<[bool; 2]> = const { Cell::new([false; 2]) };
}

pub(crate) fn forced(what: Force) -> bool {
    FORCED.with(|f| f.get()[what as usize])
}

fn force(what: Force) {
    FORCED.with(|f| {
        let mut v = f.get();
        v[what as usize] = true;
        f.set(v);
    });
}

fn content(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(seed) >> 3) as u8)
        .collect()
}

/// A complete upload of `data`, written in one claim, with the hashes streamed when
/// `algorithms` has any.
fn uploaded(st: &UploadStore, sid: &str, data: &[u8], algorithms: Algorithms) {
    let up = st
        .create(&id(sid), Some(data.len() as u64), Metadata::new())
        .unwrap();
    if data.is_empty() {
        return;
    }
    let claim = up.claim(0, None).unwrap();
    let mut hashes = claim.streaming_hash(algorithms);
    write_all_at(claim.file(), 0, &[IoSlice::new(data)]).unwrap();
    if let Some(h) = &mut hashes {
        h.advance(0, data);
    }
    let rec = claim
        .commit(Commit {
            start: 0,
            end: data.len() as u64,
            hashes,
            algorithms,
            finishing: true,
        })
        .unwrap();
    assert!(rec.state.is_complete());
}

fn digests_of(data: &[u8], algorithms: Algorithms) -> Digests {
    let mut h = MultiHasher::new(algorithms);
    h.update(data);
    h.finish()
}

fn temporaries(root: &Path) -> Vec<PathBuf> {
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
            } else if p.to_string_lossy().ends_with(TEMPORARY_SUFFIX) {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn parts_are_assembled_in_order_by_the_kernel() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    let parts: Vec<Vec<u8>> = vec![
        content(5000, 7),
        content(3 * 4096, 13),
        content(777, 31),
        Vec::new(),
        content(100_000, 3),
    ];
    for (i, data) in parts.iter().enumerate().take(4) {
        uploaded(&st, &format!("blk{i}"), data, Algorithms::NONE);
    }
    let file_part = tmp.join("part-file");
    fs::write(&file_part, &parts[4]).unwrap();
    let ids: Vec<SessionId> = (0..4).map(|i| id(&format!("blk{i}"))).collect();
    let mut order: Vec<Part> = ids.iter().map(Part::Upload).collect();
    order.push(Part::File(&file_part));
    let algs = Algorithms::ALL;
    let done = st
        .assemble(&id("whole1"), &order, meta(&[("fname", b"a.bin")]), algs)
        .unwrap();
    let expect: Vec<u8> = parts.concat();
    assert_eq!(fs::read(done.upload.data_path()).unwrap(), expect);
    let r = done.report;
    assert_eq!(r.bytes, expect.len() as u64);
    assert_eq!(r.through_userspace, 0, "{r:?}");
    assert_eq!(r.reflinked + r.copied_in_kernel + r.holes, r.bytes, "{r:?}");
    assert!(r.copied_in_kernel > 0 || r.reflinked > 0, "{r:?}");
    assert_eq!(done.digests.as_ref().unwrap(), &digests_of(&expect, algs));
    assert_eq!(done.hashed_from_file, expect.len() as u64);
    // The target is a complete upload with its metadata and hash progress.
    let state = done.upload.state().clone();
    assert!(state.is_complete() && state.length == Some(expect.len() as u64));
    assert_eq!(state.metadata["fname"], b"a.bin");
    let on_disk = st.open(&id("whole1")).unwrap();
    assert_eq!(*on_disk.state(), state);
    let text = fs::read_to_string(on_disk.state_path()).unwrap();
    assert!(
        text.contains(&format!("\nreceived 0-{}\n", expect.len() - 1)),
        "{text}"
    );
    // The assembly's handle has the hand-off; another gets it once that is dropped.
    assert!(!on_disk.finish(algs).unwrap().hand_off);
    // But nobody else is kept from reading or claiming its bytes.
    assert!(on_disk.claim(0, Some(10)).is_ok());
    drop(done);
    let rec = on_disk.finish(algs).unwrap();
    assert!(rec.hand_off);
    assert_eq!(rec.digests.unwrap(), digests_of(&expect, algs));
    // The parts are as they were, and free.
    for (i, sid) in ids.iter().enumerate() {
        let up = st.open(sid).unwrap();
        assert_eq!(fs::read(up.data_path()).unwrap(), parts[i]);
        assert!(up.claim(0, None).is_ok());
    }
    assert!(temporaries(&tmp).is_empty());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn the_first_parts_hash_progress_spares_reading_it_again() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let algs = Algorithms::MD5 | Algorithms::SHA1;
    let (a, b) = (content(70_000, 5), content(30_000, 9));
    uploaded(&st, "hp0", &a, algs);
    uploaded(&st, "hp1", &b, algs);
    let (p0, p1) = (id("hp0"), id("hp1"));
    let done = st
        .assemble(
            &id("hpall"),
            &[Part::Upload(&p0), Part::Upload(&p1)],
            Metadata::new(),
            algs,
        )
        .unwrap();
    assert_eq!(done.hashed_from_file, 30_000);
    assert_eq!(
        done.digests.unwrap(),
        digests_of(&[&a[..], &b].concat(), algs)
    );
    // A part may come more than once.
    let done = st
        .assemble(
            &id("hptwice"),
            &[Part::Upload(&p1), Part::Upload(&p0), Part::Upload(&p1)],
            Metadata::new(),
            algs,
        )
        .unwrap();
    let expect = [&b[..], &a, &b].concat();
    assert_eq!(fs::read(done.upload.data_path()).unwrap(), expect);
    assert_eq!(done.digests.unwrap(), digests_of(&expect, algs));
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn without_the_kernels_copy_the_bytes_go_through_userspace() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let parts = [content(10_000, 3), content(2_000_000, 11)];
    uploaded(&st, "fb0", &parts[0], Algorithms::NONE);
    uploaded(&st, "fb1", &parts[1], Algorithms::NONE);
    force(Force::NoReflink);
    force(Force::NoCopyFileRange);
    let (p0, p1) = (id("fb0"), id("fb1"));
    let done = st
        .assemble(
            &id("fball"),
            &[Part::Upload(&p0), Part::Upload(&p1)],
            Metadata::new(),
            Algorithms::CRC32,
        )
        .unwrap();
    let expect = parts.concat();
    assert_eq!(fs::read(done.upload.data_path()).unwrap(), expect);
    let r = done.report;
    assert_eq!(
        (r.through_userspace, r.copied_in_kernel, r.reflinked),
        (expect.len() as u64, 0, 0),
        "{r:?}"
    );
    assert_eq!(
        done.digests.unwrap(),
        digests_of(&expect, Algorithms::CRC32)
    );
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn sparse_parts_stay_sparse() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let gib = 1u64 << 30;
    let lens = [3 * gib + 5, 2 * gib + 3];
    let marks = |part: usize, len: u64| -> Vec<(u64, Vec<u8>)> {
        vec![
            (0, vec![part as u8 + 1; 100]),
            (gib + 17, b"middle".to_vec()),
            (len - 4, vec![0xee; 4]),
        ]
    };
    let mut paths = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        let path = tmp.join(format!("sparse{i}"));
        let file = File::create(&path).unwrap();
        file.set_len(len).unwrap();
        for (at, bytes) in marks(i, len) {
            file.write_all_at(&bytes, at).unwrap();
        }
        paths.push(path);
    }
    let done = st
        .assemble(
            &id("sparse"),
            &[Part::File(&paths[0]), Part::File(&paths[1])],
            Metadata::new(),
            Algorithms::NONE,
        )
        .unwrap();
    let r = done.report;
    assert_eq!(r.bytes, lens[0] + lens[1]);
    assert_eq!(r.through_userspace, 0, "{r:?}");
    assert!(r.holes > 5 * gib - (8 << 20), "{r:?}");
    assert!(r.copied_in_kernel + r.reflinked < 8 << 20, "{r:?}");
    let result = done.upload.file();
    let m = result.metadata().unwrap();
    assert_eq!(m.len(), r.bytes);
    assert!(
        m.blocks() * 512 < 8 << 20,
        "{} bytes allocated",
        m.blocks() * 512
    );
    let mut at = 0;
    for (i, &len) in lens.iter().enumerate() {
        for (offset, bytes) in marks(i, len) {
            let mut got = vec![0; bytes.len()];
            result.read_exact_at(&mut got, at + offset).unwrap();
            assert_eq!(got, bytes, "part {i} at {offset}");
        }
        let mut zero = [1u8; 16];
        result.read_exact_at(&mut zero, at + gib).unwrap();
        assert_eq!(zero, [0; 16], "a hole reads as zeros");
        at += len;
    }
    assert!(done.upload.state().is_complete());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_part_that_is_missing_incomplete_or_being_written_fails_it() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    uploaded(&st, "ok0", b"complete", Algorithms::NONE);
    let partial = st.create(&id("half"), Some(10), Metadata::new()).unwrap();
    put(&partial.claim(0, Some(5)).unwrap(), 0, b"01234").unwrap();
    let deferred = st.create(&id("defer"), None, Metadata::new()).unwrap();
    put(&deferred.claim(0, None).unwrap(), 0, b"abc").unwrap();
    uploaded(&st, "busy", b"written", Algorithms::NONE);
    let busy = st.open(&id("busy")).unwrap();
    let writer = busy.claim(2, Some(2)).unwrap();
    let ok = id("ok0");
    let missing_file = tmp.join("no-such-file");
    type Case<'a> = (Vec<SessionId>, Option<&'a Path>, fn(&UploadError) -> bool);
    let cases: Vec<Case> = vec![
        (vec![id("nothere")], None, |e| {
            matches!(e, UploadError::NotFound)
        }),
        (vec![id("half")], None, |e| {
            matches!(
                e,
                UploadError::Incomplete {
                    held: 5,
                    length: Some(10)
                }
            )
        }),
        (vec![id("defer")], None, |e| {
            matches!(
                e,
                UploadError::Incomplete {
                    held: 3,
                    length: None
                }
            )
        }),
        (vec![id("busy")], None, |e| {
            matches!(e, UploadError::InFlight { .. })
        }),
        (
            vec![],
            Some(&missing_file),
            |e| matches!(e, UploadError::Io(io) if io.kind() == io::ErrorKind::NotFound),
        ),
    ];
    for (ids, file, expected) in cases {
        let mut parts = vec![Part::Upload(&ok)];
        parts.extend(ids.iter().map(Part::Upload));
        parts.extend(file.map(Part::File));
        let e = st
            .assemble(&id("target"), &parts, Metadata::new(), Algorithms::NONE)
            .unwrap_err();
        match &e {
            UploadError::Part { index: 1, error } if expected(error) => {}
            _ => panic!("{e}"),
        }
        assert!(e.to_string().starts_with("part 1: "), "{e}");
    }
    assert!(matches!(st.open(&id("target")), Err(UploadError::NotFound)));
    assert!(!st.data_path(&id("target")).unwrap().exists());
    assert!(temporaries(&tmp).is_empty());
    drop(writer);
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn the_target_must_not_be_a_live_upload() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    uploaded(&st, "src0", b"source", Algorithms::NONE);
    st.create(&id("taken"), None, Metadata::new()).unwrap();
    let src = id("src0");
    for target in ["taken", "src0"] {
        let e = st
            .assemble(
                &id(target),
                &[Part::Upload(&src)],
                Metadata::new(),
                Algorithms::NONE,
            )
            .unwrap_err();
        assert!(matches!(e, UploadError::AlreadyExists), "{e}");
    }
    // What is not an upload (a data file alone) is replaced.
    let orphan = st.data_path(&id("orphan")).unwrap();
    fs::write(&orphan, b"left by a crash, longer than the result").unwrap();
    let done = st
        .assemble(
            &id("orphan"),
            &[Part::Upload(&src)],
            Metadata::new(),
            Algorithms::NONE,
        )
        .unwrap();
    assert_eq!(fs::read(&orphan).unwrap(), b"source");
    assert!(done.upload.state().is_complete());
    // No parts: an empty upload.
    let empty = st
        .assemble(&id("empty"), &[], Metadata::new(), Algorithms::MD5)
        .unwrap();
    assert_eq!(empty.upload.state().length, Some(0));
    assert!(empty.upload.state().is_complete());
    assert_eq!(empty.digests.unwrap(), digests_of(b"", Algorithms::MD5));
    assert!(temporaries(&tmp).is_empty());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_part_shorter_than_its_state_says_fails_and_leaves_nothing() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    uploaded(&st, "cut0", &content(50_000, 3), Algorithms::NONE);
    // Damaged behind the engine's back.
    let path = st.data_path(&id("cut0")).unwrap();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(20_000)
        .unwrap();
    let p = id("cut0");
    for forced in [false, true] {
        if forced {
            force(Force::NoCopyFileRange);
        }
        let e = st
            .assemble(
                &id("cutall"),
                &[Part::Upload(&p)],
                Metadata::new(),
                Algorithms::NONE,
            )
            .unwrap_err();
        assert!(
            matches!(&e, UploadError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof),
            "{e}"
        );
        assert!(matches!(st.open(&id("cutall")), Err(UploadError::NotFound)));
        assert!(temporaries(&tmp).is_empty());
    }
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn racing_assemblies_of_one_target_make_one() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    let data = content(300_000, 7);
    uploaded(&st, "rsrc", &data, Algorithms::NONE);
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (st, barrier) = (st.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // Each from its own copy of the source (a claim on an upload part would make
                // the others wait for it: InFlight).
                let path = st.data_path(&id("rsrc")).unwrap();
                st.assemble(
                    &id("rall"),
                    &[Part::File(&path)],
                    Metadata::new(),
                    Algorithms::NONE,
                )
                .map(|done| done.report.bytes)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let made = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(made, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(_) | Err(UploadError::AlreadyExists))));
    let up = st.open(&id("rall")).unwrap();
    assert_eq!(fs::read(up.data_path()).unwrap(), data);
    assert!(temporaries(&tmp).is_empty());
    fs::remove_dir_all(&tmp).unwrap();
}

/// For `upload::tests::child_main`: assembles `target` from the upload parts, in a child that
/// dies at `crash` (see [`crash_point`]).
pub(crate) fn child_assemble(root: &Path, target: &str, parts: &[&str]) {
    let st = store(root, &[1]);
    let ids: Vec<SessionId> = parts.iter().map(|p| id(p)).collect();
    let parts: Vec<Part> = ids.iter().map(Part::Upload).collect();
    st.assemble(&id(target), &parts, Metadata::new(), Algorithms::NONE)
        .unwrap();
}

fn crashing_assembly(root: &Path, crash: &str) -> i32 {
    let child = spawn_child_with_env(
        &["assemble", root.to_str().unwrap(), "crashed", "cp0", "cp1"],
        &[("NGX_UPLOAD_CRASH_AT", crash)],
    );
    child.wait_with_output().unwrap().status.code().unwrap()
}

#[test]
fn a_crash_while_copying_leaves_a_temporary_file_that_is_no_upload() {
    let tmp = crate::store::tests::tempdir();
    let mut st = store(&tmp, &[1]);
    st.sessions_mut().expire_after = Some(Duration::from_secs(3600));
    let (a, b) = (content(100_000, 3), content(60_000, 5));
    uploaded(&st, "cp0", &a, Algorithms::NONE);
    uploaded(&st, "cp1", &b, Algorithms::NONE);
    assert_eq!(crashing_assembly(&tmp, "assemble-copied"), 7);
    let left = temporaries(&tmp);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(matches!(
        st.open(&id("crashed")),
        Err(UploadError::NotFound)
    ));
    // The parts' claims died with the process.
    assert!(st.open(&id("cp0")).unwrap().claim(0, None).is_ok());
    // A temporary file cut short (a crash in the middle of a copy), and one complete: neither is
    // ever taken for the upload.
    let cut = left[0].with_file_name(format!("crashed.1-2-3{TEMPORARY_SUFFIX}"));
    fs::write(&cut, &a[..1000]).unwrap();
    assert!(matches!(
        st.open(&id("crashed")),
        Err(UploadError::NotFound)
    ));
    // Young temporary files are left; old ones, not locked, are swept (the parts, written
    // just now, are not).
    assert_eq!(st.sweep_expired(SystemTime::now()).unwrap().temporaries, 0);
    for temp in temporaries(&tmp) {
        let old = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(temp)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let sweep = st.sweep_expired(SystemTime::now()).unwrap();
    assert_eq!((sweep.temporaries, sweep.sessions.removed), (2, 0));
    assert!(temporaries(&tmp).is_empty());
    // Assembling again works.
    let (p0, p1) = (id("cp0"), id("cp1"));
    let done = st
        .assemble(
            &id("crashed"),
            &[Part::Upload(&p0), Part::Upload(&p1)],
            Metadata::new(),
            Algorithms::NONE,
        )
        .unwrap();
    assert_eq!(fs::read(done.upload.data_path()).unwrap(), [a, b].concat());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_crash_after_the_rename_leaves_a_data_file_that_is_no_upload() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    let (a, b) = (content(10_000, 3), content(6_000, 5));
    uploaded(&st, "cp0", &a, Algorithms::NONE);
    uploaded(&st, "cp1", &b, Algorithms::NONE);
    assert_eq!(crashing_assembly(&tmp, "assemble-renamed"), 7);
    let data = st.data_path(&id("crashed")).unwrap();
    assert_eq!(fs::read(&data).unwrap(), [&a[..], &b[..]].concat());
    assert!(!st.state_path(&id("crashed")).unwrap().exists());
    assert!(temporaries(&tmp).is_empty());
    assert!(matches!(
        st.open(&id("crashed")),
        Err(UploadError::NotFound)
    ));
    // Assembling again (or creating the id) replaces it.
    let (p0, p1) = (id("cp0"), id("cp1"));
    let done = st
        .assemble(
            &id("crashed"),
            &[Part::Upload(&p1), Part::Upload(&p0)],
            Metadata::new(),
            Algorithms::NONE,
        )
        .unwrap();
    assert_eq!(fs::read(done.upload.data_path()).unwrap(), [b, a].concat());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_locked_temporary_file_is_not_swept() {
    let tmp = crate::store::tests::tempdir();
    let mut st = store(&tmp, &[]);
    st.sessions_mut().expire_after = Some(Duration::from_secs(60));
    let path = st.data_path(&id("t1")).unwrap();
    let (temp_path, temp) = create_temporary(&path, 0o600).unwrap();
    assert!(ofd_lock(&temp, 0, 0).unwrap());
    let later = SystemTime::now() + Duration::from_secs(120);
    assert_eq!(st.sweep_expired(later).unwrap().temporaries, 0);
    drop(temp);
    assert_eq!(st.sweep_expired(later).unwrap().temporaries, 1);
    assert!(!temp_path.exists());
    fs::remove_dir_all(&tmp).unwrap();
}

/// A final upload created over parts not complete yet (tus concatenation-unfinished): empty,
/// its length the sum of the parts'.
fn awaiting_final(st: &UploadStore, sid: &str, length: Option<u64>, parts: &[&str]) {
    st.create(&id(sid), length, meta(&[("filename", b"whole.bin")]))
        .unwrap();
    for part in parts {
        let state = st
            .open(&id(part))
            .unwrap()
            .add_awaited_by(&id(sid), |_| true)
            .unwrap();
        assert!(state.awaited_by.contains(&id(sid)));
    }
}

fn ids(parts: &[&str]) -> Vec<SessionId> {
    parts.iter().map(|p| id(p)).collect()
}

#[test]
fn a_final_awaiting_its_parts_is_assembled_once_they_are_all_complete() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    let (a, b) = (content(70_000, 3), content(50_000, 5));
    uploaded(&st, "pa", &a, Algorithms::NONE);
    st.create(&id("pb"), Some(b.len() as u64), Metadata::new())
        .unwrap();
    awaiting_final(&st, "fin1", Some(120_000), &["pb"]);
    let parts = ids(&["pa", "pb", "pa"]);
    match st.assemble_awaiting(&id("fin1"), &parts, u64::MAX, Algorithms::NONE) {
        Ok(Settled::Awaiting {
            length: Some(190_000),
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(!st.open(&id("fin1")).unwrap().state().is_complete());

    // The commit that completes the part reports the final that awaits it.
    let part = st.open(&id("pb")).unwrap();
    let claim = part.claim_append(0, None).unwrap();
    let recorded = put(&claim, 0, &b).unwrap();
    assert!(recorded.state.is_complete());
    assert_eq!(recorded.state.awaited_by, [id("fin1")]);
    // Even with its claim still held, the part is read for the assembly.
    let algorithms = Algorithms::MD5;
    let done = match st.assemble_awaiting(&id("fin1"), &parts, u64::MAX, algorithms) {
        Ok(Settled::Assembled(done)) => done,
        other => panic!("{other:?}"),
    };
    drop(claim);
    let whole = [&a[..], &b[..], &a[..]].concat();
    assert_eq!(done.report.bytes, whole.len() as u64);
    assert_eq!(done.digests, Some(digests_of(&whole, algorithms)));
    let state = done.upload.state();
    assert!(state.is_complete());
    assert_eq!(state.length, Some(whole.len() as u64));
    assert_eq!(state.metadata, meta(&[("filename", b"whole.bin")]));
    assert_eq!(fs::read(done.upload.data_path()).unwrap(), whole);
    // Its handle holds the hand-off; nobody assembles it again.
    let again = st.open(&id("fin1")).unwrap();
    assert_eq!(again.state(), state);
    assert!(!again.finish(Algorithms::NONE).unwrap().hand_off);
    assert!(matches!(
        st.assemble_awaiting(&id("fin1"), &parts, u64::MAX, Algorithms::NONE),
        Ok(Settled::Elsewhere)
    ));
    assert!(temporaries(&tmp).is_empty());
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_deferred_part_leaves_the_length_unknown_until_declared() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    uploaded(&st, "da", b"12345", Algorithms::NONE);
    st.create(&id("db"), None, Metadata::new()).unwrap();
    awaiting_final(&st, "dfin", None, &["db"]);
    let parts = ids(&["da", "db"]);
    let settle = || st.assemble_awaiting(&id("dfin"), &parts, 100, Algorithms::NONE);
    assert!(matches!(settle(), Ok(Settled::Awaiting { length: None })));
    let part = st.open(&id("db")).unwrap();
    part.declare_length(3).unwrap();
    assert!(matches!(
        settle(),
        Ok(Settled::Awaiting { length: Some(8) })
    ));
    put(&part.claim_append(0, None).unwrap(), 0, b"678").unwrap();
    let Ok(Settled::Assembled(done)) = settle() else {
        panic!("not assembled");
    };
    assert_eq!(fs::read(done.upload.data_path()).unwrap(), b"12345678");
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_final_over_a_terminated_or_too_large_part_is_never_assembled() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[]);
    uploaded(&st, "ta", b"abc", Algorithms::NONE);
    st.create(&id("tb"), Some(4), Metadata::new()).unwrap();
    awaiting_final(&st, "tfin", Some(7), &["tb"]);
    let parts = ids(&["ta", "tb"]);
    assert!(matches!(
        st.assemble_awaiting(&id("tfin"), &parts, 6, Algorithms::NONE),
        Ok(Settled::TooLarge { known: 7 })
    ));
    st.terminate(&id("tb")).unwrap();
    match st.assemble_awaiting(&id("tfin"), &parts, u64::MAX, Algorithms::NONE) {
        Ok(Settled::PartGone {
            index: 1,
            error: UploadError::NotFound,
        }) => {}
        other => panic!("{other:?}"),
    }
    // Left as it was: empty, waiting.
    let fin = st.open(&id("tfin")).unwrap();
    assert!(!fin.state().is_complete());
    assert_eq!(fs::metadata(fin.data_path()).unwrap().len(), 0);
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn racing_assemblers_of_an_awaiting_final_make_one() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    let (a, b) = (content(400_000, 7), content(300_000, 11));
    uploaded(&st, "ra", &a, Algorithms::NONE);
    uploaded(&st, "rb", &b, Algorithms::NONE);
    awaiting_final(&st, "rfin", Some(700_000), &[]);
    let parts = ids(&["ra", "rb"]);
    let barrier = Arc::new(Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (st, barrier, parts) = (st.clone(), barrier.clone(), parts.clone());
            std::thread::spawn(move || {
                barrier.wait();
                match st.assemble_awaiting(&id("rfin"), &parts, u64::MAX, Algorithms::NONE) {
                    // The winner keeps its handle (and the hand-off) until all have tried.
                    Ok(Settled::Assembled(done)) => Ok(Some(done.upload)),
                    Ok(Settled::Elsewhere) => Ok(None),
                    other => Err(format!("{other:?}")),
                }
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let made = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    assert_eq!(made, 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let up = st.open(&id("rfin")).unwrap();
    assert_eq!(fs::read(up.data_path()).unwrap(), [a, b].concat());
    assert!(temporaries(&tmp).is_empty());
    fs::remove_dir_all(&tmp).unwrap();
}

/// Two writers complete the last two parts at once, each then asking for the assembly: one
/// always assembles (the one that looks second sees both parts complete), never two.
#[test]
fn completing_the_last_two_parts_at_once_assembles_exactly_once() {
    let tmp = crate::store::tests::tempdir();
    let st = store(&tmp, &[1]);
    for round in 0..40 {
        let (a, b, fin) = (
            format!("la{round}"),
            format!("lb{round}"),
            format!("lf{round}"),
        );
        for part in [&a, &b] {
            st.create(&id(part), Some(1000), Metadata::new()).unwrap();
        }
        awaiting_final(&st, &fin, Some(2000), &[&a, &b]);
        let parts = ids(&[&a, &b]);
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [(a.clone(), 1u8), (b.clone(), 2u8)]
            .into_iter()
            .map(|(part, byte)| {
                let (st, barrier, parts, fin) =
                    (st.clone(), barrier.clone(), parts.clone(), fin.clone());
                std::thread::spawn(move || {
                    let up = st.open(&id(&part)).unwrap();
                    let claim = up.claim_append(0, None).unwrap();
                    barrier.wait();
                    let recorded = put(&claim, 0, &[byte; 1000]).unwrap();
                    assert!(recorded.state.awaited_by.contains(&id(&fin)));
                    match st.assemble_awaiting(&id(&fin), &parts, u64::MAX, Algorithms::NONE) {
                        Ok(Settled::Assembled(done)) => Some(done.upload),
                        Ok(Settled::Awaiting { .. } | Settled::Elsewhere) => None,
                        other => panic!("{other:?}"),
                    }
                })
            })
            .collect();
        let made: Vec<_> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(made.len(), 1, "round {round}");
        let whole = [[1u8; 1000], [2u8; 1000]].concat();
        assert_eq!(fs::read(made[0].data_path()).unwrap(), whole);
    }
    fs::remove_dir_all(&tmp).unwrap();
}

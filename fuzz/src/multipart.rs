//! The streaming `MultipartParser` fed arbitrary bodies cut at fuzzer-chosen offsets.
//!
//! Differential property: the body fed whole, fed in the chosen pieces and (if short) fed
//! byte by byte gives the same events (part starts with their headers, the bytes of each
//! part, part ends) and the same outcome. Each run also checks the sink contract (no data
//! outside a part or for a skipped part, never empty data, starts and ends paired), that no
//! part's bytes hold a delimiter, that a parser that failed stays failed, and that `is_done`
//! matches `finish` (a body that ends unclosed, right after a delimiter line, is not done, and
//! has no part open).
//!
//! Input: flags, limits, skip mask, number of cuts `n`, `n` cut offsets (u16 LE), then the
//! boundary (fixed per flags, or a length byte and the boundary), then the body.
//! flags bits 0-1: boundary `b`, the Chrome one, the module's hand-off one, or custom;
//! bits 4-7: if not zero, the sink refuses the n-th part start or end.

use ngx_upload_engine::multipart::{
    Ending, Limits, MultipartError, MultipartParser, PartAction, PartHeaders, PartSink,
    MAX_BOUNDARY_LEN,
};

use crate::Cursor;

pub fn check(data: &[u8]) {
    let mut input = Cursor::new(data);
    let flags = input.u8();
    let limits = match input.u8() {
        0 => Limits::default(),
        b => Limits {
            max_part_header_len: usize::from(b & 0x1f) * 4,
            max_part_headers: usize::from(b >> 5),
        },
    };
    let skip_mask = input.u8();
    let cuts: Vec<usize> = (0..input.u8() % 16)
        .map(|_| usize::from(input.u16()))
        .collect();
    let boundary: &[u8] = match flags % 4 {
        0 => b"b",
        1 => b"----WebKitFormBoundaryePkpFF7tjBAqx29L",
        2 => b"------------------ngxupload1",
        _ => {
            let len = usize::from(input.u8());
            input.bytes(len)
        }
    };
    let fail_at = usize::from(flags >> 4);
    let body = input.rest();

    let parser = match MultipartParser::new(boundary, limits) {
        Ok(p) => p,
        Err(e) => {
            let valid = !boundary.is_empty()
                && boundary.len() <= MAX_BOUNDARY_LEN
                && !boundary.iter().any(|b| *b < 0x20 || *b == 0x7f);
            assert!(!valid, "boundary {boundary:?} refused: {e:?}");
            return;
        }
    };
    let sink = || Recorder::new(skip_mask, fail_at);

    let whole = run(parser.clone(), &[body], sink(), boundary);

    let mut offsets: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    offsets.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for cut in offsets {
        pieces.push(&body[at..cut]);
        at = cut;
    }
    pieces.push(&body[at..]);
    let cut = run(parser.clone(), &pieces, sink(), boundary);
    assert_eq!(
        cut,
        whole,
        "cut into {:?}",
        pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
    );

    if body.len() <= 4096 {
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        let one_by_one = run(parser, &bytes, sink(), boundary);
        assert_eq!(one_by_one, whole, "fed byte by byte");
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Start {
        name: Vec<u8>,
        raw_filename: Option<Vec<u8>>,
        filename: Option<Vec<u8>>,
        content_type: Option<Vec<u8>>,
        other: Vec<(Vec<u8>, Vec<u8>)>,
        skipped: bool,
    },
    /// Consecutive data calls, joined: where the data is cut depends on the input's cuts.
    Data(Vec<u8>),
    End,
}

/// The sink's own error: which part boundary it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused(usize);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    events: Vec<Event>,
    /// The first error of `feed` or `finish`, if any.
    error: Option<MultipartError<Refused>>,
    /// How `finish` said the body ended, if it succeeded.
    ending: Option<Ending>,
    done: bool,
}

struct Recorder {
    events: Vec<Event>,
    skip_mask: u8,
    fail_at: usize,
    parts: usize,
    boundaries_seen: usize,
    open: bool,
    skipped: bool,
}

impl Recorder {
    fn new(skip_mask: u8, fail_at: usize) -> Self {
        Self {
            events: Vec::new(),
            skip_mask,
            fail_at,
            parts: 0,
            boundaries_seen: 0,
            open: false,
            skipped: false,
        }
    }

    fn refuse_here(&mut self) -> Result<(), Refused> {
        self.boundaries_seen += 1;
        if self.boundaries_seen == self.fail_at {
            Err(Refused(self.fail_at))
        } else {
            Ok(())
        }
    }
}

impl PartSink for Recorder {
    type Error = Refused;

    fn part_start(&mut self, h: &PartHeaders) -> Result<PartAction, Refused> {
        assert!(!self.open, "part_start inside a part");
        assert_eq!(h.disposition.kind, "form-data");
        assert_eq!(h.is_file(), h.filename().is_some());
        assert_eq!(h.name(), h.disposition.name.as_deref().unwrap_or_default());
        for (name, value) in &h.other {
            assert!(!name.is_empty() && !name.contains(&b':'));
            assert!(h.header(name).is_some());
            assert!(!value.iter().any(|b| *b == b'\r' || *b == b'\n'));
        }
        self.refuse_here()?;
        let skipped = self.skip_mask & (1 << (self.parts % 8)) != 0;
        self.parts += 1;
        self.open = true;
        self.skipped = skipped;
        self.events.push(Event::Start {
            name: h.name().to_vec(),
            raw_filename: h.raw_filename().map(<[u8]>::to_vec),
            filename: h.filename().map(<[u8]>::to_vec),
            content_type: h.content_type().map(<[u8]>::to_vec),
            other: h.other.clone(),
            skipped,
        });
        Ok(if skipped {
            PartAction::Skip
        } else {
            PartAction::Accept
        })
    }

    fn part_data(&mut self, data: &[u8]) -> Result<(), Refused> {
        assert!(self.open, "part_data outside a part");
        assert!(!self.skipped, "part_data for a skipped part");
        assert!(!data.is_empty(), "empty part_data");
        match self.events.last_mut() {
            Some(Event::Data(bytes)) => bytes.extend_from_slice(data),
            _ => self.events.push(Event::Data(data.to_vec())),
        }
        Ok(())
    }

    fn part_end(&mut self) -> Result<(), Refused> {
        assert!(self.open, "part_end outside a part");
        self.refuse_here()?;
        self.open = false;
        self.events.push(Event::End);
        Ok(())
    }
}

fn run(
    mut parser: MultipartParser,
    pieces: &[&[u8]],
    mut sink: Recorder,
    boundary: &[u8],
) -> Outcome {
    let mut error = None;
    for piece in pieces {
        if let Err(e) = parser.feed(piece, &mut sink) {
            error = Some(e);
            break;
        }
    }
    let mut ending = None;
    if error.is_none() {
        match parser.finish(&mut sink) {
            Ok(e) => ending = Some(e),
            Err(e) => error = Some(e),
        }
    }
    let done = parser.is_done();
    match &error {
        None => {
            assert!(!sink.open, "body done inside a part");
            match ending {
                Some(Ending::Closed) => {
                    assert!(done, "finish says closed before the closing delimiter");
                    // The epilogue is ignored, whatever it holds.
                    assert_eq!(parser.feed(b"\r\n--x\r\n", &mut sink), Ok(()));
                    assert_eq!(parser.finish(&mut sink), Ok(Ending::Closed));
                }
                Some(Ending::Unclosed) => {
                    assert!(!done, "finish says unclosed after the closing delimiter");
                    assert_eq!(parser.finish(&mut sink), Ok(Ending::Unclosed));
                    // The body has ended: nothing more can be fed.
                    assert_eq!(parser.feed(b"x", &mut sink), Err(MultipartError::Failed));
                }
                None => unreachable!("finish succeeded"),
            }
        }
        Some(e) => {
            assert!(!done);
            assert_ne!(*e, MultipartError::Failed, "first error cannot be Failed");
            assert_eq!(parser.feed(b"x", &mut sink), Err(MultipartError::Failed));
            assert_eq!(parser.finish(&mut sink), Err(MultipartError::Failed));
        }
    }
    // No part's bytes can hold a delimiter: the parser would have ended the part there.
    let mut delimiter = b"\n--".to_vec();
    delimiter.extend_from_slice(boundary);
    let total: usize = sink
        .events
        .iter()
        .map(|e| match e {
            Event::Data(bytes) => {
                assert!(
                    !crate::contains(bytes, &delimiter),
                    "delimiter in part data"
                );
                bytes.len()
            }
            _ => 0,
        })
        .sum();
    let fed: usize = pieces.iter().map(|p| p.len()).sum();
    assert!(total <= fed);
    Outcome {
        events: sink.events,
        error,
        ending,
        done,
    }
}

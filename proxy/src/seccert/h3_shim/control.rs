//! The side parser of the client's control stream (after its stream type):
//! SETTINGS first, then frame types only (RFC 9114 §6.2.1, §7.2.4). Pure:
//! bytes in, [`ControlEvent`]s out; the frame layer is `wire::h3_frame`.

use std::ops::ControlFlow;

use crate::wire::h3_frame::{FrameEvent, FrameParser, FrameType, SettingId, SettingsReader};

/// At most this many of the client's SETTINGS entries are recorded (unknown
/// ids are unlimited on the wire; our own id is tracked whatever its place).
pub const MAX_RECORDED_SETTINGS: usize = 64;

/// What the control-stream parser reports.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// The first frame, SETTINGS, is complete: its entries (at most
    /// [`MAX_RECORDED_SETTINGS`]) and our setting's value (the first value
    /// that is not 0 or 1 if any, else the last).
    Settings {
        entries: Vec<(u64, u64)>,
        ours: Option<u64>,
    },
    /// A later frame of this type started.
    Frame(FrameType),
    /// The first frame is not SETTINGS or does not parse (h3 closes the
    /// connection for this; the parser stops).
    Malformed,
}

/// The client's SETTINGS as they arrive: recorded entries and our value.
#[derive(Debug)]
struct ClientSettings {
    reader: SettingsReader,
    entries: Vec<(u64, u64)>,
    ours: Option<u64>,
}

#[derive(Debug)]
enum ControlPhase {
    ExpectSettings,
    InSettings(ClientSettings),
    After,
    Dead,
}

/// The client's control stream after its stream type.
///
/// Public for fuzzing (`tests/fuzz`, target `h3_control`): it reads peer
/// bytes; the proxy itself uses it only through the shim.
#[derive(Debug)]
pub struct ControlParser {
    our_setting: SettingId,
    frames: FrameParser,
    phase: ControlPhase,
}

// === impl ClientSettings ===

impl ClientSettings {
    fn feed(&mut self, payload: &[u8], our_setting: SettingId) {
        let (entries, ours) = (&mut self.entries, &mut self.ours);
        self.reader.feed(payload, |id, v| {
            if entries.len() < MAX_RECORDED_SETTINGS {
                entries.push((id.0, v));
            }
            if id == our_setting {
                // A bad value sticks even if repeated with 1 afterwards.
                *ours = match *ours {
                    Some(bad) if bad > 1 => Some(bad),
                    _ => Some(v),
                };
            }
        });
    }
}

// === impl ControlParser ===

impl ControlParser {
    /// A parser that watches for `our_setting` in the client's SETTINGS.
    pub fn new(our_setting: SettingId) -> ControlParser {
        ControlParser {
            our_setting,
            frames: FrameParser::new(),
            phase: ControlPhase::ExpectSettings,
        }
    }

    /// The first frame was not a well-formed SETTINGS; nothing more is parsed.
    pub fn is_dead(&self) -> bool {
        matches!(self.phase, ControlPhase::Dead)
    }

    /// Feeds the next bytes of the stream (any chunking); `out` gets each event.
    pub fn feed(&mut self, input: &[u8], out: &mut impl FnMut(ControlEvent)) {
        if self.is_dead() {
            return;
        }
        let our_setting = self.our_setting;
        let phase = &mut self.phase;
        let _ = self.frames.feed(input, |ev| {
            match (ev, &mut *phase) {
                (FrameEvent::Type(ty), ControlPhase::ExpectSettings) => {
                    // RFC 9114 §6.2.1: "Each side MUST initiate a single
                    // control stream [...] and send a SETTINGS frame as the
                    // first frame on this stream."
                    if ty != FrameType::SETTINGS {
                        *phase = ControlPhase::Dead;
                        out(ControlEvent::Malformed);
                        return ControlFlow::Break(());
                    }
                    *phase = ControlPhase::InSettings(ClientSettings {
                        reader: SettingsReader::new(),
                        entries: Vec::new(),
                        ours: None,
                    });
                }
                (FrameEvent::Payload(p), ControlPhase::InSettings(s)) => s.feed(p, our_setting),
                (FrameEvent::End, ControlPhase::InSettings(_)) => {
                    if let ControlPhase::InSettings(s) =
                        std::mem::replace(phase, ControlPhase::After)
                    {
                        if s.reader.finish().is_err() {
                            *phase = ControlPhase::Dead;
                            out(ControlEvent::Malformed);
                            return ControlFlow::Break(());
                        }
                        out(ControlEvent::Settings {
                            entries: s.entries,
                            ours: s.ours,
                        });
                    }
                }
                (FrameEvent::Type(ty), ControlPhase::After) => out(ControlEvent::Frame(ty)),
                _ => {}
            }
            ControlFlow::Continue(())
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    use crate::wire::varint;
    use proptest::prelude::*;

    const OUR_SETTING: u64 = 0x5E_CC02;
    const OUR_FRAME: u64 = 0x5E_CC01;

    use crate::wire::h3_frame::testing::{frame, settings_payload};

    fn control_events(bytes: &[u8], cuts: &[usize]) -> Vec<ControlEvent> {
        let mut p = ControlParser::new(SettingId(OUR_SETTING));
        let mut events = Vec::new();
        let mut last = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(bytes.len());
        for c in cuts {
            p.feed(&bytes[last..c], &mut |e| events.push(e));
            last = c;
        }
        events
    }

    #[test]
    fn control_parser_reports_settings_then_frame_types() {
        let mut bytes = frame(0x04, &settings_payload(&[(0x01, 0), (OUR_SETTING, 1)]));
        bytes.extend(frame(0x07, &[0x00]));
        bytes.extend(frame(OUR_FRAME, b"abc"));
        for cut in 0..bytes.len() {
            assert_eq!(
                control_events(&bytes, &[cut]),
                vec![
                    ControlEvent::Settings {
                        entries: vec![(0x01, 0), (OUR_SETTING, 1)],
                        ours: Some(1)
                    },
                    ControlEvent::Frame(FrameType(0x07)),
                    ControlEvent::Frame(FrameType(OUR_FRAME)),
                ]
            );
        }
    }

    #[test]
    fn control_parser_bad_first_frame_and_truncated_settings() {
        assert_eq!(
            control_events(&frame(0x07, &[0]), &[]),
            vec![ControlEvent::Malformed]
        );
        // Length 1, one byte: an id without a value.
        assert_eq!(
            control_events(&[0x04, 0x01, 0x01], &[]),
            vec![ControlEvent::Malformed]
        );
        // A bad value sticks even if repeated with 1 afterwards.
        let bytes = frame(
            0x04,
            &settings_payload(&[(OUR_SETTING, 7), (OUR_SETTING, 1)]),
        );
        assert!(matches!(
            control_events(&bytes, &[]).as_slice(),
            [ControlEvent::Settings { ours: Some(7), .. }]
        ));
    }

    #[test]
    fn settings_entries_are_capped_but_ours_is_always_found() {
        let mut pairs: Vec<(u64, u64)> = (0..200).map(|i| (0x21 + 0x1f * i, i)).collect();
        pairs.push((OUR_SETTING, 1));
        let bytes = frame(0x04, &settings_payload(&pairs));
        match control_events(&bytes, &[17]).as_slice() {
            [ControlEvent::Settings { entries, ours }] => {
                assert_eq!(entries.len(), MAX_RECORDED_SETTINGS);
                assert_eq!(*ours, Some(1));
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn control_parser_never_panics(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..40), 0..12)) {
            let mut c = ControlParser::new(SettingId(OUR_SETTING));
            for ch in &chunks {
                c.feed(ch, &mut |_| {});
            }
        }

        #[test]
        fn settings_round_trip(
            pairs in proptest::collection::vec(
                (
                    prop_oneof![Just(OUR_SETTING), 0..=varint::MAX],
                    prop_oneof![0u64..3, 0..=varint::MAX],
                ),
                0..20,
            ),
            cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let bytes = frame(0x04, &settings_payload(&pairs));
            let values: Vec<u64> = pairs.iter().filter(|p| p.0 == OUR_SETTING).map(|p| p.1).collect();
            let ours = values.iter().copied().find(|v| *v > 1).or(values.last().copied());
            prop_assert_eq!(
                control_events(&bytes, &cuts),
                vec![ControlEvent::Settings { entries: pairs.clone(), ours }]
            );
        }
    }
}

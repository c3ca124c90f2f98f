//! Keeps each player's VP8 picture ids and TL0PICIDX monotonic across its layers.
//!
//! A VP8 payload descriptor (RFC 7741 §4.2) numbers frames with a picture id and base-layer
//! frames with TL0PICIDX. Each simulcast layer has its own numbering, and Chromium restarts it
//! when it reconfigures its encoder (turning a layer on restarts every layer, with a keyframe).
//! A Chromium player sets aside frames whose picture id is not newer than the last one it
//! decoded, so after a switch to a layer numbered lower, or a restart, its picture stopped
//! (with no loss, NACK or PLI) until the node switched layers again or the player asked for a
//! keyframe itself: 0.9–3 s in about one run in five of `tests/browser/simulcast.test.mjs`.
//!
//! The rewrite is per player: players of one camera get different layers and switch at
//! different keyframes. At each keyframe the numbering is re-anchored to continue from the last
//! number sent; between keyframes it is the source's plus that offset. Nothing after a keyframe
//! refers to a frame before it, so no reference breaks. A player that never switched has no
//! offset, and its payloads are forwarded as they came, without a copy.

use bytes::{Bytes, BytesMut};

/// Where the numbers of one VP8 payload descriptor are, if it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    /// Offset of the picture id and whether it is 15 bits (M set) or 7.
    picture_id: Option<(usize, bool)>,
    /// Offset of TL0PICIDX.
    tl0: Option<usize>,
}

fn fields(payload: &[u8]) -> Option<Fields> {
    let desc = *payload.first()?;
    if desc & 0x80 == 0 {
        return Some(Fields {
            picture_id: None,
            tl0: None,
        });
    }
    let x = *payload.get(1)?;
    let mut at = 2;
    let picture_id = if x & 0x80 != 0 {
        let long = *payload.get(at)? & 0x80 != 0;
        if long {
            payload.get(at + 1)?;
        }
        let field = (at, long);
        at += if long { 2 } else { 1 };
        Some(field)
    } else {
        None
    };
    let tl0 = if x & 0x40 != 0 {
        payload.get(at)?;
        Some(at)
    } else {
        None
    };
    Some(Fields { picture_id, tl0 })
}

fn read_picture_id(payload: &[u8], (at, long): (usize, bool)) -> u16 {
    if long {
        u16::from_be_bytes([payload[at], payload[at + 1]]) & 0x7fff
    } else {
        u16::from(payload[at] & 0x7f)
    }
}

fn write_picture_id(payload: &mut [u8], (at, long): (usize, bool), id: u16) {
    if long {
        let [hi, lo] = (id & 0x7fff).to_be_bytes();
        payload[at] = 0x80 | hi;
        payload[at + 1] = lo;
    } else {
        payload[at] = (id & 0x7f) as u8;
    }
}

/// One table camera's rewrite state.
#[derive(Debug, Default, Clone)]
pub struct Vp8Numbering {
    /// Added to the source's picture id (mod 2^15), and the last id sent.
    picture_offset: u16,
    last_picture: Option<u16>,
    /// Added to the source's TL0PICIDX (mod 2^8), and the last one sent.
    tl0_offset: u8,
    last_tl0: Option<u8>,
}

impl Vp8Numbering {
    /// The payload to forward for a VP8 packet; `keyframe_start` is true on the first packet
    /// of a keyframe. Returns the payload unchanged when it carries no numbers or none change.
    pub fn rewrite(&mut self, payload: Bytes, keyframe_start: bool) -> Bytes {
        let Some(f) = fields(&payload) else {
            return payload;
        };
        let picture = f.picture_id.map(|p| read_picture_id(&payload, p));
        let tl0 = f.tl0.map(|at| payload[at]);
        if keyframe_start {
            // Continue from the last numbers sent, whatever the source's were.
            if let (Some(id), Some(last)) = (picture, self.last_picture) {
                self.picture_offset = last.wrapping_add(1).wrapping_sub(id) & 0x7fff;
            }
            if let (Some(idx), Some(last)) = (tl0, self.last_tl0) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(idx);
            }
        }
        let out_picture = picture.map(|id| id.wrapping_add(self.picture_offset) & 0x7fff);
        let out_tl0 = tl0.map(|idx| idx.wrapping_add(self.tl0_offset));
        if out_picture.is_some() {
            self.last_picture = out_picture;
        }
        if out_tl0.is_some() {
            self.last_tl0 = out_tl0;
        }
        if out_picture == picture && out_tl0 == tl0 {
            return payload;
        }
        let mut out = BytesMut::from(&payload[..]);
        if let (Some(p), Some(id)) = (f.picture_id, out_picture) {
            write_picture_id(&mut out, p, id);
        }
        if let (Some(at), Some(idx)) = (f.tl0, out_tl0) {
            out[at] = idx;
        }
        out.freeze()
    }
}

impl Vp8Numbering {
    /// A retransmission's payload, numbered as the packet was when first sent (the current
    /// offsets; a retransmission is of the frames since the last keyframe).
    pub fn renumber(&self, payload: Bytes) -> Bytes {
        let Some(f) = fields(&payload) else {
            return payload;
        };
        if self.picture_offset == 0 && self.tl0_offset == 0 {
            return payload;
        }
        let mut out = BytesMut::from(&payload[..]);
        if let Some(p) = f.picture_id {
            let id = read_picture_id(&payload, p).wrapping_add(self.picture_offset) & 0x7fff;
            write_picture_id(&mut out, p, id);
        }
        if let Some(at) = f.tl0 {
            out[at] = payload[at].wrapping_add(self.tl0_offset);
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 payload with a 15-bit picture id and TL0PICIDX (X, I, L set; S for `start`).
    fn packet(picture: u16, tl0: u8, start: bool) -> Bytes {
        let [hi, lo] = picture.to_be_bytes();
        let desc = 0x80 | if start { 0x10 } else { 0 };
        Bytes::from(vec![desc, 0xc0, 0x80 | hi, lo, tl0, 0x9d, 0x01, 0x2a])
    }

    fn numbers(p: &[u8]) -> (u16, u8) {
        (u16::from_be_bytes([p[2], p[3]]) & 0x7fff, p[4])
    }

    #[test]
    fn a_source_that_restarts_lower_still_counts_up_for_the_player() {
        let mut n = Vp8Numbering::default();
        // Layer 'h' at picture 20000, TL0 200: passed through unchanged.
        for (i, start) in [(0, true), (0, false), (1, false), (2, false)] {
            let out = n.rewrite(packet(20000 + i, 200 + i as u8, start), start && i == 0);
            assert_eq!(numbers(&out), (20000 + i, 200 + i as u8));
        }
        // A switch (or an encoder restart) to a keyframe numbered 5000 / 17: it continues.
        let out = n.rewrite(packet(5000, 17, true), true);
        assert_eq!(numbers(&out), (20003, 203));
        let out = n.rewrite(packet(5000, 17, false), false);
        assert_eq!(
            numbers(&out),
            (20003, 203),
            "the keyframe's other packets alike"
        );
        let out = n.rewrite(packet(5001, 18, true), false);
        assert_eq!(numbers(&out), (20004, 204));
        // The rest of the payload is untouched.
        assert_eq!(&out[5..], &[0x9d, 0x01, 0x2a]);
    }

    #[test]
    fn numbers_wrap_in_their_own_widths_and_short_ids_stay_short() {
        let mut n = Vp8Numbering::default();
        n.rewrite(packet(0x7ffe, 255, true), true);
        let out = n.rewrite(packet(10, 3, true), true);
        assert_eq!(numbers(&out), (0x7fff, 0));
        let out = n.rewrite(packet(11, 4, true), false);
        assert_eq!(numbers(&out), (0, 1));
        // A 7-bit picture id (M clear), no TL0PICIDX.
        let mut n = Vp8Numbering::default();
        n.rewrite(Bytes::from(vec![0x90, 0x80, 120, 0x9d]), true);
        let out = n.rewrite(Bytes::from(vec![0x90, 0x80, 3, 0x9d]), true);
        assert_eq!(&out[..], &[0x90, 0x80, 121, 0x9d]);
    }

    #[test]
    fn payloads_without_numbers_or_truncated_pass_through() {
        let mut n = Vp8Numbering::default();
        for p in [
            vec![],
            vec![0x10, 0x9d],
            vec![0x90],
            vec![0x90, 0xc0, 0x80],
            vec![0x90, 0x80, 0x80],
        ] {
            let b = Bytes::from(p.clone());
            assert_eq!(n.rewrite(b, true), Bytes::from(p));
        }
    }
}

//! The picture size a keyframe announces, read from its first RTP packet without decoding.
//!
//! Simulcast layers are ranked by size (see `simulcast.rs`): rids are names a publisher picks
//! (`q;h;f`, `0;1;2`, `high;mid;low`) and the order of `a=simulcast` is a preference, not a
//! size, so the node looks at what the encoder says.
//!
//! - VP8 (RFC 6386 §9.1, RFC 7741): a key frame's 10-byte header ends with the 14-bit width and
//!   height after the start code `9d 01 2a`.
//! - H.264 (ITU-T H.264 §7.3.2.1.1): the sequence parameter set carries the size in macroblocks
//!   and the cropping window; it rides alone, in a STAP-A, or at the start of an FU-A.

use super::keyframe::VideoCodec;

/// Width and height of the picture a keyframe starts, when this packet says.
pub fn keyframe_size(codec: VideoCodec, payload: &[u8]) -> Option<(u16, u16)> {
    match codec {
        VideoCodec::Vp8 => vp8_size(payload),
        VideoCodec::H264 => h264_size(payload),
    }
}

fn vp8_size(payload: &[u8]) -> Option<(u16, u16)> {
    let desc = *payload.first()?;
    let mut i = 1;
    if desc & 0x80 != 0 {
        let x = *payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            i += if *payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    let header = payload.get(i..i + 10)?;
    // Frame tag bit 0 clear: a key frame; then the start code.
    if header[0] & 0x01 != 0 || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([header[6], header[7]]) & 0x3fff;
    let height = u16::from_le_bytes([header[8], header[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

fn h264_size(payload: &[u8]) -> Option<(u16, u16)> {
    let first = *payload.first()?;
    match first & 0x1f {
        7 => sps_size(payload.get(1..)?),
        24 => {
            let mut rest = payload.get(1..)?;
            while rest.len() > 2 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let nal = rest.get(2..2 + size)?;
                if nal.first().is_some_and(|b| b & 0x1f == 7) {
                    return sps_size(&nal[1..]);
                }
                rest = &rest[2 + size..];
            }
            None
        }
        28 => {
            let header = *payload.get(1)?;
            (header & 0x80 != 0 && header & 0x1f == 7)
                .then(|| sps_size(payload.get(2..)?))
                .flatten()
        }
        _ => None,
    }
}

/// Reads an SPS body (after the NAL header), skipping emulation-prevention bytes as it goes.
struct Bits<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u8,
    zeros: u8,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    fn bit(&mut self) -> Option<u32> {
        if self.bit == 0 {
            // 00 00 03: the 03 is not part of the payload.
            if self.zeros >= 2 && self.data.get(self.byte) == Some(&3) {
                self.byte += 1;
                self.zeros = 0;
            }
            let b = *self.data.get(self.byte)?;
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        }
        let b = *self.data.get(self.byte)?;
        let v = (b >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Some(v as u32)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |acc, _| Some(acc << 1 | self.bit()?))
    }

    /// Unsigned Exp-Golomb.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + self.bits(zeros)? as u64).min(u32::MAX as u64) as u32)
    }

    /// Signed Exp-Golomb (only skipped here).
    fn se(&mut self) -> Option<()> {
        self.ue().map(|_| ())
    }
}

fn sps_size(sps: &[u8]) -> Option<(u16, u16)> {
    let mut r = Bits::new(sps);
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    let mut separate_planes = false;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            separate_planes = r.bit()? == 1;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? as u64 + 1;
    let height_units = r.ue()? as u64 + 1;
    let frame_mbs_only = r.bit()? as u64;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (unit_x, unit_y) = match (chroma_format, separate_planes) {
            (1, false) => (2, 2),
            (2, false) => (2, 1),
            _ => (1, 1),
        };
        crop_x = unit_x * (left as u64 + right as u64);
        crop_y = unit_y * (2 - frame_mbs_only) * (top as u64 + bottom as u64);
    }
    let width = (width_mbs * 16).checked_sub(crop_x)?;
    let height = ((2 - frame_mbs_only) * height_units * 16).checked_sub(crop_y)?;
    let size = (u16::try_from(width).ok()?, u16::try_from(height).ok()?);
    (size.0 > 0 && size.1 > 0).then_some(size)
}

fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let code = r.ue()? as i64;
            let delta = if code % 2 == 1 {
                (code + 1) / 2
            } else {
                -(code / 2)
            };
            next = (last + delta + 256) % 256;
        }
        last = if next == 0 { last } else { next };
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_key_frame_header_gives_the_size() {
        // Descriptor with X=1, I=1 (15-bit picture id); key frame tag; start code; 1280x720.
        let packet = [
            0x90, 0x80, 0x81, 0x23, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02,
        ];
        assert_eq!(keyframe_size(VideoCodec::Vp8, &packet), Some((1280, 720)));
        // Scale bits in the top two bits are not part of the size.
        let scaled = [
            0x10, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x40,
        ];
        assert_eq!(keyframe_size(VideoCodec::Vp8, &scaled), Some((320, 180)));
        // An interframe, a short packet, garbage: nothing.
        assert_eq!(
            keyframe_size(VideoCodec::Vp8, &[0x10, 0x51, 0x42, 0x00]),
            None
        );
        assert_eq!(keyframe_size(VideoCodec::Vp8, &[0x90, 0x80]), None);
        assert_eq!(keyframe_size(VideoCodec::Vp8, &[]), None);
    }

    #[test]
    fn h264_sps_gives_the_cropped_size() {
        // SPSs written by x264 (Debian's ffmpeg, `-profile:v baseline|main|high`).
        // Constrained baseline 1280x720: 80x45 macroblocks, no cropping.
        let sps_720 = [
            0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
            0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
        ];
        assert_eq!(keyframe_size(VideoCodec::H264, &sps_720), Some((1280, 720)));
        // Main 320x180: 20x12 macroblocks cropped by 12 lines.
        let sps_180 = [
            0x67, 0x4d, 0x40, 0x0d, 0xec, 0xa0, 0xa0, 0xcf, 0xcf, 0x80, 0x88, 0x00, 0x00, 0x03,
            0x00, 0x08, 0x00, 0x00, 0x03, 0x01, 0xe0, 0x78, 0xa1, 0x4c, 0xb0,
        ];
        assert_eq!(keyframe_size(VideoCodec::H264, &sps_180), Some((320, 180)));
        // High profile 1920x1080: 120x68 macroblocks cropped by 8 lines at the bottom.
        let sps_1080 = [
            0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00,
            0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
        ];
        assert_eq!(
            keyframe_size(VideoCodec::H264, &sps_1080),
            Some((1920, 1080))
        );
        // The same SPS inside a STAP-A, after nothing else.
        let mut stap = vec![0x78, 0x00, sps_720.len() as u8];
        stap.extend_from_slice(&sps_720);
        stap.extend_from_slice(&[0x00, 0x02, 0x68, 0xce]);
        assert_eq!(keyframe_size(VideoCodec::H264, &stap), Some((1280, 720)));
        // An IDR slice alone says nothing; truncated SPSs never panic.
        assert_eq!(keyframe_size(VideoCodec::H264, &[0x65, 0x88, 0x84]), None);
        for n in 0..sps_1080.len() {
            let _ = keyframe_size(VideoCodec::H264, &sps_1080[..n]);
        }
    }
}

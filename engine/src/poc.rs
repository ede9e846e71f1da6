//! Picture order count (H.264 8.2.1), all three types, with the MSB wrap.
//!
//! h264-reader parses `pic_order_cnt_lsb` and the delta fields but leaves the
//! full count to the caller; display order (and so PTS for streams with
//! B-frames) comes from it. The state here is updated for every picture that is
//! passed on to decoding, exactly as a decoder would.

use h264_reader::nal::sps::{PicOrderCntType, SeqParameterSet};

use super::params::SliceInfo;

/// Running POC state of one stream.
#[derive(Clone, Debug, Default)]
pub struct PocState {
    // Type 0: of the previous reference picture.
    prev_msb: i64,
    prev_lsb: i64,
    // Types 1 and 2: of the previous picture.
    prev_frame_num_offset: i64,
    prev_frame_num: i64,
    prev_had_mmco5: bool,
    /// Type 0 after an mmco5 reference picture: its top POC after the reset.
    prev_ref_top_after_mmco5: Option<i64>,
}

/// POC of one picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poc {
    /// The picture's order count (min of top and bottom for a frame).
    pub value: i64,
    /// Display order restarts here (IDR or mmco5): earlier pictures are all
    /// output before this one.
    pub resets: bool,
}

impl PocState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Computes the POC of `s` (the first slice of a picture) and advances.
    pub fn next(&mut self, sps: &SeqParameterSet, s: &SliceInfo) -> Poc {
        let max_frame_num: i64 = 1i64 << (sps.log2_max_frame_num_minus4 as i64 + 4);
        let frame_num = s.frame_num as i64;
        let is_ref = s.nal_ref_idc != 0;
        let (top, bottom) = match &sps.pic_order_cnt {
            PicOrderCntType::TypeZero {
                log2_max_pic_order_cnt_lsb_minus4,
            } => {
                let max_lsb: i64 = 1i64 << (*log2_max_pic_order_cnt_lsb_minus4 as i64 + 4);
                let (prev_msb, prev_lsb) = if s.idr {
                    (0, 0)
                } else if self.prev_had_mmco5 {
                    (0, self.prev_ref_top_after_mmco5.unwrap_or(0))
                } else {
                    (self.prev_msb, self.prev_lsb)
                };
                let lsb = s.poc_lsb.unwrap_or(0) as i64;
                let msb = if lsb < prev_lsb && prev_lsb - lsb >= max_lsb / 2 {
                    prev_msb + max_lsb
                } else if lsb > prev_lsb && lsb - prev_lsb > max_lsb / 2 {
                    prev_msb - max_lsb
                } else {
                    prev_msb
                };
                let (top, bottom) = match s.field {
                    None => (msb + lsb, msb + lsb + s.delta_poc_bottom as i64),
                    Some(false) => (msb + lsb, msb + lsb),
                    Some(true) => (msb + lsb, msb + lsb),
                };
                if is_ref {
                    self.prev_msb = msb;
                    self.prev_lsb = lsb;
                }
                (top, bottom)
            }
            PicOrderCntType::TypeOne {
                offset_for_non_ref_pic,
                offset_for_top_to_bottom_field,
                offsets_for_ref_frame,
                ..
            } => {
                let frame_num_offset = self.frame_num_offset(s.idr, frame_num, max_frame_num);
                let n = offsets_for_ref_frame.len() as i64;
                let mut abs_frame_num = if n != 0 {
                    frame_num_offset + frame_num
                } else {
                    0
                };
                if !is_ref && abs_frame_num > 0 {
                    abs_frame_num -= 1;
                }
                let mut expected = 0i64;
                if abs_frame_num > 0 && n > 0 {
                    let cycle_cnt = (abs_frame_num - 1) / n;
                    let in_cycle = ((abs_frame_num - 1) % n) as usize;
                    let per_cycle: i64 = offsets_for_ref_frame.iter().map(|&o| o as i64).sum();
                    expected = cycle_cnt.saturating_mul(per_cycle);
                    for o in offsets_for_ref_frame.iter().take(in_cycle + 1) {
                        expected += *o as i64;
                    }
                }
                if !is_ref {
                    expected += *offset_for_non_ref_pic as i64;
                }
                let d0 = s.delta_poc[0] as i64;
                let d1 = s.delta_poc[1] as i64;
                let t2b = *offset_for_top_to_bottom_field as i64;
                self.prev_frame_num_offset = frame_num_offset;
                match s.field {
                    None => (expected + d0, expected + d0 + t2b + d1),
                    Some(false) => (expected + d0, expected + d0),
                    Some(true) => (expected + t2b + d0, expected + t2b + d0),
                }
            }
            PicOrderCntType::TypeTwo => {
                let frame_num_offset = self.frame_num_offset(s.idr, frame_num, max_frame_num);
                let temp = if s.idr {
                    0
                } else if !is_ref {
                    2 * (frame_num_offset + frame_num) - 1
                } else {
                    2 * (frame_num_offset + frame_num)
                };
                self.prev_frame_num_offset = frame_num_offset;
                (temp, temp)
            }
        };
        self.prev_frame_num = frame_num;
        let value = match s.field {
            None => top.min(bottom),
            Some(false) => top,
            Some(true) => bottom,
        };
        self.prev_had_mmco5 = s.mmco5;
        if s.mmco5 {
            // 8.2.1: after mmco5 the picture's POCs are relative to itself.
            let temp = value;
            self.prev_ref_top_after_mmco5 =
                Some(if s.field == Some(true) { 0 } else { top - temp });
            self.prev_frame_num_offset = 0;
            self.prev_frame_num = 0;
        }
        Poc {
            value: if s.mmco5 { 0 } else { value },
            resets: s.idr || s.mmco5,
        }
    }

    fn frame_num_offset(&self, idr: bool, frame_num: i64, max_frame_num: i64) -> i64 {
        let prev_offset = if self.prev_had_mmco5 {
            0
        } else {
            self.prev_frame_num_offset
        };
        if idr {
            0
        } else if self.prev_frame_num > frame_num {
            prev_offset + max_frame_num
        } else {
            prev_offset
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sps_type0(log2_lsb_minus4: u8) -> SeqParameterSet {
        let mut sps = base_sps();
        sps.pic_order_cnt = PicOrderCntType::TypeZero {
            log2_max_pic_order_cnt_lsb_minus4: log2_lsb_minus4,
        };
        sps
    }

    fn base_sps() -> SeqParameterSet {
        // The baseline test stream's SPS, re-parsed, then adjusted per test.
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/baseline_30.h264"
        ))
        .unwrap();
        let (sps, _) = crate::params::tests_support::first_params(&data);
        use h264_reader::nal::{Nal, RefNal};
        SeqParameterSet::from_bits(RefNal::new(&sps, &[], true).rbsp_bits()).unwrap()
    }

    fn slice(idr: bool, ref_idc: u8, frame_num: u32, lsb: u32) -> SliceInfo {
        SliceInfo {
            nal_ref_idc: ref_idc,
            idr,
            first_mb: 0,
            is_intra: idr,
            pps_id: 0,
            sps_id: 0,
            frame_num,
            field: None,
            idr_pic_id: idr.then_some(0),
            poc_lsb: Some(lsb),
            delta_poc_bottom: 0,
            delta_poc: [0, 0],
            redundant_pic_cnt: 0,
            mmco5: false,
        }
    }

    #[test]
    fn type0_msb_wraps_forward() {
        // max lsb = 16: lsb 0, 6, 12, 2 (=18), 8 (=24), 14 (=30), 4 (=36)
        let sps = sps_type0(0);
        let mut st = PocState::new();
        let mut out = vec![st.next(&sps, &slice(true, 3, 0, 0)).value];
        for (i, lsb) in [6, 12, 2, 8, 14, 4].iter().enumerate() {
            out.push(st.next(&sps, &slice(false, 2, i as u32 + 1, *lsb)).value);
        }
        assert_eq!(out, vec![0, 6, 12, 18, 24, 30, 36]);
    }

    #[test]
    fn type0_non_reference_pictures_do_not_move_the_msb_base() {
        // Refs at 0, 8 (I P), non-ref B at 4, then ref 14, non-ref B 2 (=18? no: 2 wraps to 18)
        let sps = sps_type0(0);
        let mut st = PocState::new();
        assert_eq!(st.next(&sps, &slice(true, 3, 0, 0)).value, 0);
        assert_eq!(st.next(&sps, &slice(false, 2, 1, 8)).value, 8);
        assert_eq!(st.next(&sps, &slice(false, 0, 2, 4)).value, 4);
        assert_eq!(st.next(&sps, &slice(false, 2, 2, 14)).value, 14);
        assert_eq!(st.next(&sps, &slice(false, 0, 3, 10)).value, 10);
        assert_eq!(st.next(&sps, &slice(false, 2, 3, 4)).value, 20);
        assert_eq!(st.next(&sps, &slice(false, 0, 4, 2)).value, 18);
    }

    #[test]
    fn type0_idr_resets() {
        let sps = sps_type0(0);
        let mut st = PocState::new();
        st.next(&sps, &slice(true, 3, 0, 0));
        st.next(&sps, &slice(false, 2, 1, 10));
        let p = st.next(&sps, &slice(true, 3, 0, 0));
        assert_eq!(
            p,
            Poc {
                value: 0,
                resets: true
            }
        );
    }

    #[test]
    fn type2_follows_decode_order() {
        let mut sps = base_sps();
        sps.pic_order_cnt = PicOrderCntType::TypeTwo;
        let mut st = PocState::new();
        let mut v = vec![st.next(&sps, &slice(true, 3, 0, 0)).value];
        v.push(st.next(&sps, &slice(false, 2, 1, 0)).value);
        v.push(st.next(&sps, &slice(false, 0, 2, 0)).value);
        v.push(st.next(&sps, &slice(false, 2, 2, 0)).value);
        assert_eq!(v, vec![0, 2, 3, 4]);
        // frame_num wraps (max 16 with log2_max_frame_num_minus4 = 0)
        let mut sps = sps.clone();
        sps.log2_max_frame_num_minus4 = 0;
        let mut st = PocState::new();
        let mut last = st.next(&sps, &slice(true, 3, 0, 0)).value;
        for i in 1..40u32 {
            let p = st.next(&sps, &slice(false, 2, i % 16, 0)).value;
            assert!(
                p > last,
                "type 2 POC must keep increasing across frame_num wrap"
            );
            last = p;
        }
    }

    #[test]
    fn type1_expected_delta_cycle() {
        let mut sps = base_sps();
        sps.pic_order_cnt = PicOrderCntType::TypeOne {
            delta_pic_order_always_zero_flag: true,
            offset_for_non_ref_pic: -2,
            offset_for_top_to_bottom_field: 0,
            offsets_for_ref_frame: vec![4],
        };
        let mut st = PocState::new();
        // I0 (ref), P1 (ref, frame_num 1), b (non-ref, frame_num 2)
        assert_eq!(st.next(&sps, &slice(true, 3, 0, 0)).value, 0);
        assert_eq!(st.next(&sps, &slice(false, 2, 1, 0)).value, 4);
        assert_eq!(st.next(&sps, &slice(false, 2, 2, 0)).value, 8);
        assert_eq!(st.next(&sps, &slice(false, 0, 3, 0)).value, 6);
    }

    #[test]
    fn mmco5_resets_order() {
        let sps = sps_type0(4);
        let mut st = PocState::new();
        st.next(&sps, &slice(true, 3, 0, 0));
        st.next(&sps, &slice(false, 2, 1, 20));
        let mut s = slice(false, 2, 2, 40);
        s.mmco5 = true;
        assert_eq!(
            st.next(&sps, &s),
            Poc {
                value: 0,
                resets: true
            }
        );
        assert_eq!(st.next(&sps, &slice(false, 2, 1, 4)).value, 4);
    }
}

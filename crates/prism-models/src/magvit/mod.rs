//! MAGVIT-v2's video tokenizer pieces (`magvit2-pytorch` 0.5.1 with `vector-quantize-pytorch`
//! 1.32.0's LFQ). Today: lookup-free quantization's ids. The causal 3-D convolution is the
//! `Conv3d` op; an id's codes are the `LfqCodes` op.

/// LFQ ids from the values quantization takes the sign of (after `project_in`), channel-last
/// (..., codebooks·bits): per codebook, bit k (most significant first) is set where the value
/// is > 0 (a zero is bit 0, as `x > 0` is). Returns (..., codebooks) ids.
pub fn lfq_ids(values: &[f32], bits: usize, codebooks: usize) -> Vec<i64> {
    assert!(bits > 0 && bits <= 62 && codebooks > 0);
    assert_eq!(values.len() % (bits * codebooks), 0);
    values
        .chunks_exact(bits)
        .map(|code| {
            code.iter()
                .fold(0i64, |id, &v| (id << 1) | i64::from(v > 0.0))
        })
        .collect()
}

//! Masked-token models (Muse / aMUSEd): a transformer predicts every masked image token at
//! once, and MaskGIT decoding (`schedulers/amused.rs`) keeps the most confident.

pub mod uvit;

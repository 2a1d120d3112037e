//! Any bytes as a `config.json` of each model family prism reads (UNet, VAE, CLIP, Llama,
//! Janus, aMUSEd's U-ViT / VQ model / scheduler, T5, PixArt / DiT, MAGVIT-v2's video
//! tokenizer and masked video transformer), then the graph built at a tiny size: an error or a
//! graph, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prism_models::config::Cfg;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = Cfg::from_str(text, "config.json") else {
        return;
    };
    use prism_models::autoencoders::kl;
    use prism_models::diffusion::{unet2d, unet3d};
    use prism_models::text::{clip, llama};
    if let Ok(u) = unet2d::UNetConfig::from_cfg(&c) {
        let _ = unet2d::build(&u, 1, 4, 4, 3);
    }
    if let Ok(u) = unet3d::UNet3DConfig::from_cfg(&c) {
        let _ = unet3d::build(&u, 1, 2, 4, 4, 3);
    }
    if let Ok(v) = kl::VaeConfig::from_cfg(&c) {
        let _ = kl::build_decoder(&v, 1, 2, 2);
        let _ = kl::build_encoder(&v, 1, 8, 8);
    }
    if let Ok(t) = clip::ClipConfig::from_cfg(&c) {
        let _ = clip::build(&t, 1, 3, 0);
    }
    if let Ok(l) = llama::LlamaConfig::from_cfg(&c) {
        let _ = llama::build(&l, 1, 3, 4, true);
    }
    if let Ok(u) = prism_models::masked::uvit::UVitConfig::from_cfg(&c) {
        let _ = prism_models::masked::uvit::build(&u, 1, 2, 2, 3);
    }
    if let Ok(v) = prism_models::autoencoders::vq::VqConfig::from_cfg(&c) {
        let _ = prism_models::autoencoders::vq::build_decoder(&v, 1, 2, 2);
        let _ = prism_models::autoencoders::vq::build_encoder(&v, 1, 8, 8);
    }
    let _ = prism_models::schedulers::amused::AmusedScheduler::from_cfg(&c);
    if let Ok(t) = prism_models::text::t5::T5Config::from_cfg(&c) {
        let _ = prism_models::text::t5::build(&t, 1, 3);
    }
    if let Ok(d) = prism_models::diffusion::dit::DitConfig::from_cfg(&c) {
        let p = d.patch_size;
        let _ = prism_models::diffusion::dit::build(&d, 1, 2 * p, 2 * p, 3);
        let _ = d.pos_embed(2 * p, 2 * p);
    }
    if let Ok(t) = prism_models::magvit::TokenizerConfig::from_cfg(&c) {
        use prism_models::magvit::tokenizer::{build_decoder, build_encoder};
        let (tf, sf) = (t.time_factor(), t.space_factor());
        if let Ok(grid) = t.token_grid(1 + tf, sf, sf) {
            let _ = build_encoder(&t, 1, [1 + tf, sf, sf]);
            let _ = build_decoder(&t, 1, grid);
        }
    }
    if let Ok(v) = prism_models::magvit::transformer::VideoTransformerConfig::from_cfg(&c) {
        let _ = prism_models::magvit::transformer::build(&v, 1, 3);
    }
    if let Ok(j) = prism_models::autoregressive::janus::JanusConfig::from_cfg(&c, Some(&c)) {
        use prism_models::autoregressive::janus::{lm_graph, vq_decoder_graph, LmStep};
        let _ = lm_graph(&j, LmStep::Prompt(3), 2, 4);
        let _ = vq_decoder_graph(&j, 1);
    }
});

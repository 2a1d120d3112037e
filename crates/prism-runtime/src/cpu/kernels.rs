//! The CPU backend's kernel choices: which kernel variant runs each operator. A plan carries
//! them; the CPU backend reads them at each node and records the variant that ran.

use prism_core::Graph;
use prism_kernels::attention::{self, AttentionImpl};
use prism_kernels::conv::{self, ConvImpl};

/// Which kernel variant runs each operator (None: the automatic choice per shape).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelChoice {
    pub attention: Option<AttentionImpl>,
    pub conv: Option<ConvImpl>,
    /// Run graphs as built, without the fusion pass (`prism_core::fuse`).
    pub no_fuse: bool,
    /// Keep each Winograd convolution's filters once transformed, in graphs that repeat (f32
    /// weights): faster runs after the first, for 16/9 or 4 times each 3×3 filter's memory;
    /// see [`KernelChoice::keeps_filters`].
    pub keep_filters: bool,
}

impl KernelChoice {
    /// The graph these choices run: fused unless `no_fuse` (what [`Plan::graph`] holds).
    pub fn prepare<'g>(&self, graph: &'g Graph) -> std::borrow::Cow<'g, Graph> {
        if self.no_fuse {
            std::borrow::Cow::Borrowed(graph)
        } else {
            std::borrow::Cow::Owned(
                prism_core::fuse::fuse(graph, prism_core::fuse::FuseOptions::ALL).0,
            )
        }
    }

    pub fn attention_for(&self, g: &attention::AttnGeom) -> AttentionImpl {
        self.attention.unwrap_or_else(|| AttentionImpl::auto(g))
    }
    /// Whether `graph`'s weights keep its Winograd filters once transformed: `keep_filters` and
    /// a graph that [repeats](Graph::repeats). The executor also needs f32 weights; callers
    /// with 16-bit weights leave `keep_filters` off, so the memory plan agrees.
    pub fn keeps_filters(&self, graph: &Graph) -> bool {
        graph.repeats && self.keep_filters
    }
    /// The convolution kernel for `g`; `filters_kept` as [`KernelChoice::keeps_filters`]
    /// says for its graph.
    pub fn conv_for(&self, g: &conv::Conv2dGeom, filters_kept: bool) -> ConvImpl {
        let c = self
            .conv
            .unwrap_or_else(|| ConvImpl::auto_for(g, filters_kept));
        if c.supports(g) {
            c
        } else {
            ConvImpl::Im2col
        }
    }
}

//! prism-core: host tensors, the typed operator graph (IR), shape rules and errors.
//!
//! A model is built once as a [`Graph`] of [`Node`]s, each carrying an operator from the
//! closed [`Op`] enum (`op.rs`: the op contract), its input and output shapes, the module
//! path of its weights and a [`Category`] from the paper's taxonomy. [`GraphBuilder`]
//! (`builder.rs`) holds each op's shape rule. Executing, analyzing and profiling are walks
//! over that graph; [`reference`] is the plain evaluator every kernel is tested against.

pub mod builder;
pub mod cost;
pub mod error;
pub mod fuse;
pub mod graph;
pub mod op;
pub mod reference;
pub mod tensor;

pub use builder::{GraphBuilder, Pad3d};
pub use error::{Error, Result};
pub use graph::{Graph, Node, NodeId, Param, ParamId, ValueId, ValueInfo};
pub use op::{
    ActKind, AttentionKind, AttentionSpec, Category, Conv2dSpec, Conv3dSpec, CostShapes, Op,
};
pub use tensor::{DType, Tensor};

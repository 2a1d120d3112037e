//! prism-core: host tensors, the typed operator graph (IR), shape rules and errors.
//!
//! A model is built once as a [`Graph`] of [`Node`]s, each carrying an operator from the
//! closed [`Op`] enum, its input and output shapes, the module path of its weights and a
//! [`Category`] from the paper's taxonomy. Executing, analyzing and profiling are walks over
//! that graph.

pub mod cost;
pub mod error;
pub mod fuse;
pub mod graph;
pub mod tensor;

pub use error::{Error, Result};
pub use graph::{
    ActKind, AttentionKind, AttentionSpec, Category, Conv2dSpec, Graph, GraphBuilder, Node, NodeId,
    Op, Param, ParamId, ValueId, ValueInfo,
};
pub use tensor::{DType, Tensor};

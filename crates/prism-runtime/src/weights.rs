//! Weights bound to a graph's parameter table.

use prism_core::{Error, Graph, ParamId, Result, Tensor};

/// One tensor per graph parameter, in the graph's parameter order, shapes checked.
pub struct Weights {
    tensors: Vec<Tensor>,
    /// Where the weights came from, for reports ("random (seed 0)" or a folder).
    pub source: String,
}

impl Weights {
    pub fn new(graph: &Graph, tensors: Vec<Tensor>, source: String) -> Result<Self> {
        if tensors.len() != graph.params.len() {
            return Err(Error::Weights {
                component: graph.name.clone(),
                msg: format!(
                    "{} tensors for {} parameters",
                    tensors.len(),
                    graph.params.len()
                ),
            });
        }
        for (p, t) in graph.params.iter().zip(&tensors) {
            if p.shape != t.shape() {
                return Err(Error::Weights {
                    component: graph.name.clone(),
                    msg: format!("{}: shape {:?}, expected {:?}", p.name, t.shape(), p.shape),
                });
            }
        }
        Ok(Self { tensors, source })
    }
    /// Check that these weights (bound to one build of a model) fit `graph`, another build of
    /// the same model at other input sizes: same parameters in the same order.
    pub fn check_fits(&self, graph: &Graph) -> Result<()> {
        let ok = self.tensors.len() == graph.params.len()
            && graph
                .params
                .iter()
                .zip(&self.tensors)
                .all(|(p, t)| p.shape == t.shape());
        if ok {
            Ok(())
        } else {
            Err(Error::Weights {
                component: graph.name.clone(),
                msg: "weights were bound to a different parameter table".into(),
            })
        }
    }
    pub fn get(&self, id: ParamId) -> &Tensor {
        &self.tensors[id]
    }
    pub fn bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.numel() * 4).sum()
    }
}

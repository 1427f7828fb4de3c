//! Nested JSON arrays read into one flat buffer and a shape, raggedness caught as they are read.

use super::{NdArray, PResult, Parser, Scalar, MAX_DEPTH};

/// Accumulates a nested array: values in order, and the length seen at each depth.
#[derive(Default)]
pub(super) struct NdBuilder {
    data: Vec<Scalar>,
    /// Length of the arrays at each depth, once one has been closed there.
    dims: Vec<Option<usize>>,
    /// Depth at which scalars sit, once known: the rank.
    rank: Option<usize>,
}

impl NdBuilder {
    pub(super) fn read_array(&mut self, p: &mut Parser<'_>, depth: usize) -> PResult<()> {
        if depth >= MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let len = p.array(|p| {
            if p.peek() == Some(b'[') {
                self.read_array(p, depth + 1)
            } else {
                let s = p.scalar()?;
                self.push(depth + 1, s)
            }
        })?;
        self.close(depth, len)
    }

    fn push(&mut self, depth: usize, s: Scalar) -> PResult<()> {
        match self.rank {
            None => self.rank = Some(depth),
            Some(rank) if rank != depth => return Err(ragged_depth()),
            Some(_) => {}
        }
        self.data.push(s);
        Ok(())
    }

    fn close(&mut self, depth: usize, len: usize) -> PResult<()> {
        match self.rank {
            // An empty innermost array, e.g. `[[], []]`.
            None if len == 0 => self.rank = Some(depth + 1),
            Some(rank) if depth >= rank => return Err(ragged_depth()),
            _ => {}
        }
        if self.dims.len() <= depth {
            self.dims.resize(depth + 1, None);
        }
        match self.dims[depth] {
            None => self.dims[depth] = Some(len),
            Some(seen) if seen != len => {
                return Err(format!(
                    "ragged nested array: an array at depth {depth} has {len} elements where an earlier one has {seen}; tensors must be rectangular"
                ))
            }
            Some(_) => {}
        }
        Ok(())
    }

    pub(super) fn finish(self) -> NdArray {
        NdArray {
            shape: self.dims.into_iter().map(|d| d.unwrap_or(0)).collect(),
            data: self.data,
        }
    }
}

fn ragged_depth() -> String {
    "ragged nested array: numbers and arrays are mixed at the same depth; tensors must be rectangular".into()
}

//! Compiled paths of the model server's codecs, each an accelerator of a Python path that
//! stays the reference: a function here answers exactly what the Python path would, or
//! declines (`None`) and leaves the request to it, errors included.
//!
//! `V2Columns` decodes the common Open Inference Protocol request of a model whose signature is
//! float64 (`double`) columns: one input per column, in signature order, each exactly `name`,
//! `shape` ([n] or [n, 1], the same for all), a known `datatype` and a flat `data` list of n
//! JSON numbers; at the top level `inputs` and an optional string `id`, nothing else. It
//! returns the column-major values (the Fortran-ordered rows x columns block the Python
//! decoder builds), the row count and the id: one pass over the body instead of orjson's
//! objects, their checks and numpy's walk of them (~10 us of Python per request).

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyString};
use serde::Deserialize;

// Unknown or repeated keys fail deserialization: the Python path then decides (it ignores
// unknown top-level keys, reads `parameters` and `outputs`, and names what is wrong).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    #[serde(borrow)]
    inputs: Vec<Input<'a>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    shape: Vec<u64>, // JSON integers only: 1.0 or -1 decline, as the Python path refuses them
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    data: Vec<f64>, // JSON numbers only (null, true, strings... decline), correctly rounded
}

/// The row count, when `inputs` are the signature's columns exactly as `decode` describes.
fn rows(names: &[String], datatypes: &[String], inputs: &[Input<'_>]) -> Option<usize> {
    if inputs.len() != names.len() || inputs.is_empty() {
        return None;
    }
    let rows = inputs[0].data.len();
    let shape = &inputs[0].shape;
    if rows == 0 || !(shape[..] == [rows as u64] || shape[..] == [rows as u64, 1]) {
        return None;
    }
    for (input, name) in inputs.iter().zip(names) {
        if input.name != name.as_str()
            || input.shape != *shape
            || input.data.len() != rows
            || !datatypes.iter().any(|d| d.as_str() == input.datatype)
            // serde_json reads the integer -0 as -0.0, where Python has the int 0 (0.0): decline.
            || input.data.iter().any(|v| *v == 0.0 && v.is_sign_negative())
        {
            return None;
        }
    }
    Some(rows)
}

/// The V2 decoder of one model's float64 column signature.
#[pyclass(frozen, module = "mlendpoints_native")]
struct V2Columns {
    names: Vec<String>,
    datatypes: Vec<String>, // the protocol's (v2.py's DATATYPES): any is taken for a column
}

#[pymethods]
impl V2Columns {
    #[new]
    fn new(names: Vec<String>, datatypes: Vec<String>) -> Self {
        V2Columns { names, datatypes }
    }

    /// (the column-major float64 values as a bytearray, rows, id or None), or None when the
    /// body is anything but the common request described above.
    #[allow(clippy::type_complexity)]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        body: &[u8],
    ) -> Option<(Bound<'py, PyByteArray>, usize, Option<Bound<'py, PyString>>)> {
        let request: Request<'_> = serde_json::from_slice(body).ok()?;
        let rows = rows(&self.names, &self.datatypes, &request.inputs)?;
        // The values written straight into the bytearray, column after column.
        let values = PyByteArray::new_with(py, rows * self.names.len() * 8, |buffer| {
            let columns = request.inputs.iter().flat_map(|input| &input.data);
            for (bytes, value) in buffer.chunks_exact_mut(8).zip(columns) {
                bytes.copy_from_slice(&value.to_ne_bytes());
            }
            Ok(())
        })
        .ok()?;
        let id = request.id.map(|id| PyString::new(py, &id));
        Some((values, rows, id))
    }
}

#[pymodule]
fn mlendpoints_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<V2Columns>()?;
    Ok(())
}

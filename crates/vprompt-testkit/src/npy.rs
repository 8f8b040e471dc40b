//! A reader for the `.npy` files (format version 1.0) that the committed reference scripts write
//! with `numpy.save`: little-endian `f4`, `f8`, `i8`, `i4` or `u1`, C order.

use std::path::Path;

/// An array read from a `.npy` file, converted to `f64` values.
#[derive(Debug, Clone)]
pub struct NpyArray {
    /// The array's shape.
    pub shape: Vec<usize>,
    /// The values in C order.
    pub values: Vec<f64>,
}

impl NpyArray {
    /// The values as `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32).collect()
    }
}

/// Reads a `.npy` file, panicking with the path and the reason if it is not a supported array
/// (this is test code: a broken reference file must stop the test loudly).
#[track_caller]
pub fn read(path: impl AsRef<Path>) -> NpyArray {
    let path = path.as_ref();
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(bytes: &[u8]) -> Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy file".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len])
        .map_err(|_| "header is not UTF-8".to_string())?;
    let field = |key: &str| -> Result<&str, String> {
        let at = header
            .find(&format!("'{key}':"))
            .ok_or(format!("header has no '{key}'"))?;
        Ok(header[at + key.len() + 3..].trim_start())
    };
    let descr = field("descr")?;
    let descr = &descr[1..descr[1..].find('\'').ok_or("bad descr")? + 1];
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran order is not supported".into());
    }
    let shape_text = field("shape")?;
    let shape_text = &shape_text[1..shape_text.find(')').ok_or("bad shape")?];
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad shape entry {s}")))
        .collect::<Result<_, _>>()?;
    let count: usize = shape.iter().product();
    let data = &bytes[start + header_len..];
    let width = match descr {
        "<f4" | "<i4" => 4,
        "<f8" | "<i8" => 8,
        "|u1" => 1,
        other => return Err(format!("unsupported dtype {other}")),
    };
    if data.len() != count * width {
        return Err(format!(
            "expected {} data bytes for shape {shape:?}, found {}",
            count * width,
            data.len()
        ));
    }
    let values = data
        .chunks_exact(width)
        .map(|c| match descr {
            "<f4" => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            "<f8" => f64::from_le_bytes(c.try_into().unwrap()),
            "<i4" => i32::from_le_bytes(c.try_into().unwrap()) as f64,
            "<i8" => i64::from_le_bytes(c.try_into().unwrap()) as f64,
            _ => c[0] as f64,
        })
        .collect();
    Ok(NpyArray { shape, values })
}

//! Minimal decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`).
//!
//! kubectl's typed commands (`kubectl create secret|configmap|namespace`) send protobuf for
//! built-in kinds. This decodes just those kinds (ObjectMeta basics, data maps) into JSON;
//! anything else is answered with 415 like a server that does not speak protobuf.

use serde_json::{Map, Value, json};

/// The protobuf media type.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (num, wt) = (tag >> 3, tag & 7);
        let f = match wt {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 => {
                pos += 8;
                continue;
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                let b = &buf[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            5 => {
                pos += 4;
                continue;
            }
            _ => return None,
        };
        out.push((num, f));
    }
    Some(out)
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn map_entry(b: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut k = String::new();
    let mut v = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x),
            (2, Field::Bytes(x)) => v = x.to_vec(),
            _ => {}
        }
    }
    Some((k, v))
}

/// Standard base64 (for Secret data).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (n @ (1 | 2 | 3 | 6), Field::Bytes(x)) if !x.is_empty() => {
                let key = match n {
                    1 => "name",
                    2 => "generateName",
                    3 => "namespace",
                    _ => "resourceVersion",
                };
                m.insert(key.into(), json!(string(x)));
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                labels.insert(k, json!(string(&v)));
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                annotations.insert(k, json!(string(&v)));
            }
            (14, Field::Bytes(x)) => finalizers.push(json!(string(x))),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(m))
}

/// Decodes a protobuf body for the supported kinds; None when it cannot.
pub fn decode(body: &[u8]) -> Option<Value> {
    let rest = body.strip_prefix(b"k8s\0")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm)? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = string(x),
                        (2, Field::Bytes(x)) => kind = string(x),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    if api_version != "v1" {
        return None;
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    let mut data = Map::new();
    let mut string_data = Map::new();
    let mut binary = Map::new();
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            ("Secret", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                data.insert(k, json!(base64(&v)));
            }
            ("Secret", 3, Field::Bytes(x)) => obj["type"] = json!(string(x)),
            ("Secret", 4, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                string_data.insert(k, json!(string(&v)));
            }
            ("Secret" | "ConfigMap", 5 | 4, Field::Varint(v)) => obj["immutable"] = json!(v != 0),
            ("ConfigMap", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                data.insert(k, json!(string(&v)));
            }
            ("ConfigMap", 3, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                binary.insert(k, json!(base64(&v)));
            }
            ("Namespace", _, _) => {}
            ("Secret" | "ConfigMap", _, _) => {}
            _ => return None,
        }
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !string_data.is_empty() {
        obj["stringData"] = Value::Object(string_data);
    }
    if !binary.is_empty() {
        obj["binaryData"] = Value::Object(binary);
    }
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(num: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    #[test]
    fn decodes_a_secret() {
        let meta = [ld(1, b"s1"), ld(11, &[ld(1, b"app"), ld(2, b"x")].concat())].concat();
        let secret = [
            ld(1, &meta),
            ld(2, &[ld(1, b"a"), ld(2, b"b")].concat()),
            ld(3, b"Opaque"),
        ]
        .concat();
        let unknown = [
            ld(1, &[ld(1, b"v1"), ld(2, b"Secret")].concat()),
            ld(2, &secret),
        ]
        .concat();
        let body = [b"k8s\0".as_slice(), &unknown].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1", "labels": {"app": "x"}},
                "data": {"a": "Yg=="}, "type": "Opaque"})
        );
        assert_eq!(base64(b"hello"), "aGVsbG8=");
    }
}

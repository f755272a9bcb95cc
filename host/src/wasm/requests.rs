//! A delivery's requests, lowered into the guest in one pass over their list.
//!
//! wasmtime's derived lowering of a `list<request>` stores each field of each request
//! on its own, and every store looks the guest's memory up again: ~320 instructions an
//! op for a request's six numbers, 3% of a 64-byte echo op in wasm. A request is plain
//! numbers at fixed offsets of the canonical ABI's layout, so the list is written here
//! in one pass, field by field into the bytes wasmtime has allocated for it in the
//! guest. Everything else about the type (its ABI, its type check, lowering one
//! request alone) is the derived record's.
//!
//! This implements wasmtime's `ComponentType` and `Lower` by hand, which wasmtime
//! documents as internal: the workspace pins wasmtime to one version, and the layout
//! is checked against the component's own type when the export is looked up.

use std::mem::MaybeUninit;

use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

use super::types;

/// A `request` record as the host lowers it (see the module).
#[derive(Debug)]
#[repr(transparent)]
pub(super) struct LoweredRequest(pub types::Request);

/// The fields of `request` (`wit/`) in the order the canonical ABI lays them out, as
/// [`LoweredRequest::linear_store_list_to_memory`] writes them: `client` (a record of
/// `high` then `low`) at byte 0, `op` at 16, `timestamp` at 24, `operation` at 32 and
/// `body-size` at 36, 40 bytes a request.
const FIELDS: [&str; 5] = ["client", "op", "timestamp", "operation", "body-size"];
const CLIENT_FIELDS: [&str; 2] = ["high", "low"];
/// Bytes of one request in a list.
const SIZE: usize = 40;

const _: () = assert!(<types::Request as ComponentType>::ABI.size32 as usize == SIZE);

/// Refuse a `request` type whose fields are not [`FIELDS`] in that order: the derived
/// check compares a record with the Rust struct bindgen generated from the same WIT,
/// and would not notice fields reordered there and here alike.
fn check_layout(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
    let field_names = |ty: &InterfaceType| -> Vec<&str> {
        match ty {
            InterfaceType::Record(index) => types.types[*index]
                .fields
                .iter()
                .map(|field| field.name.as_str())
                .collect(),
            _ => Vec::new(),
        }
    };
    let client = match ty {
        InterfaceType::Record(index) => types.types[*index].fields.first(),
        _ => None,
    };
    let laid_out = field_names(ty) == FIELDS
        && client.is_some_and(|client| field_names(&client.ty) == CLIENT_FIELDS);
    if !laid_out {
        wasmtime::bail!("the `request` record's fields are not the ones the host lowers");
    }
    Ok(())
}

// SAFETY: the ABI, flat representation and type check are the derived record's, with a
// check of the field order added.
unsafe impl ComponentType for LoweredRequest {
    type Lower = <types::Request as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <types::Request as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <types::Request as ComponentType>::typecheck(ty, types)?;
        check_layout(ty, types)
    }
}

// SAFETY: one request is lowered by the derived record's code; a list is written into
// the bytes wasmtime allocated and bounds-checked for it (`items.len()` times the
// record's size, at `offset`), at the offsets `check_layout` confirmed.
unsafe impl Lower for LoweredRequest {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        self.0.linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        self.0.linear_lower_to_memory(cx, ty, offset)
    }

    fn linear_store_list_to_memory<T>(
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
        items: &[Self],
    ) -> wasmtime::Result<()> {
        let memory = &mut cx.as_slice_mut()[offset..][..items.len() * SIZE];
        for (bytes, LoweredRequest(request)) in memory.chunks_exact_mut(SIZE).zip(items) {
            bytes[0..8].copy_from_slice(&request.client.high.to_le_bytes());
            bytes[8..16].copy_from_slice(&request.client.low.to_le_bytes());
            bytes[16..24].copy_from_slice(&request.op.to_le_bytes());
            bytes[24..32].copy_from_slice(&request.timestamp.to_le_bytes());
            bytes[32] = request.operation;
            bytes[36..40].copy_from_slice(&request.body_size.to_le_bytes());
        }
        Ok(())
    }
}

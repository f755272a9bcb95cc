//! A delivery's requests and bodies, lowered into the guest in one pass each.
//!
//! wasmtime's derived lowering of a `list<request>` stores each field of each request
//! on its own, and every store looks the guest's memory up again: ~320 instructions an
//! op for a request's six numbers, 3% of a 64-byte echo op in wasm. A request is plain
//! numbers at fixed offsets of the canonical ABI's layout, so the list is written here
//! in one pass, field by field into the bytes wasmtime has allocated for it in the
//! guest. Everything else about the type (its ABI, its type check, lowering one
//! request alone) is the derived record's.
//!
//! The bodies cross as one `list<u8>`. Lowering a `&[u8]` would need them end to end
//! in the host first, a copy of every byte that the guest's copy then repeats (at
//! 64 KiB bodies, one of the op's few passes over its body); [`LoweredBodies`] copies
//! each body straight from its request into the list's bytes in the guest.
//!
//! This implements wasmtime's `ComponentType` and `Lower` by hand, which wasmtime
//! documents as internal: the workspace pins wasmtime to one version, and the layout
//! is checked against the component's own type when the export is looked up.

use std::mem::MaybeUninit;

use carapace_core::instance::Request;
use wasmtime::ValRaw;
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

/// The bodies of a delivery's requests end to end, as a `list<u8>` (see the module).
#[derive(Debug)]
pub(super) struct LoweredBodies<'a>(pub &'a [Request]);

impl LoweredBodies<'_> {
    /// Allocate the list in the guest and copy each body into it; its address and
    /// length.
    fn store<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<(usize, usize)> {
        let size = self
            .0
            .iter()
            .try_fold(0_usize, |size, request| {
                size.checked_add(request.body.len())
            })
            .ok_or_else(|| wasmtime::format_err!("size overflow copying the bodies"))?;
        // `realloc` refuses an address whose `size` bytes are not all in memory.
        let address = cx.realloc(0, 0, 1, size)?;
        let mut memory = &mut cx.as_slice_mut()[address..][..size];
        for request in self.0 {
            let (body, rest) = memory.split_at_mut(request.body.len());
            body.copy_from_slice(&request.body);
            memory = rest;
        }
        Ok((address, size))
    }
}

// SAFETY: the ABI and type check are `[u8]`'s, which is what the bytes lowered are.
unsafe impl ComponentType for LoweredBodies<'_> {
    type Lower = <[u8] as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <[u8] as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[u8] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: the list is lowered as the canonical ABI lowers a `list<u8>`: bytes allocated
// by the guest's `realloc` (which checks them in bounds), then their address and length
// as two flat values (64 bits wide, as wasmtime writes pointer pairs) or as two 32-bit
// words in memory.
unsafe impl Lower for LoweredBodies<'_> {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        let (address, size) = self.store(cx)?;
        dst.write([ValRaw::i64(address as i64), ValRaw::i64(size as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let (address, size) = self.store(cx)?;
        *cx.get::<4>(offset) = u32::try_from(address)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(size)?.to_le_bytes();
        Ok(())
    }
}

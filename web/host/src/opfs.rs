//! A file of the origin private file system as the host core's [`File`]: a
//! `FileSystemSyncAccessHandle` (dedicated workers only) reads and writes at an offset,
//! flushes, tells its size and truncates — the shape of the trait.

use std::io;

use carapace_core::disk::File;
use js_sys::{Function, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

/// An OPFS file, through its sync access handle.
pub struct OpfsFile {
    handle: JsValue,
}

impl OpfsFile {
    /// The file `handle` gives access to.
    pub fn new(handle: JsValue) -> OpfsFile {
        OpfsFile { handle }
    }

    fn call(&self, method: &str, args: &[JsValue]) -> io::Result<JsValue> {
        let function: Function = Reflect::get(&self.handle, &method.into())
            .ok()
            .and_then(|function| function.dyn_into().ok())
            .ok_or_else(|| io::Error::other(format!("the file handle has no `{method}`")))?;
        function
            .apply(&self.handle, &args.iter().collect())
            .map_err(|error| io::Error::other(crate::instance::text(&error)))
    }

    fn at(offset: u64) -> JsValue {
        let options = Object::new();
        Reflect::set(&options, &"at".into(), &JsValue::from_f64(offset as f64))
            .expect("setting a property of a new object");
        options.into()
    }

    fn number(value: JsValue, what: &str) -> io::Result<u64> {
        value
            .as_f64()
            .map(|number| number as u64)
            .ok_or_else(|| io::Error::other(format!("{what} is not a number")))
    }
}

impl File for OpfsFile {
    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let array = Uint8Array::new_with_length(buffer.len() as u32);
        let read = Self::number(
            self.call("read", &[array.clone().into(), Self::at(offset)])?,
            "a read's size",
        )?;
        array.copy_to(buffer);
        // Bytes past the end read as zeros (a new array is zeroed).
        debug_assert!(read <= buffer.len() as u64);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let written = Self::number(
            self.call("write", &[Uint8Array::from(data).into(), Self::at(offset)])?,
            "a write's size",
        )?;
        if written != data.len() as u64 {
            return Err(io::Error::other(format!(
                "wrote {written} of {} bytes at offset {offset}",
                data.len()
            )));
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.call("flush", &[]).map(|_| ())
    }

    fn length(&mut self) -> io::Result<u64> {
        Self::number(self.call("getSize", &[])?, "the file's size")
    }

    fn set_len(&mut self, length: u64) -> io::Result<()> {
        self.call("truncate", &[JsValue::from_f64(length as f64)])
            .map(|_| ())
    }
}

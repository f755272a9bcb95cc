//! A component transpiled by jco, as an [`Instance`] of the host core: each method calls
//! the component's export through the glue jco generated, and the component's imports
//! call back into the same [`HostImports`] every other kind of instance uses.
//!
//! The page's JavaScript only wires them: a factory it hands to [`crate::Page`] takes an
//! [`Imports`] handle, builds jco's import object from its methods, instantiates the
//! component and returns its `machine` exports. No `RefCell` borrow is held while the
//! component runs, so its imports can borrow the host imports in turn.

use std::cell::RefCell;
use std::rc::Rc;

use carapace_core::imports::{HostImports, Level};
use carapace_core::instance::{
    Identity, Instance, Options, Request, Statistic, Step, bodies_end_to_end,
};
use carapace_core::{Error, FailureKind, Fault, Result};
use js_sys::{Array, BigInt, Function, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

/// The host imports of one instance, handed to the page's JavaScript to wire jco's
/// import object.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Imports {
    inner: Rc<RefCell<HostImports>>,
}

/// A contract violation becomes a thrown error: it unwinds the component's call, and
/// the export reports the violation the host imports recorded.
fn violation(error: carapace_core::imports::Violation) -> JsError {
    JsError::new(&error.to_string())
}

#[wasm_bindgen]
impl Imports {
    /// `grid.submit-read`.
    #[wasm_bindgen(js_name = submitRead)]
    pub fn submit_read(&self, address: u64) -> Result<(), JsError> {
        self.inner
            .borrow_mut()
            .submit_read(address)
            .map_err(violation)
    }

    /// `grid.submit-write`.
    #[wasm_bindgen(js_name = submitWrite)]
    pub fn submit_write(&self, address: u64, block: Vec<u8>) -> Result<(), JsError> {
        self.inner
            .borrow_mut()
            .submit_write(address, block)
            .map_err(violation)
    }

    /// `clock.now`.
    pub fn now(&self) -> u64 {
        self.inner.borrow().now()
    }

    /// `clock.set-timer`.
    #[wasm_bindgen(js_name = setTimer)]
    pub fn set_timer(&self, id: u64, at: u64) -> Result<(), JsError> {
        self.inner.borrow_mut().set_timer(id, at).map_err(violation)
    }

    /// `clock.cancel-timer`.
    #[wasm_bindgen(js_name = cancelTimer)]
    pub fn cancel_timer(&self, id: u64) -> Result<(), JsError> {
        self.inner.borrow_mut().cancel_timer(id).map_err(violation)
    }

    /// `delivery.due-timer`.
    #[wasm_bindgen(js_name = dueTimer)]
    pub fn due_timer(
        &self,
        op: u64,
        previous_reply: Option<Vec<u8>>,
    ) -> Result<Option<u64>, JsError> {
        let mut imports = self.inner.borrow_mut();
        let due = imports.due_timer(op, previous_reply).map_err(violation)?;
        Ok(due.id)
    }

    /// `delivery.prefetched`.
    pub fn prefetched(&self, op: u64) -> Result<(), JsError> {
        self.inner.borrow_mut().prefetched(op).map_err(violation)
    }

    /// `delivery.committed`.
    pub fn committed(&self, op: u64, reply: Vec<u8>) -> Result<(), JsError> {
        self.inner
            .borrow_mut()
            .committed(op, reply)
            .map_err(violation)
    }

    /// `log.log`; `level` as jco spells the enum.
    pub fn log(&self, level: &str, message: String) {
        let level = match level {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" => Level::Warn,
            _ => Level::Error,
        };
        self.inner.borrow_mut().log(level, message);
    }
}

/// One instance of a jco-transpiled component.
pub struct JsInstance {
    /// The exports by name, looked up once: a property lookup per call would cross into
    /// JavaScript once more for every completion.
    exports: Vec<(&'static str, Function)>,
    imports: Rc<RefCell<HostImports>>,
}

/// The `machine` interface's exports, as jco names them.
const EXPORTS: [&str; 10] = [
    "identify",
    "init",
    "open",
    "inputValid",
    "deliver",
    "checkpoint",
    "checkpointState",
    "readDone",
    "writeDone",
    "describe",
];

/// Makes an instance over `imports` by calling the page's factory.
pub fn instantiate(factory: &Function, imports: HostImports) -> Result<Box<dyn Instance>> {
    let inner = Rc::new(RefCell::new(imports));
    let handle = Imports {
        inner: inner.clone(),
    };
    let exports = factory
        .call1(&JsValue::NULL, &JsValue::from(handle))
        .map_err(|error| {
            Error::Refused(format!("instantiating the component: {}", text(&error)))
        })?;
    let exports = EXPORTS
        .iter()
        .map(|name| {
            get(&exports, name)
                .dyn_into::<Function>()
                .map(|function| (*name, function))
                .map_err(|_| Error::Refused(format!("the component exports no `{name}`")))
        })
        .collect::<Result<_>>()?;
    Ok(Box::new(JsInstance {
        exports,
        imports: inner,
    }))
}

/// What a thrown JavaScript value says.
pub fn text(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|error| String::from(error.to_string()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

fn big(value: u64) -> JsValue {
    BigInt::from(value).into()
}

fn bytes(value: &[u8]) -> JsValue {
    Uint8Array::from(value).into()
}

/// Set a property of an object the host made.
fn set(object: &js_sys::Object, key: &str, value: JsValue) {
    Reflect::set(object, &JsValue::from_str(key), &value)
        .expect("setting a property of a new object");
}

fn get(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn string_of(value: &JsValue, what: &str) -> Result<String, Fault> {
    value
        .as_string()
        .ok_or_else(|| Fault::Violation(format!("{what} is not a string")))
}

fn step_of(value: JsValue) -> Result<Step, Fault> {
    match value.as_string().as_deref() {
        Some("pending") => Ok(Step::Pending),
        Some("done") => Ok(Step::Done),
        _ => Err(Fault::Violation(format!("a step of {value:?}"))),
    }
}

impl JsInstance {
    /// Call export `name`: the outer error is a violation the imports recorded (the
    /// throw that unwound the call was theirs), the inner one what the call threw.
    fn call_raw(&self, name: &str, args: &[JsValue]) -> Result<Result<JsValue, JsValue>, Fault> {
        let (_, function) = self
            .exports
            .iter()
            .find(|(export, _)| *export == name)
            .expect("every export is looked up at instantiation");
        let this = &JsValue::NULL;
        let result = match args {
            [] => function.call0(this),
            [a] => function.call1(this, a),
            [a, b] => function.call2(this, a, b),
            [a, b, c] => function.call3(this, a, b, c),
            _ => function.apply(this, &args.iter().collect::<Array>()),
        };
        if let Some(violation) = self.imports.borrow_mut().take_violation() {
            return Err(Fault::Violation(violation));
        }
        Ok(result)
    }

    /// Call export `name`; a throw is a violation the imports recorded, a failure the
    /// guest returned (jco throws a `ComponentError` with its `{tag, val}`), or a trap.
    fn call(&self, name: &str, args: &[JsValue]) -> Result<JsValue, Fault> {
        self.call_raw(name, args)?.map_err(|thrown| {
            let payload = get(&thrown, "payload");
            let kind = match get(&payload, "tag").as_string().as_deref() {
                Some("invalid-argument") => FailureKind::InvalidArgument,
                Some("corrupt-block") => FailureKind::CorruptBlock,
                Some("out-of-space") => FailureKind::OutOfSpace,
                Some("protocol") => FailureKind::Protocol,
                _ => return Fault::Trap(text(&thrown)),
            };
            let message = get(&payload, "val").as_string().unwrap_or_default();
            Fault::Failure { kind, message }
        })
    }

    fn step(&self, name: &str, args: &[JsValue]) -> Result<Step, Fault> {
        step_of(self.call(name, args)?)
    }

    fn bytes_of(value: JsValue, what: &str) -> Result<Vec<u8>, Fault> {
        value
            .dyn_into::<Uint8Array>()
            .map(|array| array.to_vec())
            .map_err(|_| Fault::Violation(format!("{what} is not a byte list")))
    }
}

impl Instance for JsInstance {
    fn identify(&mut self) -> Result<Identity, Fault> {
        let identity = self.call("identify", &[])?;
        Ok(Identity {
            name: string_of(&get(&identity, "name"), "the identity's name")?,
            version: string_of(&get(&identity, "version"), "the identity's version")?,
            state_format: get(&identity, "stateFormat")
                .as_f64()
                .map(|number| number as u32)
                .ok_or_else(|| Fault::Violation("the state format is not a number".into()))?,
        })
    }

    fn init(&mut self, options: &Options) -> Result<(), Fault> {
        let settings: Array = options
            .settings
            .iter()
            .map(|(name, value)| Array::of2(&JsValue::from_str(name), &JsValue::from_str(value)))
            .collect();
        let object = js_sys::Object::new();
        for (key, value) in [
            ("batchSizeLimit", JsValue::from(options.batch_size_limit)),
            ("replySizeLimit", JsValue::from(options.reply_size_limit)),
            (
                "checkpointIntervalOps",
                big(options.checkpoint_interval_ops),
            ),
            ("blockSize", JsValue::from(options.block_size)),
            ("blockCount", big(options.block_count)),
            ("settings", settings.into()),
        ] {
            set(&object, key, value);
        }
        self.call("init", &[object.into()]).map(|_| ())
    }

    fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<Step, Fault> {
        let checkpoint = checkpoint.map_or(JsValue::UNDEFINED, bytes);
        self.step("open", &[checkpoint])
    }

    fn input_valid(&mut self, operation: u8, body: &[u8]) -> Result<Result<(), String>, Fault> {
        match self.call_raw("inputValid", &[operation.into(), bytes(body)])? {
            Ok(_) => Ok(Ok(())),
            // `result<_, string>`: the reason arrives as the thrown error's payload.
            Err(thrown) => match get(&thrown, "payload").as_string() {
                Some(reason) => Ok(Err(reason)),
                None => Err(Fault::Trap(text(&thrown))),
            },
        }
    }

    fn deliver(&mut self, requests: &[Request]) -> Result<Step, Fault> {
        let headers: Array = requests
            .iter()
            .map(|request| {
                let client = js_sys::Object::new();
                set(&client, "high", big((request.client >> 64) as u64));
                set(&client, "low", big(request.client as u64));
                let record = js_sys::Object::new();
                set(&record, "client", client.into());
                set(&record, "op", big(request.op));
                set(&record, "timestamp", big(request.timestamp));
                set(&record, "operation", request.operation.into());
                set(&record, "bodySize", request.body_size().into());
                JsValue::from(record)
            })
            .collect();
        let bodies = bytes(bodies_end_to_end(requests, &mut Vec::new()));
        self.step("deliver", &[headers.into(), bodies])
    }

    fn checkpoint(&mut self, op: u64) -> Result<Step, Fault> {
        self.step("checkpoint", &[big(op)])
    }

    fn checkpoint_state(&mut self) -> Result<Vec<u8>, Fault> {
        Self::bytes_of(self.call("checkpointState", &[])?, "the checkpoint state")
    }

    fn read_done(&mut self, address: u64, block: &[u8]) -> Result<Step, Fault> {
        self.step("readDone", &[big(address), bytes(block)])
    }

    fn write_done(&mut self, address: u64) -> Result<Step, Fault> {
        self.step("writeDone", &[big(address)])
    }

    fn describe(&mut self) -> Result<Vec<Statistic>, Fault> {
        let statistics: Array = self
            .call("describe", &[])?
            .dyn_into()
            .map_err(|_| Fault::Violation("`describe` returned no list".into()))?;
        statistics
            .iter()
            .map(|statistic| {
                let values = get(&statistic, "values")
                    .dyn_into::<js_sys::BigUint64Array>()
                    .map_err(|_| Fault::Violation("a statistic's values are not u64s".into()))?;
                Ok(Statistic {
                    name: string_of(&get(&statistic, "name"), "a statistic's name")?,
                    values: values.to_vec(),
                })
            })
            .collect()
    }

    fn with_imports_dyn(&mut self, action: &mut dyn FnMut(&mut HostImports)) {
        action(&mut self.imports.borrow_mut());
    }
}

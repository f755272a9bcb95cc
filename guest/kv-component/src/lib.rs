//! The key-value state machine as a component: the SDK's adapter, nothing else.

carapace_sdk::export!(carapace_kv::Kv);

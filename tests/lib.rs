//! Integration tests of carapace live in `all/`; this library is empty on purpose.

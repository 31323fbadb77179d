//! Any message body either decodes to a purchase event that keeps the contract or is
//! refused with a dead-letter reason; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use receipt_verifier_core::PurchaseEvent;

fuzz_target!(|data: &[u8]| {
    // SQS bodies are Unicode text; the worker sees them as `&str`.
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    match PurchaseEvent::parse(body) {
        Ok(event) => {
            assert!(!event.receipt_id.trim().is_empty());
            assert!(!event.order_id.trim().is_empty());
            assert!(event.price.value() >= 0.0 && event.price.value().is_finite());
        }
        Err(error) => assert!(!error.code().is_empty() && !error.to_string().is_empty()),
    }
});

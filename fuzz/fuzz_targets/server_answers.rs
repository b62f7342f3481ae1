//! The control plane's answers: every success body decoded as the client decodes
//! it, and every failure classified from its status, `WWW-Authenticate` and body.
//! Never a panic; the words for the log are bounded and quote no control bytes.
#![no_main]

use hostbeat::api::classify::{Answer, Endpoint, classify_answer, parse_bearer_challenge};
use hostbeat::api::decode_answer;
use hostbeat::api::wire::{HeartbeatAnswer, RegisterAnswer, TokenAnswer, ValidateAnswer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &str, &[u8])| {
    let (status, www_authenticate, body) = input;
    let _ = decode_answer::<HeartbeatAnswer>(body);
    let _ = decode_answer::<RegisterAnswer>(body);
    let _ = decode_answer::<ValidateAnswer>(body);
    let _ = decode_answer::<TokenAnswer>(body);
    let _ = parse_bearer_challenge(www_authenticate);
    for endpoint in [
        Endpoint::Token,
        Endpoint::Register,
        Endpoint::Heartbeat,
        Endpoint::Validate,
    ] {
        let answer = Answer {
            status,
            www_authenticate: Some(www_authenticate),
            body,
            retry_after: None,
        };
        let (_, detail) = classify_answer(endpoint, &answer);
        assert!(detail.chars().count() <= 400, "{} chars", detail.len());
        assert!(!detail.chars().any(|c| c.is_control()), "{detail:?}");
    }
});

//! What a client may send on the WebSocket, from the text frame on, as the
//! gateway's session reads it (`gateway::read_client_message`): never a
//! panic; every message either understood or answered with one of the
//! three error codes; what is understood reads back the same when written
//! out again; and an `auth` message goes on to the real verifier, which
//! must refuse every token the fuzzer can make (it never holds the key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeltime::gateway::read_client_message;
use reeltime_protocol::{ClientMessage, ServerMessage};

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 (tungstenite checks before the session sees one).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match read_client_message(text) {
        Ok(message) => {
            let written = serde_json::to_string(&message).expect("a client message serializes");
            assert_eq!(read_client_message(&written), Ok(message.clone()));
            match message {
                ClientMessage::Auth { token } => {
                    assert!(
                        reeltime_fuzz::tokens::verify(&token).is_err(),
                        "a token the key never signed was accepted: {token:?}"
                    );
                }
                ClientMessage::Ping => {
                    serde_json::to_string(&ServerMessage::Pong).expect("pong serializes");
                }
            }
        }
        Err((code, _)) => {
            let is_json = serde_json::from_str::<serde_json::Value>(text).is_ok();
            match code {
                "bad_json" => assert!(!is_json, "{text:?} is JSON but was called bad_json"),
                "unknown_type" | "bad_message" => assert!(is_json),
                other => panic!("unexpected error code {other:?}"),
            }
        }
    }
});

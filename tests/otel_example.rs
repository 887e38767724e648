//! `examples/otel.rs` exports its run and store spans over OTLP/HTTP: the
//! example runs against a minimal collector that keeps what it receives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Accepts OTLP/HTTP requests, answers 200 and keeps their bodies.
fn collector() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let received: Arc<Mutex<Vec<u8>>> = Arc::default();
    let keep = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let keep = Arc::clone(&keep);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    // Request line and headers.
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    keep.lock().unwrap().extend_from_slice(&body);
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (addr, received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_otel_example_exports_run_and_store_spans() {
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(format!("otel{}", std::env::consts::EXE_SUFFIX));
    assert!(example.exists(), "{} is not built", example.display());
    let (endpoint, received) = collector();
    let out = Command::new(&example)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("SUNDIAL_EXAMPLE_SECONDS", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = received.lock().unwrap().clone();
    for name in [
        "sundial.run",
        "sundial.store",
        "acquire_due",
        "insert_runs",
        "outcome",
        "succeeded",
        "sundial-example",
    ] {
        assert!(
            contains(&body, name.as_bytes()),
            "{name} is not in the {} bytes exported",
            body.len()
        );
    }
}

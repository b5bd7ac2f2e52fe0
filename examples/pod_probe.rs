//! The program the pod test's containers run (`scripts/pod-test.sh`): a static binary, so it
//! runs from a `FROM scratch` image with no shell, and the test downloads no image.
//!
//! ```text
//! pod_probe serve PORT...      listen on 0.0.0.0:PORT for each PORT; answer every connection
//!                              with one line: listen=<port> orig=<SO_ORIGINAL_DST|none> uid=<uid>
//! pod_probe connect ADDR:PORT  connect (3 s timeout), print the server's line, exit 0
//! ```
//!
//! The answer says where a connection really landed (`listen`), where its client sent it
//! (`orig`, read from conntrack as Envoy does) and which user the server runs as, which is what
//! the test needs to tell captured traffic from traffic that went straight through.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::OriginalDst};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((mode, ports)) if mode == "serve" && !ports.is_empty() => serve(ports),
        Some((mode, [target])) if mode == "connect" => connect(target),
        _ => Err("usage: pod_probe serve PORT... | pod_probe connect ADDR:PORT".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pod_probe: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(ports: &[String]) -> Result<(), String> {
    let mut listeners = Vec::new();
    for port in ports {
        let port: u16 = port.parse().map_err(|e| format!("port {port}: {e}"))?;
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("listen on {port}: {e}"))?;
        listeners.push((port, listener));
    }
    eprintln!("pod_probe: uid {} listening on {ports:?}", nix::unistd::getuid());
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|(port, listener)| std::thread::spawn(move || answer_forever(port, &listener)))
        .collect();
    for handle in handles {
        handle.join().map_err(|_| "a listener thread panicked".to_string())?;
    }
    Ok(())
}

fn answer_forever(port: u16, listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let original = match getsockopt(&stream, OriginalDst) {
            Ok(addr) => {
                let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
                format!("{ip}:{}", u16::from_be(addr.sin_port))
            }
            Err(_) => "none".to_string(),
        };
        let line = format!("listen={port} orig={original} uid={}\n", nix::unistd::getuid());
        // A client that went away is not the server's problem.
        let _ = stream.write_all(line.as_bytes());
    }
}

fn connect(target: &str) -> Result<(), String> {
    let addr: SocketAddr = target.parse().map_err(|e| format!("{target}: {e}"))?;
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| format!("read from {addr}: {e}"))?;
    print!("{answer}");
    Ok(())
}

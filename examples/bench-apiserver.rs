//! The test API server (`tests/common/apiserver.rs`) as a process, for `hack/bench-daemon.sh`:
//! serves an objects file (Nodes, Services, EndpointSlices) over real list/watch and moves
//! endpoints on command.
//!
//!     bench-apiserver --objects FILE [--listen 127.0.0.1:0]
//!
//! Prints `url http://HOST:PORT` once serving. Then reads commands on stdin, one a line:
//!
//!     move OLD_IP NEW_IP   the EndpointSlice holding OLD_IP gets NEW_IP instead; prints
//!                          `moved NS/NAME OLD_IP NEW_IP at UNIX_SECONDS rv RV`
//!     quit                 (or end of input) exits
//!
//! The time is taken right after the change is stored and open watches are woken, i.e. when
//! the watch event is emitted (the stream writes it without further waiting).

#[path = "../tests/common/apiserver.rs"]
mod apiserver;
#[path = "../tests/common/pki.rs"]
mod pki;

use anyhow::{bail, Context};
use apiserver::ApiServer;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

struct Args {
    objects: String,
    listen: SocketAddr,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut objects = None;
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--objects" => objects = it.next(),
            "--listen" => {
                let v = it.next().context("--listen needs an address")?;
                listen = v.parse().with_context(|| format!("--listen {v:?}"))?;
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(Args {
        objects: objects.context("usage: bench-apiserver --objects FILE [--listen ADDR]")?,
        listen,
    })
}

/// Every object of the file as the server stores it (apiVersion and kind included).
fn load(path: &str) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    let set = kube_proxy_rs::source::objects::load_objects(path)?;
    let mut other = Vec::new();
    for (o, _) in &set.nodes {
        other.push(serde_json::to_value(o)?);
    }
    for (o, _) in &set.services {
        other.push(serde_json::to_value(o)?);
    }
    let slices = set
        .endpoint_slices
        .iter()
        .map(|(o, _)| serde_json::to_value(o))
        .collect::<Result<_, _>>()?;
    Ok((other, slices))
}

/// Replaces `old` by `new` in the first slice listing it; returns that slice's index.
fn move_endpoint(slices: &mut [Value], old: &str, new: &str) -> Option<usize> {
    for (i, s) in slices.iter_mut().enumerate() {
        let Some(eps) = s["endpoints"].as_array_mut() else {
            continue;
        };
        for ep in eps {
            let Some(addrs) = ep["addresses"].as_array_mut() else {
                continue;
            };
            if let Some(a) = addrs.iter_mut().find(|a| a.as_str() == Some(old)) {
                *a = Value::String(new.to_string());
                return Some(i);
            }
        }
    }
    None
}

fn unix_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let (other, mut slices) = load(&args.objects)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let server = rt.block_on(ApiServer::start_on(args.listen));
    for o in other.into_iter().chain(slices.iter().cloned()) {
        server.apply(o);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "url {}", server.url())?;
    out.flush()?;
    // Commands on this thread; the runtime's worker serves HTTP meanwhile.
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["move", old, new] => match move_endpoint(&mut slices, old, new) {
                Some(i) => {
                    let rv = server.apply(slices[i].clone());
                    let at = unix_now();
                    let m = &slices[i]["metadata"];
                    let (ns, name) = (m["namespace"].as_str(), m["name"].as_str());
                    writeln!(
                        out,
                        "moved {}/{} {old} {new} at {at} rv {rv}",
                        ns.unwrap_or(""),
                        name.unwrap_or("")
                    )?;
                }
                None => writeln!(out, "error: no endpoint {old}")?,
            },
            ["quit"] => break,
            [] => {}
            _ => writeln!(out, "error: unknown command {line:?}")?,
        }
        out.flush()?;
    }
    Ok(())
}

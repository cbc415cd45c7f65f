//! The floor for a Postgres proxy built on tokio, for `benches/pg.sh`: a relay that copies bytes
//! between each client and a new connection to the upstream and does nothing else (no protocol
//! decoding, policy, masking, recording or audit; the client logs in to the upstream itself).
//! It runs on the runtime vigil runs on (multi-threaded, one worker per core) with `TCP_NODELAY`
//! on both sides, as vigil and pgbouncer set it. What it costs per statement is what any tokio
//! proxy pays on this machine before doing any work of its own.
//!
//! Usage: `relay_floor LISTEN_ADDR UPSTREAM_ADDR` (both host:port).

use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: relay_floor LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&listen).await?;
            loop {
                // A failed accept (out of descriptors) costs that client, not the relay.
                let mut client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(e) => {
                        eprintln!("relay_floor: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    if client.set_nodelay(true).is_ok() && up.set_nodelay(true).is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                    }
                });
            }
        })
}

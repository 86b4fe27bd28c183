//! `ustack ping`: ping(8) on our stack. Prints the same lines as iputils ping so
//! people (and tests) read it the same way.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use stack_async::PingSocket;
use stack_core::ping::{PingMsg, PingMsgKind};

use crate::cli::{self, PingArgs};

pub async fn run(args: PingArgs) -> ExitCode {
    if !(args.interval.is_finite()
        && args.interval >= 0.0
        && args.wait.is_finite()
        && args.wait >= 0.0)
    {
        eprintln!("ustack: --interval and --wait take a number of seconds >= 0");
        return ExitCode::from(2);
    }
    if args.size > 65507 {
        eprintln!("ustack: --size {} is over 65507", args.size);
        return ExitCode::from(2);
    }
    let (handle, _config) = match args.link.spawn() {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("ustack: {msg}");
            return ExitCode::from(2);
        }
    };
    let sock = match PingSocket::open(&handle).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ustack: cannot open a ping socket: {e}");
            return ExitCode::from(2);
        }
    };
    let target = args.target;
    println!(
        "PING {target} ({target}) {}({}) bytes of data.",
        args.size,
        args.size + 28
    );
    // ping(8) fills the data with a counting pattern; we check it comes back intact.
    let payload: Vec<u8> = (0..args.size).map(|i| i as u8).collect();
    let interval = Duration::from_secs_f64(args.interval);
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut sent_at: HashMap<u16, Instant> = HashMap::new();
    let mut next_send = Instant::now();
    let mut seq: u16 = 0;
    let mut deadline = None;
    loop {
        let all_sent = u32::from(seq) >= args.count;
        if all_sent && deadline.is_none() {
            deadline = Some(Instant::now() + Duration::from_secs_f64(args.wait));
        }
        if all_sent && stats.received + stats.errors >= stats.transmitted {
            break;
        }
        let wake = if all_sent {
            deadline.expect("set above")
        } else {
            next_send
        };
        tokio::select! {
            msg = sock.recv() => match msg {
                Ok(msg) => stats.on_message(&msg, &sent_at, &payload),
                Err(e) => {
                    eprintln!("ustack: {e}");
                    return ExitCode::from(2);
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                if all_sent {
                    break;
                }
                seq = seq.wrapping_add(1);
                sent_at.insert(seq, Instant::now());
                stats.transmitted += 1;
                if let Err(e) = sock.send_to(target, seq, &payload).await {
                    println!("ping: sendmsg: {e}");
                }
                next_send += interval;
            }
        }
    }
    let elapsed = start.elapsed();
    stats.summary(target, elapsed);
    if args.stats {
        match cli::counters(&handle).await {
            Ok(text) => print!("{text}"),
            Err(e) => eprintln!("ustack: {e}"),
        }
    }
    drop(sock);
    if let Err(e) = handle.shutdown() {
        eprintln!("ustack: {e}");
    }
    if stats.received > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[derive(Default)]
struct Stats {
    transmitted: u32,
    received: u32,
    errors: u32,
    rtts: Vec<f64>,
}

impl Stats {
    fn on_message(&mut self, msg: &PingMsg, sent_at: &HashMap<u16, Instant>, payload: &[u8]) {
        match msg.kind {
            PingMsgKind::EchoReply => {
                let Some(t0) = sent_at.get(&msg.seq) else {
                    return;
                };
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                self.received += 1;
                self.rtts.push(ms);
                let mut line = format!(
                    "{} bytes from {}: icmp_seq={} ttl={} time={}",
                    msg.payload.len() + 8,
                    msg.from,
                    msg.seq,
                    msg.ttl,
                    format_ms(ms)
                );
                if msg.payload != payload {
                    line.push_str(" (wrong data)");
                }
                println!("{line}");
            }
            PingMsgKind::Error { .. } => {
                self.errors += 1;
                println!(
                    "From {} icmp_seq={} {}",
                    msg.from,
                    msg.seq,
                    msg.kind.describe()
                );
            }
        }
    }

    fn summary(&self, target: Ipv4Addr, elapsed: Duration) {
        println!("\n--- {target} ping statistics ---");
        let loss = if self.transmitted == 0 {
            0.0
        } else {
            100.0 * f64::from(self.transmitted - self.received.min(self.transmitted))
                / f64::from(self.transmitted)
        };
        let errors = if self.errors > 0 {
            format!(", +{} errors", self.errors)
        } else {
            String::new()
        };
        println!(
            "{} packets transmitted, {} received{errors}, {}% packet loss, time {}ms",
            self.transmitted,
            self.received,
            format_loss(loss),
            elapsed.as_millis()
        );
        if !self.rtts.is_empty() {
            let n = self.rtts.len() as f64;
            let min = self.rtts.iter().copied().fold(f64::INFINITY, f64::min);
            let max = self.rtts.iter().copied().fold(0.0, f64::max);
            let avg = self.rtts.iter().sum::<f64>() / n;
            let mdev = (self.rtts.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / n).sqrt();
            println!("rtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms");
        }
    }
}

/// ping(8) prints times with three significant digits.
fn format_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

fn format_loss(loss: f64) -> String {
    if loss.fract() == 0.0 {
        format!("{loss:.0}")
    } else {
        format!("{loss:.3}")
    }
}

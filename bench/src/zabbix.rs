//! A Zabbix server as small as a Zabbix agent in active mode needs, for the
//! footprint benchmark: it answers "active checks" with one item, `agent.ping`
//! every second (a heartbeat, in Zabbix's words), and "agent data" with success,
//! and counts the values received. Loopback only; one exchange per connection, as
//! the agents do.
//!
//! The framing (Zabbix's "header protocol"): `ZBXD`, a flags byte (0x01 always,
//! 0x02 zlib-compressed, 0x04 large: 8-byte lengths), the payload's length and a
//! reserved length (the uncompressed size when compressed), little-endian, then
//! the JSON payload.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Larger payloads are refused: an agent sending one second of `agent.ping` writes
/// a few hundred bytes.
const MAX_PAYLOAD: u64 = 16 << 20;

const FLAG_COMPRESSED: u8 = 0x02;
const FLAG_LARGE: u8 = 0x04;

/// The server: where it listens and what it has received.
#[derive(Debug, Clone)]
pub struct ZabbixServer {
    /// Where it listens (`ServerActive=`).
    pub addr: SocketAddr,
    values: Arc<AtomicU64>,
}

impl ZabbixServer {
    /// Listens on 127.0.0.1 (a free port) until the runtime ends.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let server = Self {
            addr: listener.local_addr()?,
            values: Arc::default(),
        };
        let values = Arc::clone(&server.values);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let values = Arc::clone(&values);
                tokio::spawn(async move {
                    // A broken exchange is the agent's to retry; the count says
                    // what arrived.
                    if let Ok(request) = read_message(&mut stream).await {
                        let (reply, received) = answer(&request);
                        values.fetch_add(received, Ordering::Relaxed);
                        let _ = stream.write_all(&frame(&reply)).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        Ok(server)
    }

    /// `agent.ping` values received so far.
    pub fn values(&self) -> u64 {
        self.values.load(Ordering::Relaxed)
    }
}

/// The reply to one request, and how many values it carried.
fn answer(request: &Value) -> (Value, u64) {
    match request["request"].as_str() {
        Some("active checks") => (
            json!({
                "response": "success",
                "data": [{ "key": "agent.ping", "itemid": 1, "delay": "1", "lastlogsize": 0, "mtime": 0 }],
            }),
            0,
        ),
        Some("agent data") => {
            let values = request["data"].as_array().map_or(0, Vec::len) as u64;
            (
                json!({
                    "response": "success",
                    "info": format!(
                        "processed: {values}; failed: 0; total: {values}; seconds spent: 0.000010"
                    ),
                }),
                values,
            )
        }
        _ => (json!({ "response": "success" }), 0),
    }
}

/// One framed message, decompressed and parsed.
async fn read_message(stream: &mut (impl AsyncRead + Unpin)) -> Result<Value, String> {
    let mut head = [0u8; 5];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| e.to_string())?;
    if &head[..4] != b"ZBXD" {
        return Err("not a Zabbix header".into());
    }
    let flags = head[4];
    let (length, reserved) = if flags & FLAG_LARGE == 0 {
        let mut lengths = [0u8; 8];
        stream
            .read_exact(&mut lengths)
            .await
            .map_err(|e| e.to_string())?;
        let (a, b) = lengths.split_at(4);
        (
            u64::from(u32::from_le_bytes(a.try_into().expect("4 bytes"))),
            u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes"))),
        )
    } else {
        let mut lengths = [0u8; 16];
        stream
            .read_exact(&mut lengths)
            .await
            .map_err(|e| e.to_string())?;
        let (a, b) = lengths.split_at(8);
        (
            u64::from_le_bytes(a.try_into().expect("8 bytes")),
            u64::from_le_bytes(b.try_into().expect("8 bytes")),
        )
    };
    if length > MAX_PAYLOAD || reserved > MAX_PAYLOAD {
        return Err(format!("a payload of {length} bytes"));
    }
    let mut payload = vec![0u8; usize::try_from(length).map_err(|e| e.to_string())?];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| e.to_string())?;
    if flags & FLAG_COMPRESSED != 0 {
        let mut plain = Vec::with_capacity(usize::try_from(reserved).unwrap_or(0));
        flate2::read::ZlibDecoder::new(payload.as_slice())
            .take(MAX_PAYLOAD)
            .read_to_end(&mut plain)
            .map_err(|e| format!("zlib: {e}"))?;
        payload = plain;
    }
    serde_json::from_slice(&payload).map_err(|e| format!("JSON: {e}"))
}

/// `value` framed: uncompressed, 4-byte lengths.
fn frame(value: &Value) -> Vec<u8> {
    let payload = value.to_string().into_bytes();
    let length = u32::try_from(payload.len()).expect("a small answer");
    let mut framed = Vec::with_capacity(13 + payload.len());
    framed.extend_from_slice(b"ZBXD\x01");
    framed.extend_from_slice(&length.to_le_bytes());
    framed.extend_from_slice(&0u32.to_le_bytes());
    framed.extend_from_slice(&payload);
    framed
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    async fn exchange(server: &ZabbixServer, message: &[u8]) -> Value {
        let mut stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        stream.write_all(message).await.expect("send");
        read_message(&mut stream).await.expect("a framed answer")
    }

    #[tokio::test]
    async fn it_hands_out_agent_ping_and_counts_the_values_sent_back() {
        let server = ZabbixServer::start().await.expect("bind");
        let checks = exchange(
            &server,
            &frame(&json!({"request": "active checks", "host": "h"})),
        )
        .await;
        assert_eq!(checks["response"], "success");
        assert_eq!(checks["data"][0]["key"], "agent.ping");
        assert_eq!(checks["data"][0]["delay"], "1");

        let data = json!({"request": "agent data", "data": [
            {"host": "h", "key": "agent.ping", "value": "1", "clock": 1, "ns": 0},
            {"host": "h", "key": "agent.ping", "value": "1", "clock": 2, "ns": 0},
        ]});
        let reply = exchange(&server, &frame(&data)).await;
        assert_eq!(reply["response"], "success");
        assert!(reply["info"].as_str().unwrap().starts_with("processed: 2;"));
        assert_eq!(server.values(), 2);
    }

    #[tokio::test]
    async fn compressed_and_large_frames_are_read_too() {
        let server = ZabbixServer::start().await.expect("bind");
        let data = json!({"request": "agent data", "data": [{"key": "agent.ping", "value": "1"}]});
        let plain = data.to_string().into_bytes();
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&plain).expect("compress");
        let compressed = encoder.finish().expect("compress");
        let mut message = b"ZBXD\x07".to_vec();
        message.extend_from_slice(&(compressed.len() as u64).to_le_bytes());
        message.extend_from_slice(&(plain.len() as u64).to_le_bytes());
        message.extend_from_slice(&compressed);
        assert_eq!(exchange(&server, &message).await["response"], "success");
        assert_eq!(server.values(), 1);
    }

    #[tokio::test]
    async fn a_stream_that_is_not_zabbix_is_refused() {
        let mut garbage: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        assert!(read_message(&mut garbage).await.is_err());
        let mut huge = b"ZBXD\x01\xff\xff\xff\xff\x00\x00\x00\x00".as_slice();
        assert!(
            read_message(&mut huge)
                .await
                .unwrap_err()
                .contains("payload of")
        );
    }
}

//! The reference control plane on the host's loopback, served by its own runtime
//! thread so that the tests can block on container commands meanwhile.

use hostbeat_refplane::{ControlPlane, HeartbeatRecord, PlaneConfig};

pub const CLIENT_ID: &str = "hostbeat";
/// Distinctive tokens, so that a scan finds any copy of their bytes.
pub const SECRET: &str = "ct_SyStEmTeSt-Wq7Zr3Kd9Pm2Xv6Nb4Tj";
pub const ROTATED: &str = "ct_RoTaTeDsYs-Fh5Lc8Gs2Yw7Qe4Ua9Vm";

pub struct Plane {
    pub api: ControlPlane,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    _runtime: tokio::runtime::Runtime,
}

impl Plane {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let api = ControlPlane::new(PlaneConfig::default());
        api.add_client(CLIENT_ID, SECRET);
        let addr = runtime.block_on(api.start()).unwrap();
        Self {
            api,
            url: format!("http://{addr}"),
            _runtime: runtime,
        }
    }

    /// Heartbeats accepted after the first `skip`.
    pub fn heartbeats_since(&self, skip: usize) -> Vec<HeartbeatRecord> {
        self.api.heartbeats().into_iter().skip(skip).collect()
    }
}

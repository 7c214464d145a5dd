//! The control-plane section of the bootstrap: flags, else the file.

use std::time::Duration;

use switchyard_proxy::control_plane::{ControlPlane, ControlPlaneTls};

use super::{Bootstrap, duration};
use crate::cli::RunArgs;

pub(super) fn control_plane_settings(
    args: &RunArgs,
    file: &Bootstrap,
    url: &str,
) -> anyhow::Result<ControlPlane> {
    let group = args
        .group
        .clone()
        .or(file.group.clone())
        .ok_or_else(|| anyhow::anyhow!("--control-plane needs --group NAME"))?;
    let node_id = match args.node_id.clone().or(file.node_id.clone()) {
        Some(node) => node,
        None => host_name()?,
    };
    let token = match args.token_file.clone().or(file.token_file.clone()) {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read token {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let report_interval = duration(
        &args.report_interval,
        file.report_interval,
        Duration::from_secs(5),
        "report-interval",
    )?;
    anyhow::ensure!(
        !report_interval.is_zero(),
        "--report-interval must be above zero"
    );
    let plane = ControlPlane {
        url: url
            .parse()
            .map_err(|e| anyhow::anyhow!("--control-plane {url:?}: {e}"))?,
        group,
        node_id,
        token,
        cache: args.table_cache.clone().or(file.table_cache.clone()),
        report_interval,
        max_table_bytes: args
            .max_table_bytes
            .or(file.max_table_bytes)
            .unwrap_or(switchyard_config::load::MAX_TABLE_BYTES),
        tls: ControlPlaneTls {
            ca_file: args
                .control_plane_ca
                .clone()
                .or(file.control_plane_ca.clone()),
            client_cert: args
                .control_plane_cert
                .clone()
                .or(file.control_plane_cert.clone()),
            client_key: args
                .control_plane_key
                .clone()
                .or(file.control_plane_key.clone()),
        },
    };
    plane.check()?;
    Ok(plane)
}

/// The node's name when `--node-id` is not given: `HOSTNAME` (a pod's name
/// in Kubernetes), else the kernel's host name.
fn host_name() -> anyhow::Result<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| anyhow::anyhow!("cannot tell the host name: pass --node-id"))
}

//! A disk probe run next to the load: what one small durable append costs on the filesystem the
//! benchmark's data directories live on (write 4 KiB at the end of a file, then `fdatasync`).
//! fsync cost decides how much group commit can win, and it differs by orders of magnitude
//! between a laptop NVMe, a cloud volume and a VM's virtual disk.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::latency::Latencies;

/// Appends `count` blocks of 4 KiB to a file in `dir`, syncing the data after each one.
pub fn fdatasync_appends(dir: &Path, count: usize) -> std::io::Result<Latencies> {
    let path = dir.join("fsync-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    let mut lat = Latencies::default();
    for _ in 0..count {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        lat.record(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(lat)
}

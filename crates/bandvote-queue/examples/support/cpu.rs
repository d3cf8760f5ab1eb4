//! This process's CPU time, for the examples that measure what a vote costs.

/// This process's user and system CPU time in seconds, every thread (`/proc/self/stat`, clock
/// ticks of 1/100 s).
pub fn seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The fields after the command name (which may hold spaces) start at state, field 3.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    Ok((fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / 100.0)
}

// Standby replay lag for read/write routing (issue 20): polled with each health check of a host some
// routed database uses, and pushed to the workers as the `lagging` flag (BackendFlags).

import Shared

enum StandbyLag {
    /// Appended to the role query's columns: the standby's replay lag in ms. 0 on a primary, and on a
    /// standby that has replayed everything it received; else the time since the last transaction it
    /// replayed committed on the primary (so a standby held back by recovery_min_apply_delay, or that
    /// fell behind, shows it).
    static let sql = ", CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN 0 "
        + "WHEN pg_catalog.pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_catalog.pg_last_wal_replay_lsn() THEN 0 "
        + "ELSE COALESCE((EXTRACT(EPOCH FROM pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp()) * 1000)::bigint, 0) END"

    /// A routed entry on the target's host: its max_standby_lag counts (the smallest wins).
    static func noteEntry(_ entry: DatabaseEntry, _ t: inout HealthTarget) {
        guard entry.routing.enabled else { return }
        t.maxLagMillis = min(t.maxLagMillis ?? .max, entry.routing.maxStandbyLagMillis)
    }
}

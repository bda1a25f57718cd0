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
        + "ELSE COALESCE((EXTRACT(EPOCH FROM pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp()) * 1000)::bigint, 0) END, "
        + "pg_catalog.pg_last_wal_replay_lsn()"

    /// PostgreSQL's text form of an LSN ("16/B374D848") as a number; nil for anything else.
    static func lsn(_ text: String?) -> UInt64? {
        guard let text, let slash = text.firstIndex(of: "/"),
              let hi = UInt64(text[..<slash], radix: 16), let lo = UInt64(text[text.index(after: slash)...], radix: 16),
              hi <= 0xFFFF_FFFF, lo <= 0xFFFF_FFFF else { return nil }
        return hi << 32 | lo
    }

    /// A routed entry on the target's host: its max_standby_lag counts (the smallest wins).
    static func noteEntry(_ entry: DatabaseEntry, _ t: inout HealthTarget) {
        guard entry.routing.enabled else { return }
        t.maxLagMillis = min(t.maxLagMillis ?? .max, entry.routing.maxStandbyLagMillis)
    }
}

extension StandbyLag {
    /// Tells the workers a standby's new replay position (read_after_write=lsn), before its state.
    static func pushReplay(_ s: Supervisor, _ i: Int) {
        let t = s.healthState.targets[i]
        guard let lsn = t.replayLSN, t.health.role?.inRecovery == true, lsn != t.pushedLSN else { return }
        s.healthState.targets[i].pushedLSN = lsn
        s.broadcast(.standbyReplay(host: t.host, port: Int32(t.port), lsn: lsn))
    }
}

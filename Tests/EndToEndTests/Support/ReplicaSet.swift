// A primary and streaming standbys on one machine (pg_basebackup -R), for routing tests (issue 20).
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A private primary (the usual roles and databases, plus `create table` rights for tests) and
/// `standbys` standbys made from it. `stop()` stops them all.
final class ReplicaSet {
    let primary: PostgresServer
    private(set) var standbys: [PostgresServer] = []

    /// `standbySettings[i]`: extra settings of standby i (`recovery_min_apply_delay=500ms`...).
    init(standbys count: Int = 2, primarySettings: [String] = [], standbySettings: [[String]] = []) throws {
        primary = try PostgresServer.startPrivate(settings: ["wal_level=replica", "max_wal_senders=10",
                                                             "wal_sender_timeout=5s"] + primarySettings) { data in
            let path = data + "/pg_hba.conf"
            try ("local replication all trust\n" + readTextFile(path)).write(toFile: path, atomically: false, encoding: .utf8)
        }
        do {
            for i in 0..<count {
                standbys.append(try PostgresServer.startStandby(
                    of: primary, settings: i < standbySettings.count ? standbySettings[i] : []))
            }
        } catch {
            stop()
            throw error
        }
    }

    /// Every server, primary first.
    var all: [PostgresServer] { [primary] + standbys }

    /// Waits until every standby has replayed what the primary has written so far.
    func waitCaughtUp(timeout: Double = 30) -> Bool {
        guard let lsn = try? primary.adminQuery("select pg_current_wal_lsn()") else { return false }
        return waitUntil(timeout: timeout, poll: 0.05) {
            self.standbys.allSatisfy { s in
                (try? s.adminQuery("select pg_last_wal_replay_lsn() >= '\(lsn)'::pg_lsn")) == "t"
            }
        }
    }

    /// The `host=...,... port=...,...` part of a `[databases]` entry naming every server.
    var hostsAndPorts: String {
        "host=" + all.map { _ in "127.0.0.1" }.joined(separator: ",") + " port="
            + all.map { String($0.port) }.joined(separator: ",")
    }

    func stop() {
        for s in standbys { s.stop() }
        primary.stop()
    }
}

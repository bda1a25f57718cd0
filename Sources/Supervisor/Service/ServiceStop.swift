// SHUTDOWN WAIT_FOR_SERVERS (SIGINT) across workers: the service exits once no server is in use anywhere.
import Shared

extension Supervisor {
    /// PgBouncer exits WAIT_FOR_SERVERS when its last server connection is released; with several
    /// workers that is a service-wide condition, so a worker in `safe` mode does not exit on its own
    /// while the supervisor is there (an idle worker would otherwise close its clients and admin
    /// sessions long before the service stops). The supervisor polls every worker as PAUSE does
    /// (`StatsCollection.Purpose.serversCheck`, every 50 ms) and, once no server is active anywhere
    /// and every worker answered, stops the service now (`shutdown(.immediate)`).
    func startServersCheck(now: Int64) {
        statsState.nextServersCheck = now
    }

    func serversChecked(_ merged: MergedStats, everyWorkerAnswered: Bool) {
        statsState.serversCheckRunning = false
        guard stopping == .safe else { return }
        let busy = merged.pools.reduce(0) { $0 + Int($1.svActive) + Int($1.svTested) + Int($1.svActiveCancel) }
        if busy == 0 && everyWorkerAnswered {
            // PgBouncer's words for it.
            log.info("server connections dropped, exiting")
            beginShutdown(.immediate, because: "WAIT_FOR_SERVERS")
        } else {
            statsState.nextServersCheck = Clock.monotonicNanos() + 50_000_000
        }
    }
}

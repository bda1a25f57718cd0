// What GET /health answers: 200 only while the service takes new clients and a backend is up.

/// The verdict behind `GET /health` on `metrics_listen`, for a load balancer's check (HAProxy's
/// `option httpchk`, a Kubernetes readiness probe): pure, from facts the supervisor holds.
///
/// 200 only while the service accepts new clients and at least one backend host is up. 503 as soon as
/// a stop begins (SHUTDOWN, SIGTERM, SIGINT: clients still connected are being drained) and for a whole
/// `pgswift upgrade` (from its binary check to the last replaced worker's exit), so a balancer sends
/// new clients elsewhere while this host drains; 503 while a worker slot has no ready process (start-up,
/// a crashed worker being replaced) and while no backend host is up (PostgreSQL unreachable: every
/// health check failing, or none answered yet). PAUSE keeps 200: the service still takes clients and
/// queues them, as PgBouncer does.
struct ServiceHealth: Equatable {
    var stopping: Bool
    var upgrading: Bool
    var readyWorkers: Int
    var workerSlots: Int
    /// Backend hosts the supervisor's health checks watch, and those whose last check succeeded.
    var backends: Int
    var backendsUp: Int

    /// nil: healthy (200). Otherwise why not, for the 503's body.
    var problem: String? {
        if stopping { return "shutting down" }
        if upgrading { return "upgrade in progress" }
        if readyWorkers < workerSlots { return "\(readyWorkers) of \(workerSlots) workers ready" }
        if backends == 0 { return "no backend configured" }
        if backendsUp == 0 { return "no backend is up (\(backends) checked)" }
        return nil
    }

    var isHealthy: Bool { problem == nil }
}

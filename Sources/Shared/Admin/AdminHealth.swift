// Columns of SHOW HEALTH (pgswift's own): one row per backend host the supervisor's health check watches.

extension AdminColumns {
    public static let health = make("sisssqqiiiss", [
        "host", "port", "state", "role", "addrs", "checks", "failed_checks", "retry", "backoff_ms",
        "state_for_ms", "last_check", "last_error"])
}

// Column names and types of every SHOW result, as PgBouncer 1.24 sends them (plus SHOW WORKERS).

/// One result column: name and pg_type OID (what `Backend.rowDescription` takes).
public typealias AdminColumn = (name: String, typeOID: Int32)

public enum AdminColumns {
    /// Builds a column list from a type string, one letter per column, with PgBouncer's meanings:
    /// s = text, i = int4, q = int8, N = numeric (counters that may pass int8's range), T = a time
    /// sent as text, b = bytea.
    static func make(_ types: String, _ names: [String]) -> [AdminColumn] {
        precondition(types.count == names.count, "column type string and names differ in length")
        return zip(types, names).map { t, n in
            switch t {
            case "s", "T": return (n, Backend.TypeOID.text)
            case "i": return (n, Backend.TypeOID.int4)
            case "q": return (n, Backend.TypeOID.int8)
            case "N": return (n, Backend.TypeOID.numeric)
            case "b": return (n, Backend.TypeOID.bytea)
            default: preconditionFailure("unknown column type letter \(t)")
            }
        }
    }

    /// SHOW QUERIES (issue 21; pgswift's own). error_classes: the errors by SQLSTATE class, "22:40 23:1".
    public static let queries = make("ssqs" + String(repeating: "q", count: 10) + "s", [
        "database", "user", "queryid", "query", "calls", "total_exec_us", "mean_exec_us", "p50_us", "p95_us",
        "p99_us", "max_us", "total_wait_us", "errors", "rows", "error_classes"])

    /// SHOW TABLES (issue 21; pgswift's own).
    public static let tables = make("ssqqqq", ["database", "table", "calls", "total_exec_us", "reads", "writes"])

    public static let pools = make("ssiiiiiiiiiiiiissii", [
        "database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
        "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
        "maxwait", "maxwait_us", "pool_mode", "load_balance_hosts", "cl_pinned", "sv_listen"])

    public static let stats = make("s" + String(repeating: "N", count: 22), [
        "database",
        "total_server_assignment_count", "total_xact_count", "total_query_count", "total_received", "total_sent",
        "total_xact_time", "total_query_time", "total_wait_time", "total_client_parse_count",
        "total_server_parse_count", "total_bind_count",
        "avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent",
        "avg_xact_time", "avg_query_time", "avg_wait_time", "avg_client_parse_count",
        "avg_server_parse_count", "avg_bind_count"])

    public static let statsTotals = make("s" + String(repeating: "N", count: 11), [
        "database", "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
        "xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count", "bind_count"])

    /// PgBouncer names the last three columns with an avg_ prefix here, unlike the others; kept as is.
    public static let statsAverages = make("s" + String(repeating: "N", count: 11), [
        "database", "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
        "xact_time", "query_time", "wait_time", "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count"])

    public static let totals = make("sN", ["name", "value"])

    static let socketNames = [
        "type", "user", "database", "replication", "state", "addr", "port", "local_addr", "local_port",
        "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
        "application_name", "prepared_statements", "id"]
    public static let clients = make("ssssssisiTTiiississii", socketNames)
    public static let servers = clients
    public static let sockets = make("ssssssisiTTiiississiiiiiiiii", socketNames + [
        "recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail", "send_avail"])
    public static let activeSockets = sockets

    public static let databases = make("ssissiiiissiiiiii", [
        "name", "host", "port", "database", "force_user", "pool_size", "min_pool_size", "reserve_pool_size",
        "server_lifetime", "pool_mode", "load_balance_hosts", "max_connections", "current_connections",
        "max_client_connections", "current_client_connections", "paused", "disabled"])

    public static let users = make("ssssiiii", [
        "name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections", "current_connections",
        "max_user_client_connections", "current_client_connections"])

    public static let lists = make("si", ["list", "items"])
    public static let config = make("ssss", ["key", "value", "default", "changeable"])
    public static let state = make("ss", ["key", "value"])
    public static let version = make("s", ["version"])
    public static let peers = make("isii", ["peer_id", "host", "port", "pool_size"])
    public static let peerPools = make("iiiii", [
        "peer_id", "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active_cancel", "sv_login"])
    public static let mem = make("siiii", ["name", "size", "used", "free", "memtotal"])
    public static let dnsHosts = make("sqs", ["hostname", "ttl", "addrs"])
    public static let dnsZones = make("sqi", ["zonename", "serial", "count"])
    public static let fds = make("issssiqisssssbb", [
        "fd", "task", "user", "database", "addr", "port", "cancel", "link", "client_encoding", "std_strings",
        "datestyle", "timezone", "password", "scram_client_key", "scram_server_key"])

    /// pgswift's own.
    public static let workers = make("iiTiisiNq", [
        "slot", "pid", "started_at", "clients", "servers", "state", "restarts", "cpu_seconds", "rss_bytes"])

    /// pgswift's own: read/write routing per database and host.
    public static let routing = make("ssissqqqq", [
        "database", "host", "port", "role", "replay_lag_ms", "reads", "writes", "fallbacks", "retries"])

    /// The column list of a SHOW; nil for HELP (a NOTICE, no result set).
    public static func columns(for target: AdminShowTarget) -> [AdminColumn]? {
        switch target {
        case .help: return nil
        case .config: return config
        case .databases: return databases
        case .fds: return fds
        case .lists: return lists
        case .peers: return peers
        case .peerPools: return peerPools
        case .pools: return pools
        case .servers: return servers
        case .clients: return clients
        case .sockets: return sockets
        case .activeSockets: return activeSockets
        case .stats: return stats
        case .statsTotals: return statsTotals
        case .statsAverages: return statsAverages
        case .users: return users
        case .version: return version
        case .totals: return totals
        case .mem: return mem
        case .dnsHosts: return dnsHosts
        case .dnsZones: return dnsZones
        case .state: return state
        case .workers: return workers
        case .health: return health
        case .routing: return routing
        }
    }
}

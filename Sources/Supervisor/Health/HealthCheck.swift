// Backend health checks in the supervisor: connect, log in, run server_check_query, back off on failure, tell the workers.
import Glibc
import Shared

/// One check in flight: a non-blocking connection to a backend host, driven by the supervisor's loop.
final class HealthProbe {
    /// `tlsRequested`: SSLRequest sent, its one-byte answer awaited; `tlsHandshake`: TLS being set up.
    enum Phase { case connecting, tlsRequested, tlsHandshake, login, query }
    let fd: Int32
    let serial: UInt32
    let address: String
    var phase = Phase.connecting
    /// The connection's TLS, once PostgreSQL accepted the SSLRequest (server_tls_sslmode above disable),
    /// and whether its handshake waits for the socket to take more (else for bytes to read).
    var tls: TLSClientSocket? = nil
    var handshakeWantsWrite = false
    var input: [UInt8] = []
    var pending: [UInt8] = []
    var deadline: Int64
    /// Answers the server's authentication requests; created at the first one.
    var login: BackendLoginMachine?
    var lastRow: [String?]? = nil
    var wantsOutput = true

    init(fd: Int32, serial: UInt32, address: String, deadline: Int64) {
        self.fd = fd
        self.serial = serial
        self.address = address
        self.deadline = deadline
    }

    /// Why a read or send failed, worded for the check's log line.
    struct IOFailure: Error { var reason: String }

    /// Sends what the socket takes of `b`, through TLS once it is set up: the bytes taken (0: the
    /// socket is full).
    func send(_ b: UnsafeRawBufferPointer) -> Result<Int, IOFailure> {
        if let tls {
            return tls.write(b.baseAddress!, b.count).mapError { IOFailure(reason: "TLS send to \(address) failed: \($0.reason)") }
        }
        do throws(SyscallError) {
            guard case .processed(let n) = try Posix.send(fd, b.baseAddress!, b.count) else { return .success(0) }
            return .success(n)
        } catch {
            return .failure(IOFailure(reason: "send to \(address) failed: \(error.errno)"))
        }
    }

    /// Reads into `b`, through TLS once it is set up: `.processed(0)` is the end of the connection.
    func read(_ b: UnsafeMutableRawBufferPointer) -> Result<IOResult, IOFailure> {
        if let tls {
            switch tls.read(b.baseAddress!, b.count) {
            case .data(let n): return .success(.processed(n))
            case .wantMore: return .success(.wouldBlock)
            case .closed: return .success(.processed(0))
            case .failed(let reason): return .failure(IOFailure(reason: "TLS read from \(address) failed: \(reason)"))
            }
        }
        do throws(SyscallError) {
            return .success(try Posix.read(fd, b.baseAddress!, b.count))
        } catch {
            return .failure(IOFailure(reason: "read from \(address) failed: \(error.errno)"))
        }
    }
}

/// One backend host (host, port) of the `[databases]` entries, checked once whatever number of databases use it.
struct HealthTarget {
    enum Kind { case numeric, unix, name }
    var key: String
    var host: String
    var port: Int
    var kind: Kind
    /// Who the check logs in as, and where (the first database entry that names this host).
    var database: String
    var user: String
    var secret: PasswordSecret?
    /// Some database on this host has a target_session_attrs other than any: learn the role too.
    var needRole: Bool
    var addresses: [SocketAddress] = []
    var resolvedAt: Int64 = 0
    var resolveError: String? = nil
    var nextAddress = 0
    var health: HostHealth
    var nextCheckAt: Int64 = 0
    var probe: HealthProbe? = nil
    /// Read/write routing (StandbyLag.swift): the smallest max_standby_lag (ms) of the routed databases
    /// on this host (nil: none routes, the lag is not polled), and the replay lag the last check saw.
    var maxLagMillis: Int? = nil
    var replayLagMillis: Int64? = nil
    /// The standby's replay position the last check read, and what the workers were last told of it.
    var replayLSN: UInt64? = nil
    var pushedLSN: UInt64? = nil
    /// What the workers were last told, to push only changes.
    var pushed: (flags: UInt8, addresses: [String])? = nil
    /// A login refusal already logged (class 28): logged once, not on every check.
    var loggedLoginRefusal = ""

    var addressTexts: [String] { kind == .name ? addresses.map { $0.hostString } : [] }

    var flags: BackendFlags {
        var f = BackendFlags()
        switch health.state {
        case .unknown: break
        case .up: f.insert([.known, .up])
        case .down: f.insert(.known)
        }
        if let r = health.role {
            f.insert(.roleKnown)
            if r.inRecovery { f.insert(.inRecovery) }
            if r.readOnly { f.insert(.readOnly) }
        }
        if kind == .name && resolvedAt > 0 { f.insert(.resolved) }
        if let m = maxLagMillis, let l = replayLagMillis, l > Int64(m), health.role?.inRecovery == true { f.insert(.lagging) }
        return f
    }
}

/// The supervisor's health-check state (one per supervisor).
struct HealthCheckState {
    var targets: [HealthTarget] = []
    var resolver: DNSResolver? = nil
    var nextSerial: UInt32 = 0
    var started = false
    var rng = SystemRandomNumberGenerator()
    /// server_tls_*: the checks speak TLS to TCP hosts as the workers' server connections do (nil:
    /// server_tls_sslmode = disable).
    var tls: TLSContext? = nil

    /// The key workers and the supervisor use for a host: "host:port".
    static func key(host: String, port: Int) -> String { "\(host):\(port)" }
}

extension Supervisor {
    // MARK: Configuration

    func startHealthChecks(now: Int64) {
        if healthState.resolver == nil {
            do throws(SyscallError) {
                let r = try DNSResolver()
                try epoll.add(r.mailbox.wakeRead, events: .input, data: SupervisorToken.healthResolver.raw)
                healthState.resolver = r
            } catch {
                log.error("cannot start the DNS resolver: \(error); host names will not be resolved")
            }
        }
        healthState.started = true
        reconfigureHealthChecks(now: now)
    }

    /// (Re)builds the target list from the configuration; a host kept across a reload keeps its state.
    func reconfigureHealthChecks(now: Int64) {
        guard healthState.started else { return }
        // Rebuilt at every reload, as the workers rebuild theirs (WorkerTLS.load), so a certificate or
        // CA file replaced under the same name counts for both; one that fails keeps the context in use,
        // as in the workers.
        do throws(TLSSetupError) {
            healthState.tls = try TLSContext.connectingServers(config.resolvedTLS(\.serverTLS))
        } catch {
            log.warning("health checks: server TLS cannot be set up (\(error)); the checks keep the TLS settings they had")
        }
        let userlist: Userlist
        if let path = config.authFile, !path.isEmpty, let u = try? Userlist.load(path: path) {
            userlist = u
        } else {
            userlist = Userlist()
        }
        var old: [String: HealthTarget] = [:]
        for t in healthState.targets { old[t.key] = t }
        var targets: [HealthTarget] = []
        var seen: [String: Int] = [:]
        // The `*` entry's hosts too (its pools name their own databases; the check logs in to `postgres`).
        var entries = config.databases
        if var fallback = config.fallbackDatabase {
            fallback.dbname = fallback.dbname ?? "postgres"
            entries.append(fallback)
        }
        for entry in entries {
            let hosts = entry.hosts.isEmpty ? [""] : entry.hosts
            let (user, secret) = healthCheckLogin(entry, userlist)
            for (i, rawHost) in hosts.enumerated() {
                let port = entry.port(forHostAt: i)
                let host = rawHost.isEmpty ? "/var/run/postgresql" : rawHost
                let key = HealthCheckState.key(host: host, port: port)
                if let at = seen[key] {
                    if entry.targetSessionAttrs != .any || entry.routing.enabled { targets[at].needRole = true }
                    StandbyLag.noteEntry(entry, &targets[at])
                    continue
                }
                let kind: HealthTarget.Kind = DatabaseEntry.isUnixSocket(host) ? .unix
                    : (SocketAddress.numeric(host: host, port: port) != nil ? .numeric : .name)
                var t = old.removeValue(forKey: key) ?? HealthTarget(
                    key: key, host: host, port: port, kind: kind, database: entry.serverDatabaseName, user: user,
                    secret: secret, needRole: false, health: HostHealth(backoff: healthBackoff()), nextCheckAt: now)
                t.database = entry.serverDatabaseName
                t.user = user
                t.secret = secret
                t.needRole = entry.targetSessionAttrs != .any || entry.routing.enabled
                t.maxLagMillis = nil
                StandbyLag.noteEntry(entry, &t)
                switch kind {
                case .numeric: t.addresses = SocketAddress.numeric(host: host, port: port).map { [$0] } ?? []
                case .unix: t.addresses = SocketAddress.unix(path: "\(host)/.s.PGSQL.\(port)").map { [$0] } ?? []
                case .name: break
                }
                seen[key] = targets.count
                targets.append(t)
            }
        }
        for (_, gone) in old { if let p = gone.probe { endProbe(p) } }
        healthState.targets = targets
        for i in healthState.targets.indices where healthState.targets[i].kind == .name
            && healthState.targets[i].resolvedAt == 0 {
            startResolve(i)
        }
    }

    /// `server_check_delay` between checks of a healthy host; PgBouncer's 0 ("check on every reuse")
    /// becomes one check a second here, and nothing runs more often than ten times a second.
    func healthCheckPeriod() -> Int64 {
        Clock.nanos(seconds: config.serverCheckDelay > 0 ? max(config.serverCheckDelay, 0.1) : 1)
    }

    func healthBackoff() -> Backoff {
        Backoff(initialNanos: Clock.nanos(seconds: config.healthCheckBackoffInitial),
                maxNanos: Clock.nanos(seconds: config.healthCheckBackoffMax))
    }

    /// Who the check logs in as: `[pgswift] health_check_user`, else the entry's forced `user=`, else the
    /// first auth_file user (by name) whose secret is usable without a client (plain or md5). The password
    /// is the entry's `password=` for its forced user, else the auth_file's.
    func healthCheckLogin(_ entry: DatabaseEntry, _ userlist: Userlist) -> (String, PasswordSecret?) {
        func secret(_ user: String) -> PasswordSecret? {
            if user == entry.user, let pw = entry.password, !pw.isEmpty { return PasswordSecret(parsing: pw) }
            return userlist.password(for: user).map { PasswordSecret(parsing: $0) }
        }
        if !config.healthCheckUser.isEmpty { return (config.healthCheckUser, secret(config.healthCheckUser)) }
        if let u = entry.user { return (u, secret(u)) }
        for name in userlist.entries.keys.sorted() {
            switch PasswordSecret(parsing: userlist.entries[name]!) {
            case .plain, .md5: return (name, secret(name))
            case .scram: continue
            }
        }
        return ("postgres", nil)
    }

    // MARK: Timers

    func healthTimeout(now: Int64) -> Int64 {
        guard healthState.started, stopping == nil else { return .max }
        var next: Int64 = .max
        let ttl = Clock.nanos(seconds: max(config.dnsMaxTTL, 1))
        let nxTTL = Clock.nanos(seconds: max(config.dnsNXDomainTTL, 1))
        let inFlight = healthState.resolver?.inFlight ?? []
        for t in healthState.targets {
            if let p = t.probe { next = min(next, p.deadline) } else if t.kind != .name || !t.addresses.isEmpty || t.resolveError != nil {
                next = min(next, t.nextCheckAt)
            }
            // Not while its lookup runs: the answer wakes the loop, and a deadline already past would
            // spin it (epoll_wait with no wait) for as long as a slow resolver takes.
            if t.kind == .name && t.resolvedAt > 0 && !inFlight.contains(t.key) {
                next = min(next, t.resolvedAt + (t.resolveError == nil ? ttl : nxTTL))
            }
        }
        return next
    }

    func runHealthTimers(now: Int64) {
        guard healthState.started, stopping == nil else { return }
        let ttl = Clock.nanos(seconds: max(config.dnsMaxTTL, 1))
        let nxTTL = Clock.nanos(seconds: max(config.dnsNXDomainTTL, 1))
        for i in healthState.targets.indices {
            if let p = healthState.targets[i].probe {
                if now >= p.deadline {
                    probeFailed(i, "no answer within health_check_timeout (\(HealthText.seconds(nanos: Clock.nanos(seconds: config.healthCheckTimeout))) s)")
                }
                continue
            }
            let t = healthState.targets[i]
            // A name is looked up again after dns_max_ttl, or dns_nxdomain_ttl after a failed lookup.
            if t.kind == .name && t.resolvedAt > 0 && now - t.resolvedAt >= (t.resolveError == nil ? ttl : nxTTL) { startResolve(i) }
            if now >= t.nextCheckAt { beginCheck(i, now: now) }
        }
    }

    // MARK: Checking

    func beginCheck(_ i: Int, now: Int64) {
        var t = healthState.targets[i]
        if t.addresses.isEmpty {
            if t.kind == .name && t.resolveError == nil {
                // Waiting for the first lookup: the check starts when it answers.
                startResolve(i)
                healthState.targets[i].nextCheckAt = now + 1_000_000_000
                return
            }
            checkFinished(i, failure: t.resolveError.map { "cannot resolve \(t.host): \($0)" } ?? "no address", role: nil)
            return
        }
        let address = t.addresses[t.nextAddress % t.addresses.count]
        t.nextAddress &+= 1
        healthState.targets[i] = t
        let fd: Int32
        let connected: Bool
        do throws(SyscallError) {
            (fd, connected) = try Sockets.connect(address)
        } catch {
            checkFinished(i, failure: "connect to \(address): \(error.errno)", role: nil)
            return
        }
        healthState.nextSerial &+= 1
        let probe = HealthProbe(fd: fd, serial: healthState.nextSerial & SupervisorToken.probeSerialMask, address: address.description,
                                deadline: now + Clock.nanos(seconds: max(config.healthCheckTimeout, 0.05)))
        healthState.targets[i].probe = probe
        do throws(SyscallError) {
            try epoll.add(fd, events: [.input, .output], data: probeData(i, probe))
        } catch {
            probeFailed(i, "epoll: \(error)")
            return
        }
        if connected { probeConnected(i, probe) }
    }

    func probeData(_ i: Int, _ p: HealthProbe) -> UInt64 {
        SupervisorToken.healthProbe(target: i, serial: p.serial).raw
    }

    func handleHealthEvent(_ token: SupervisorToken) {
        let index = token.index
        if index < 0 {
            guard let r = healthState.resolver else { return }
            for result in r.collect() { resolved(result) }
            return
        }
        guard index < healthState.targets.count, let p = healthState.targets[index].probe,
              p.serial == token.generation else { return }
        switch p.phase {
        case .connecting:
            if let e = Sockets.pendingError(p.fd) {
                probeFailed(index, "connect to \(p.address): \(e)")
                return
            }
            probeConnected(index, p)
        case .tlsRequested:
            probeTLSAnswer(index, p)
        case .tlsHandshake:
            probeHandshake(index, p)
        case .login, .query:
            probeRead(index, p)
        }
        if let q = healthState.targets[index].probe, q === p { flushProbe(index, p) }
    }

    func probeConnected(_ i: Int, _ p: HealthProbe) {
        if healthState.tls != nil && healthState.targets[i].kind != .unix {
            // As a worker's server connection: SSLRequest first, never on a Unix socket.
            var out = OutBuffer(capacity: 16)
            defer { out.deallocate() }
            Frontend.sslRequest(into: &out)
            p.pending += out.bytes
            p.phase = .tlsRequested
            flushProbe(i, p)
            return
        }
        sendProbeStartup(i, p)
    }

    /// The startup packet, in plaintext or over the TLS just set up.
    func sendProbeStartup(_ i: Int, _ p: HealthProbe) {
        let t = healthState.targets[i]
        p.phase = .login
        var out = OutBuffer(capacity: 256)
        defer { out.deallocate() }
        Frontend.startupMessage(into: &out, parameters: [("user", t.user), ("database", t.database),
                                                         ("application_name", "pgswift health check")])
        p.pending += out.bytes
        flushProbe(i, p)
    }

    func flushProbe(_ i: Int, _ p: HealthProbe) {
        sending: while !p.pending.isEmpty {
            switch p.pending.withUnsafeBytes({ p.send($0) }) {
            case .success(0): break sending
            case .success(let n): p.pending.removeFirst(n)
            case .failure(let f): return probeFailed(i, f.reason)
            }
        }
        let want = !p.pending.isEmpty || p.phase == .connecting || (p.phase == .tlsHandshake && p.handshakeWantsWrite)
        if want != p.wantsOutput {
            p.wantsOutput = want
            try? epoll.modify(p.fd, events: want ? [.input, .output] : [.input], data: probeData(i, p))
        }
    }

    func probeRead(_ i: Int, _ p: HealthProbe) {
        var buf = [UInt8](repeating: 0, count: 8192)
        while true {
            let read: IOResult
            switch buf.withUnsafeMutableBytes({ p.read($0) }) {
            case .success(let r): read = r
            case .failure(let f): return probeFailed(i, f.reason)
            }
            switch read {
            case .wouldBlock:
                return
            case .processed(0):
                probeFailed(i, "\(p.address) closed the connection")
                return
            case .processed(let n):
                p.input += buf[0..<n]
                if p.input.count > 1 << 20 {
                    probeFailed(i, "\(p.address) sent more than 1 MiB to a health check")
                    return
                }
                while p.input.count >= 5 {
                    let len = Int(UInt32(p.input[1]) << 24 | UInt32(p.input[2]) << 16 | UInt32(p.input[3]) << 8 | UInt32(p.input[4]))
                    guard len >= 4 && len < 1 << 20 else {
                        probeFailed(i, "invalid message from \(p.address)")
                        return
                    }
                    guard p.input.count >= len + 1 else { break }
                    let type = p.input[0]
                    let body = Array(p.input[5..<(len + 1)])
                    p.input.removeFirst(len + 1)
                    probeMessage(i, p, type, body)
                    guard let q = healthState.targets[i].probe, q === p else { return }
                }
            }
        }
    }

    /// PostgreSQL's one-byte answer to the SSLRequest: `S` starts TLS, `N` goes on in plaintext unless
    /// server_tls_sslmode requires TLS (then the check fails, as a worker's login would).
    func probeTLSAnswer(_ i: Int, _ p: HealthProbe) {
        var answer: UInt8 = 0
        let r: IOResult
        switch withUnsafeMutableBytes(of: &answer, { p.read($0) }) {  // one byte, in plaintext: TLS is not set up yet
        case .success(let got): r = got
        case .failure(let f): return probeFailed(i, f.reason)
        }
        guard case .processed(let n) = r else { return }
        guard n == 1, let ctx = healthState.tls else { return probeFailed(i, "\(p.address) closed the connection after SSLRequest") }
        switch answer {
        case UInt8(ascii: "S"):
            let host = healthState.targets[i].kind == .unix ? nil : healthState.targets[i].host
            guard let tls = TLSClientSocket(context: ctx, fd: p.fd, host: host) else {
                return probeFailed(i, "TLS setup failed: \(TLSContext.lastError())")
            }
            p.tls = tls
            p.phase = .tlsHandshake
            probeHandshake(i, p)
        case UInt8(ascii: "N"):
            if ctx.mode.requiresTLS {
                return probeFailed(i, "server refused TLS (server_tls_sslmode is \(ctx.mode.rawValue))")
            }
            sendProbeStartup(i, p)
        default:
            probeFailed(i, "unexpected answer to SSLRequest from \(p.address)")
        }
    }

    func probeHandshake(_ i: Int, _ p: HealthProbe) {
        guard let tls = p.tls else { return }
        switch tls.handshake() {
        case .done:
            sendProbeStartup(i, p)
        case .wantRead:
            p.handshakeWantsWrite = false
        case .wantWrite:
            p.handshakeWantsWrite = true
        case .failed(let reason):
            probeFailed(i, "TLS handshake with \(p.address) failed: \(reason)")
        }
    }

    func probeMessage(_ i: Int, _ p: HealthProbe, _ type: UInt8, _ body: [UInt8]) {
        let t = healthState.targets[i]
        var out = OutBuffer(capacity: 256)
        defer { out.deallocate() }
        switch type {
        case BackendType.authentication:
            guard let req = body.withUnsafeBytes({ AuthenticationRequest.parse($0) }) else {
                return probeFailed(i, "invalid authentication request from \(p.address)")
            }
            if p.login == nil { p.login = BackendLoginMachine(user: t.user, secret: t.secret) }
            if let action = p.login?.authenticationRequestReceived(req) { performProbeLogin(i, p, action) }
        case BackendType.errorResponse:
            let f = body.withUnsafeBytes { ErrorFields.parse($0) }
            if p.phase == .login, let f {
                return performProbeLogin(i, p, p.login?.errorReceived(f) ?? .fail(.server(f)))
            }
            probeFailed(i, f.map { "\($0.message) (\($0.code))" } ?? "error")
        case BackendType.dataRow:
            p.lastRow = body.withUnsafeBytes { Decode.dataRowText($0) }
        case BackendType.readyForQuery:
            if p.phase == .login {
                let sql = healthCheckSQL(needRole: t.needRole) + (t.maxLagMillis != nil ? StandbyLag.sql : "")
                p.phase = .query
                Frontend.query(into: &out, sql: sql)
                p.pending += out.bytes
                return
            }
            var role: HostRole? = nil
            if t.needRole, let row = p.lastRow, row.count == 2 {
                role = HostRole(inRecovery: row[0] == "t", readOnly: row[1] == "on")
            } else if t.maxLagMillis != nil, let row = p.lastRow, row.count == 4 {
                role = HostRole(inRecovery: row[0] == "t", readOnly: row[1] == "on")
                healthState.targets[i].replayLagMillis = row[2].flatMap { Int64($0) }
                healthState.targets[i].replayLSN = StandbyLag.lsn(row[3])
            }
            out.appendEmptyMessage(FrontendType.terminate)
            out.withUnsafeBytes { _ = p.send($0) }
            checkFinished(i, failure: nil, role: role)
        default:
            break
        }
    }

    /// Does what the login machine asks: answer the server, wait, or end the check.
    func performProbeLogin(_ i: Int, _ p: HealthProbe, _ action: BackendLoginMachine.Action) {
        if case .fail(let failure) = action { return probeLoginFailed(i, failure) }
        var out = OutBuffer(capacity: 256)
        defer { out.deallocate() }
        if action.encode(into: &out) { p.pending += out.bytes }
    }

    /// A refusal (no usable password, a method pgswift lacks, SCRAM failing, a class 28 or 3D error)
    /// still means PostgreSQL answers: `loginRefused` counts the host up.
    func probeLoginFailed(_ i: Int, _ failure: BackendLoginFailure) {
        let user = healthState.targets[i].user
        switch failure {
        case .noPassword(_, .cleartext):
            loginRefused(i, "no plain password for \(user)")
        case .noPassword(_, .md5), .wrongPasswordType(.md5), .wrongPasswordType(.cleartext):
            loginRefused(i, "no md5-usable password for \(user)")
        case .noPassword(_, .scram), .wrongPasswordType(.scram), .noSupportedSASLMechanism, .scramClientKeyMissing:
            loginRefused(i, "no password usable for SCRAM for \(user)")
        case .scram(let reason):
            loginRefused(i, "SCRAM: \(reason)")
        case .unsupportedMethod:
            loginRefused(i, "unsupported authentication method")
        case .unexpectedSASLContinue:
            probeFailed(i, "unexpected SASL continue")
        case .unexpectedSASLFinal:
            probeFailed(i, "unexpected SASL final")
        case .server(let f):
            // Refused login or unknown database: PostgreSQL is there and answering, just not to this check.
            let text = "\(f.message) (\(f.code))"
            if f.code.hasPrefix("28") || f.code.hasPrefix("3D") { loginRefused(i, text) } else { probeFailed(i, text) }
        }
    }

    /// `server_check_query` (the PgBouncer default `<empty>` and an empty value run `SELECT 1`), then,
    /// when some database needs it, the role query whose last row `probeMessage` reads.
    func healthCheckSQL(needRole: Bool) -> String {
        var sql = config.serverCheckQueryToSend ?? ""
        if sql.isEmpty { sql = "SELECT 1" }
        if needRole {
            sql += "; SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('transaction_read_only')"
        }
        return sql
    }

    /// PostgreSQL answered but refused the check's login: the host is up (it speaks the protocol), the
    /// role stays unknown. Logged once per distinct reason, so a bad health-check user is visible.
    func loginRefused(_ i: Int, _ reason: String) {
        if healthState.targets[i].loggedLoginRefusal != reason {
            healthState.targets[i].loggedLoginRefusal = reason
            log.warning("health check of \(healthState.targets[i].key): login as \(healthState.targets[i].user) refused: \(reason); "
                        + "counting the host as up (set [pgswift] health_check_user)")
        }
        checkFinished(i, failure: nil, role: nil)
    }

    func probeFailed(_ i: Int, _ reason: String) {
        checkFinished(i, failure: reason, role: nil)
    }

    func endProbe(_ p: HealthProbe) {
        epoll.remove(p.fd)
        p.tls?.release()
        Posix.close(p.fd)
    }

    /// One check's verdict: state machine, logs, next check, re-resolution, and the workers told.
    func checkFinished(_ i: Int, failure: String?, role: HostRole?) {
        let now = Clock.monotonicNanos()
        if let p = healthState.targets[i].probe {
            endProbe(p)
            healthState.targets[i].probe = nil
        }
        let key = healthState.targets[i].key
        if let reason = failure {
            let wasUp = healthState.targets[i].health.state == .up
            let downSince = healthState.targets[i].health.state == .down ? healthState.targets[i].health.lastChangeNanos : now
            let random = Double(healthState.rng.next() >> 11) / Double(1 << 53)
            let o = healthState.targets[i].health.failed(now: now, reason: reason, random: random)
            healthState.targets[i].nextCheckAt = now + o.nextInNanos
            if o.changedTo != nil {
                log.warning("backend \(key) is DOWN\(wasUp ? "" : " (first check)"): \(reason)")
            }
            log.info("health check of \(key) failed (\(reason)): retry \(o.retry) in \(HealthText.seconds(nanos: o.nextInNanos)) s "
                     + "(backoff \(HealthText.seconds(nanos: o.backoffCapNanos)) s, full jitter; down for \(HealthText.seconds(nanos: now - downSince)) s)")
            // A failed check of an address the name gave may mean the name moved (a managed database
            // failing over by DNS): look it up now. Not when the last lookup failed: that one is
            // repeated after dns_nxdomain_ttl (runHealthTimers), not at every check.
            if healthState.targets[i].kind == .name && healthState.targets[i].resolveError == nil { startResolve(i) }
        } else {
            let previous = healthState.targets[i].health.state
            let downSince = healthState.targets[i].health.lastChangeNanos
            let o = healthState.targets[i].health.succeeded(now: now, role: role, periodNanos: healthCheckPeriod())
            healthState.targets[i].nextCheckAt = now + o.nextInNanos
            if o.changedTo != nil {
                let roleText = role.map { " (\($0.inRecovery ? "in recovery" : "primary"), \($0.readOnly ? "read-only" : "read-write"))" } ?? ""
                if previous == .down {
                    log.info("backend \(key) is UP again after \(HealthText.seconds(nanos: now - downSince)) s down\(roleText)")
                } else {
                    log.info("backend \(key) is up\(roleText)")
                }
            }
        }
        pushHealth(i)
    }

    // MARK: Names

    func startResolve(_ i: Int) {
        guard let r = healthState.resolver else { return }
        let t = healthState.targets[i]
        guard t.kind == .name else { return }
        if !r.start(key: t.key, host: t.host, port: t.port) {
            log.warning("cannot start a lookup of \(t.host)")
        }
    }

    func resolved(_ r: ResolveResult) {
        guard let i = healthState.targets.firstIndex(where: { $0.key == r.key }) else { return }
        let now = Clock.monotonicNanos()
        let before = healthState.targets[i].addressTexts
        healthState.targets[i].resolvedAt = now
        if let e = r.error {
            if healthState.targets[i].resolveError != e {
                log.warning("cannot resolve \(healthState.targets[i].host): \(e)")
            }
            healthState.targets[i].resolveError = e
            // Keep the last known addresses: a resolver hiccup is not a reason to forget a working host.
            // A name never resolved and never checked gets its verdict (down) now; after that its
            // checks keep their backoff, and only the next lookup (dns_nxdomain_ttl) can change it.
            if healthState.targets[i].addresses.isEmpty && healthState.targets[i].probe == nil
                && healthState.targets[i].health.state == .unknown {
                healthState.targets[i].nextCheckAt = min(healthState.targets[i].nextCheckAt, now)
            }
            return
        }
        healthState.targets[i].resolveError = nil
        healthState.targets[i].addresses = r.addresses
        let after = healthState.targets[i].addressTexts
        if before != after {
            if before.isEmpty {
                log.info("host \(healthState.targets[i].host) resolves to \(after.joined(separator: ", "))")
            } else {
                log.info("host \(healthState.targets[i].host) now resolves to \(after.joined(separator: ", ")) (was \(before.joined(separator: ", ")))")
            }
            // Check the new address now rather than at the next period.
            if healthState.targets[i].probe == nil { healthState.targets[i].nextCheckAt = now }
            pushHealth(i)
        }
    }

    // MARK: Telling the workers

    func backendStateMessage(_ t: HealthTarget) -> ControlMessage {
        .backendState(host: t.host, port: Int32(t.port), flags: t.flags.rawValue, addresses: t.addressTexts)
    }

    func pushHealth(_ i: Int) {
        let t = healthState.targets[i]
        let now = (t.flags.rawValue, t.addressTexts)
        StandbyLag.pushReplay(self, i)
        if let p = t.pushed, p.flags == now.0 && p.addresses == now.1 { return }
        healthState.targets[i].pushed = now
        broadcast(backendStateMessage(t))
    }

    /// A worker just started: it learns every known host state and resolved address.
    func sendHealth(to slot: WorkerSlot) {
        for t in healthState.targets where t.pushed != nil {
            slot.send(backendStateMessage(t))
            if let lsn = t.pushedLSN { slot.send(.standbyReplay(host: t.host, port: Int32(t.port), lsn: lsn)) }
        }
    }

    /// A worker's own connect failed: check that host now instead of at the next period.
    func healthBackendFailed(host: String, port: Int, reason: String) {
        let key = HealthCheckState.key(host: host, port: port)
        guard let i = healthState.targets.firstIndex(where: { $0.key == key }) else { return }
        let now = Clock.monotonicNanos()
        if healthState.targets[i].probe == nil && healthState.targets[i].health.state != .down
            && now - healthState.targets[i].health.lastCheckNanos > 100_000_000 {
            log.debug("worker reports \(key) failing (\(reason)): checking it now")
            healthState.targets[i].nextCheckAt = now
        }
    }
}

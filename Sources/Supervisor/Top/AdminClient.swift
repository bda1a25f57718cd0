// A small blocking PostgreSQL client for `pgswift top` and `pgswift upgrade`: connect over TCP or a Unix
// socket, log in (trust, cleartext, md5, SCRAM-SHA-256 through `BackendLoginMachine`), run simple queries.
import Glibc
import Shared

struct AdminClientError: Error, CustomStringConvertible, Equatable {
    var description: String
    init(_ d: String) { description = d }
}

/// One result set of a simple query: column names and text rows (NULL as nil).
struct AdminResultSet: Equatable {
    var columns: [String] = []
    var rows: [[String?]] = []

    /// The value of column `name` in `row`; nil when the column is absent or NULL.
    func value(_ row: [String?], _ name: String) -> String? {
        guard let i = columns.firstIndex(of: name), i < row.count else { return nil }
        return row[i]
    }
}

/// Where and as whom to connect, as psql takes it.
struct AdminTarget: Equatable {
    var host: String
    var port: Int
    var user: String
    var database: String
    /// Set: this Unix socket, whatever `host` says (`pgswift upgrade` takes it from the configuration).
    var socketPath: String? = nil

    /// `socketPath`, or with `host` a directory (starting with "/"): the Unix socket `<host>/.s.PGSQL.<port>`.
    var unixSocketPath: String? {
        socketPath ?? (host.hasPrefix("/") ? host + "/.s.PGSQL.\(port)" : nil)
    }
}

final class AdminClient {
    let target: AdminTarget
    /// The StartupMessage's application_name.
    let applicationName: String
    private(set) var fd: Int32 = -1
    private var input: [UInt8] = []
    /// Answer wait bound per read.
    let timeoutMillis: Int32

    init(target: AdminTarget, applicationName: String = "pgswift top", timeoutMillis: Int32 = 10_000) {
        self.target = target
        self.applicationName = applicationName
        self.timeoutMillis = timeoutMillis
    }

    deinit { disconnect() }

    func disconnect() {
        guard fd >= 0 else { return }
        var out = OutBuffer(capacity: 8)
        out.appendEmptyMessage(FrontendType.terminate)
        try? sendAll(out)
        out.deallocate()
        Posix.close(fd)
        fd = -1
    }

    /// Connects and logs in; `password` is asked for only if the server wants one (it may throw to refuse).
    /// A failure to reach the server leaves `fd` negative.
    func connect(password: () throws(AdminClientError) -> String?) throws(AdminClientError) {
        let addresses: [SocketAddress]
        if let path = target.unixSocketPath {
            guard let a = SocketAddress.unix(path: path) else { throw AdminClientError("bad socket path \(path)") }
            addresses = [a]
        } else if let a = SocketAddress.numeric(host: target.host, port: target.port) {
            addresses = [a]
        } else {
            do throws(SyscallError) {
                addresses = try SocketAddress.resolve(host: target.host, port: target.port)
            } catch {
                throw AdminClientError("cannot resolve \(target.host): \(error)")
            }
        }
        var lastError = "no address"
        for a in addresses {
            do throws(AdminClientError) {
                try dial(a)
                lastError = ""
                break
            } catch {
                lastError = error.description
            }
        }
        if fd < 0 { throw AdminClientError(lastError) }
        var out = OutBuffer(capacity: 256)
        defer { out.deallocate() }
        Frontend.startupMessage(into: &out, parameters: [("user", target.user), ("database", target.database),
                                                         ("application_name", applicationName)])
        try sendAll(out)
        var login: BackendLoginMachine? = nil
        while true {
            let (type, body) = try readMessage()
            switch type {
            case BackendType.authentication:
                guard let req = body.withUnsafeBytes({ AuthenticationRequest.parse($0) }) else {
                    throw AdminClientError("invalid authentication request")
                }
                if login == nil {
                    var secret: PasswordSecret? = nil
                    if req != .ok, let p = try password() { secret = .plain(p) }
                    login = BackendLoginMachine(user: target.user, secret: secret)
                }
                let action = login!.authenticationRequestReceived(req)
                if case .fail(let f) = action { throw AdminClientError(f.errorFields.message) }
                out.clear()
                if action.encode(into: &out) { try sendAll(out) }
            case BackendType.errorResponse:
                throw AdminClientError(body.withUnsafeBytes { ErrorFields.parse($0)?.message } ?? "login failed")
            case BackendType.readyForQuery:
                return
            default:
                break  // ParameterStatus, BackendKeyData, NoticeResponse
            }
        }
    }

    /// A simple query; the last result set it returned (SHOW gives one). An ErrorResponse is thrown.
    func query(_ sql: String) throws(AdminClientError) -> AdminResultSet {
        var out = OutBuffer(capacity: 64 + sql.utf8.count)
        defer { out.deallocate() }
        Frontend.query(into: &out, sql: sql)
        try sendAll(out)
        var result = AdminResultSet()
        var error: String?
        while true {
            let (type, body) = try readMessage()
            switch type {
            case BackendType.rowDescription:
                result = AdminResultSet()
                result.columns = body.withUnsafeBytes { Decode.rowDescription($0) }?.map(\.name) ?? []
            case BackendType.dataRow:
                if let row = body.withUnsafeBytes({ Decode.dataRowText($0) }) { result.rows.append(row) }
            case BackendType.errorResponse:
                error = body.withUnsafeBytes { ErrorFields.parse($0)?.message } ?? "error"
            case BackendType.readyForQuery:
                if let error { throw AdminClientError(error) }
                return result
            default:
                break
            }
        }
    }

    // MARK: I/O

    private func dial(_ address: SocketAddress) throws(AdminClientError) {
        let where_ = target.unixSocketPath ?? "\(target.host):\(target.port)"
        let connected: Bool
        do throws(SyscallError) {
            (fd, connected) = try Sockets.connect(address)
        } catch {
            throw AdminClientError("cannot connect to \(where_): \(error)")
        }
        if !connected {
            try wait(Int16(POLLOUT))
            if let e = Sockets.pendingError(fd) {
                Posix.close(fd)
                fd = -1
                throw AdminClientError("cannot connect to \(where_): \(e)")
            }
        }
    }

    private func wait(_ events: Int16) throws(AdminClientError) {
        let ready: Bool
        do throws(SyscallError) {
            ready = try Posix.poll(fd, events: events, timeoutMillis: timeoutMillis)
        } catch {
            throw AdminClientError("poll: \(error.errno)")
        }
        if !ready { throw AdminClientError("no answer within \(timeoutMillis / 1000) s") }
    }

    private func sendAll(_ out: OutBuffer) throws(AdminClientError) {
        let bytes = out.bytes
        var sent = 0
        while sent < bytes.count {
            let fd = self.fd
            let attempt: Result<IOResult, SyscallError> = bytes.withUnsafeBytes { raw in
                do throws(SyscallError) {
                    return .success(try Posix.send(fd, raw.baseAddress! + sent, raw.count - sent))
                } catch {
                    return .failure(error)
                }
            }
            guard case .success(let r) = attempt else { throw AdminClientError("write failed: connection lost") }
            switch r {
            case .processed(let n): sent += n
            case .wouldBlock: try wait(Int16(POLLOUT))
            }
        }
    }

    /// The next whole message: its type and body.
    private func readMessage() throws(AdminClientError) -> (UInt8, [UInt8]) {
        while true {
            if input.count >= 5 {
                let len = Int(UInt32(input[1]) << 24 | UInt32(input[2]) << 16 | UInt32(input[3]) << 8 | UInt32(input[4]))
                guard len >= 4, len < 64 << 20 else { throw AdminClientError("bad message from the server") }
                if input.count >= len + 1 {
                    let type = input[0]
                    let body = Array(input[5..<(len + 1)])
                    input.removeFirst(len + 1)
                    return (type, body)
                }
            }
            try wait(Int16(POLLIN))
            var chunk = [UInt8](repeating: 0, count: 16384)
            let fd = self.fd
            let attempt: Result<IOResult, SyscallError> = chunk.withUnsafeMutableBytes { raw in
                do throws(SyscallError) {
                    return .success(try Posix.read(fd, raw.baseAddress!, raw.count))
                } catch {
                    return .failure(error)
                }
            }
            guard case .success(let r) = attempt else { throw AdminClientError("read failed: connection lost") }
            switch r {
            case .processed(0): throw AdminClientError("the server closed the connection")
            case .processed(let n): input += chunk[0..<n]
            case .wouldBlock: continue
            }
        }
    }
}

// `pgswift upgrade -c CONFIG`: sends UPGRADE to the running service over its admin Unix socket and
// prints the answer, one line per worker slot. Blocking I/O: this is a short-lived command, not the loop.
import Glibc
import Shared

enum UpgradeCLI {
    /// How long to wait for the answer: every slot may take up to the new worker's ready timeout.
    static let timeoutMillis: Int32 = 600_000

    static func run(configPath: String) -> Int32 {
        guard let config = SupervisorMain.loadConfig(configPath, report: {
            SupervisorMain.writeStderr("pgswift upgrade: \($0)\n")
        }) else { return 1 }
        guard let path = Listeners.unixSocketPath(directory: config.unixSocketDir, port: config.listenPort),
              let address = SocketAddress.unix(path: path) else {
            SupervisorMain.writeStderr("pgswift upgrade: the admin console is reached over the Unix socket: set unix_socket_dir\n")
            return 1
        }
        var conversation = Conversation(path: path)
        do throws(CLIError) {
            try conversation.connect(address)
            defer { Posix.close(conversation.fd) }
            // As root or as pgswift's own user, the Unix socket gets the console without a password.
            var out = OutBuffer(capacity: 128)
            Frontend.startupMessage(into: &out, parameters: [("user", "pgbouncer"), ("database", "pgbouncer"),
                                                             ("application_name", "pgswift upgrade")])
            try conversation.send(out)
            try conversation.readUntilReady(rows: nil)
            out.clear()
            Frontend.query(into: &out, sql: "UPGRADE")
            try conversation.send(out)
            var rows: [[String]] = []
            try conversation.readUntilReady(rows: &rows)
            print("slot  old pid  new pid  result")
            var allOK = true
            for r in rows where r.count == 4 {
                print("\(r[0].padding(4))  \(r[1].padding(7))  \(r[2].padding(7))  \(r[3])")
                if !r[3].hasPrefix("ok") { allOK = false }
            }
            return allOK && !rows.isEmpty ? 0 : 1
        } catch {
            SupervisorMain.writeStderr("pgswift upgrade: \(error)\n")
            return 1
        }
    }

    struct CLIError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    /// One connection to the admin console, speaking just enough of the protocol.
    struct Conversation {
        let path: String
        var fd: Int32 = -1
        var input: [UInt8] = []

        init(path: String) { self.path = path }

        mutating func connect(_ address: SocketAddress) throws(CLIError) {
            let connected: Bool
            do throws(SyscallError) {
                (fd, connected) = try Sockets.connect(address)
            } catch {
                throw CLIError("cannot connect to \(path): \(error) (is pgswift running?)")
            }
            if !connected {
                try wait(POLLOUT)
                if let e = Sockets.pendingError(fd) { throw CLIError("cannot connect to \(path): \(e)") }
            }
        }

        func wait(_ events: Int32) throws(CLIError) {
            let ready: Bool
            do throws(SyscallError) {
                ready = try Posix.poll(fd, events: Int16(events), timeoutMillis: UpgradeCLI.timeoutMillis)
            } catch {
                throw CLIError("poll: \(error.errno)")
            }
            if !ready { throw CLIError("no answer from \(path) within \(UpgradeCLI.timeoutMillis / 1000) s") }
        }

        func send(_ out: OutBuffer) throws(CLIError) {
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
                guard case .success(let r) = attempt else { throw CLIError("write to \(path) failed") }
                switch r {
                case .processed(let n): sent += n
                case .wouldBlock: try wait(POLLOUT)
                }
            }
        }

        /// Reads messages up to ReadyForQuery, collecting DataRows; an ErrorResponse is thrown.
        mutating func readUntilReady(rows: UnsafeMutablePointer<[[String]]>?) throws(CLIError) {
            var error: String?
            while true {
                while input.count >= 5 {
                    let type = input[0]
                    let len = Int(UInt32(input[1]) << 24 | UInt32(input[2]) << 16 | UInt32(input[3]) << 8 | UInt32(input[4]))
                    guard len >= 4, len < 64 << 20 else { throw CLIError("bad message from the server") }
                    guard input.count >= len + 1 else { break }
                    let body = Array(input[5..<(len + 1)])
                    input.removeFirst(len + 1)
                    switch type {
                    case UInt8(ascii: "R"):
                        if body.count >= 4 && body[0..<4] != [0, 0, 0, 0] {
                            throw CLIError("the admin console asks for a password: run this as root or as the user pgswift runs as")
                        }
                    case UInt8(ascii: "E"):
                        error = body.withUnsafeBytes { ErrorFields.parse($0)?.message } ?? "error"
                    case UInt8(ascii: "D"):
                        rows?.pointee.append(Self.dataRow(body))
                    case UInt8(ascii: "Z"):
                        if let error { throw CLIError(error) }
                        return
                    default:
                        break
                    }
                }
                try wait(POLLIN)
                var chunk = [UInt8](repeating: 0, count: 8192)
                let fd = self.fd
                let attempt: Result<IOResult, SyscallError> = chunk.withUnsafeMutableBytes { raw in
                    do throws(SyscallError) {
                        return .success(try Posix.read(fd, raw.baseAddress!, raw.count))
                    } catch {
                        return .failure(error)
                    }
                }
                guard case .success(let r) = attempt else { throw CLIError("read from \(path) failed") }
                switch r {
                case .processed(0): throw CLIError("the server closed the connection")
                case .processed(let n): input += chunk[0..<n]
                case .wouldBlock: continue
                }
            }
        }

        static func dataRow(_ body: [UInt8]) -> [String] {
            var values: [String] = []
            guard body.count >= 2 else { return values }
            let n = Int(body[0]) << 8 | Int(body[1])
            var at = 2
            for _ in 0..<n {
                guard body.count - at >= 4 else { break }
                let len = Int32(bitPattern: UInt32(body[at]) << 24 | UInt32(body[at + 1]) << 16 | UInt32(body[at + 2]) << 8 | UInt32(body[at + 3]))
                at += 4
                if len < 0 { values.append(""); continue }
                guard body.count - at >= Int(len) else { break }
                values.append(String(decoding: body[at..<(at + Int(len))], as: UTF8.self))
                at += Int(len)
            }
            return values
        }
    }
}

private extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}

// Backends that never answer: one that accepts connections and says nothing, one whose SYNs go nowhere.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A Python process on a port of its own. `.accepting`: accepts every connection, answers an SSLRequest
/// `N` (no TLS) and nothing else, reads what it is sent, and logs each connection's start and end (whether it was the supervisor's health
/// check, and how long it lasted). `.blackhole`: listens with a backlog of 0 and fills that queue with a
/// connection of its own that it never accepts, so every later SYN is dropped and a connect stays in
/// SYN-SENT until the connecting side gives up (an unroutable address is no use here: the sandbox may
/// answer any address).
final class SilentBackend: @unchecked Sendable {
    enum Mode: String { case accepting, blackhole }

    /// One connection that ended: the client's port, whether it came from pgswift's health check (its
    /// startup packet names the application "pgswift health check"), and its duration in seconds.
    struct Session: CustomStringConvertible {
        var peerPort: Int
        var healthCheck: Bool
        var seconds: Double
        var description: String { "\(healthCheck ? "health check" : "worker") :\(peerPort) \(String(format: "%.2f", seconds)) s" }
    }

    let port: Int
    let mode: Mode
    let process: ChildProcess
    let dir: String

    static let script = """
        import socket, sys, threading, time
        mode, port, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        lock = threading.Lock()

        def note(line):
            with lock:
                with open(log_path, "a") as f:
                    f.write(line + "\\n")

        if mode == "blackhole":
            srv.listen(0)
            filler = socket.create_connection(("127.0.0.1", port))
            print("ready", flush=True)
            while True:
                time.sleep(3600)

        ssl_request = bytes([0, 0, 0, 8, 4, 210, 22, 47])
        def serve(conn, peer):
            start, data = time.monotonic(), b""
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                data += chunk
                if data == ssl_request:
                    # A PostgreSQL without TLS: "N", then the startup packet (which it never answers).
                    conn.sendall(b"N")
                    data = b""
            kind = "health" if b"pgswift health check" in data else "other"
            note("closed %d %s %.3f" % (peer[1], kind, time.monotonic() - start))
            conn.close()

        srv.listen(64)
        print("ready", flush=True)
        while True:
            conn, peer = srv.accept()
            threading.Thread(target=serve, args=(conn, peer), daemon=True).start()
        """

    init(_ mode: Mode) throws {
        self.mode = mode
        dir = try makeTempDirectory(prefix: "silent")
        port = try freePort()
        try Self.script.write(toFile: dir + "/silent.py", atomically: false, encoding: .utf8)
        process = try ChildProcess.spawn(["python3", dir + "/silent.py", mode.rawValue, String(port), dir + "/sessions"],
                                         stdoutPath: dir + "/out", stderrPath: dir + "/err")
        guard waitUntil(timeout: 10, { readTextFile(dir + "/out").contains("ready") }) else {
            throw E2EError("silent backend (\(mode)) did not start: \(readTextFile(dir + "/err"))")
        }
    }

    /// The connections that ended so far (`.accepting` only), in the order they ended.
    func sessions() -> [Session] {
        readTextFile(dir + "/sessions").split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count == 4, let peer = Int(f[1]), let seconds = Double(f[3]) else { return nil }
            return Session(peerPort: peer, healthCheck: f[2] == "health", seconds: seconds)
        }
    }

    func stop() {
        _ = process.terminate(SIGTERM, grace: 5)
        try? FileManager.default.removeItem(atPath: dir)
    }
}

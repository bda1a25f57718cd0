// The driver's few system calls: non-blocking Unix-socket connects, send/recv, poll, the clock.
#if canImport(Glibc)
import Glibc
#endif

enum Net {
    enum ConnectResult { case connected(Int32), busy, failed(Int32) }

    /// A non-blocking connect to a Unix stream socket. `busy` means the listen backlog is full (EAGAIN):
    /// try again later.
    static func connectUnix(_ path: String) -> ConnectResult {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { return .failed(errno) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.prefix(raw.count - 1).enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc == 0 { return .connected(fd) }
        let e = errno
        if e == EINPROGRESS { return .connected(fd) }
        close(fd)
        if e == EAGAIN { return .busy }
        return .failed(e)
    }

    enum IO { case done(Int), wouldBlock, closed(Int32) }

    static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> IO {
        while true {
            let n = Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if n >= 0 { return .done(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .closed(e)
        }
    }

    /// `.done(0)` is end of file.
    static func recv(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) -> IO {
        while true {
            let n = Glibc.recv(fd, buf.baseAddress, buf.count, 0)
            if n >= 0 { return .done(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .closed(e)
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func errorText(_ e: Int32) -> String { String(cString: strerror(e)) }

    static func writeFile(_ path: String, _ bytes: [UInt8]) {
        guard let f = fopen(path, "wb") else { return }
        _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
        fclose(f)
    }

    static func appendLine(_ path: String, _ line: String) {
        guard let f = fopen(path, "a") else { return }
        fputs(line + "\n", f)
        fclose(f)
    }

    static func readFile(_ path: String) -> [UInt8]? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        return out
    }

    static func makeDir(_ path: String) { mkdir(path, 0o755) }

    /// A line on stderr (fd 2: the C `stderr` global is not concurrency-safe in Swift 6).
    static func eprint(_ s: String) {
        let line = Array((s + "\n").utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}

func format1(_ x: Double) -> String {
    let t = Int((x * 10).rounded())
    return "\(t / 10).\(t % 10)"
}

// The few file-system calls the supervisor needs that the Posix layer does not wrap (pidfile, cwd, stderr).
import Glibc
import Shared

enum Files {
    /// Up to `limit` bytes of a small file, or nil if it cannot be read.
    static func readSmall(_ path: String, limit: Int = 4096) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
        defer { Posix.close(fd) }
        var out = [UInt8](repeating: 0, count: limit)
        var used = 0
        while used < limit {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + used, limit - used) }
            if n < 0 && Errno.current == .interrupted { continue }
            if n <= 0 { break }
            used += n
        }
        out.removeSubrange(used...)
        return out
    }

    /// Creates or truncates `path` with `contents`; throws with the failing call and errno.
    static func write(_ path: String, _ contents: String, mode: mode_t = 0o644) throws(SyscallError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        if fd < 0 { throw SyscallError("open(\(path))", .current) }
        defer { Posix.close(fd) }
        var text = contents
        let ok = text.withUTF8 { Posix.writeAll(fd, UnsafeRawBufferPointer($0)) }
        if !ok { throw SyscallError("write(\(path))", .current) }
    }

    static func remove(_ path: String) {
        _ = unlink(path)
    }

    static func currentDirectory() -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buf, buf.count) != nil else { return nil }
        return String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Points fd 2 at /dev/null (-q); workers inherit it, so they are quiet too.
    static func silenceStderr() {
        let fd = open("/dev/null", O_WRONLY | O_CLOEXEC)
        if fd < 0 { return }
        _ = dup2(fd, 2)
        Posix.close(fd)
    }

    /// True if `pid` names a live process (one we may not signal counts as live).
    static func processExists(_ pid: Int32) -> Bool {
        if pid <= 0 { return false }
        do throws(SyscallError) {
            try Posix.kill(pid, 0)
            return true
        } catch {
            return error.errno == .init(rawValue: EPERM)
        }
    }
}

/// The pidfile: refuse to start over a live process, write ours, remove it at exit.
enum PidFile {
    /// The pid recorded in `path` if that process is alive (and is not us), else nil.
    static func livePID(at path: String) -> Int32? {
        guard let pid = recordedPID(at: path) else { return nil }
        return Files.processExists(pid) ? pid : nil
    }

    /// The pid recorded in `path` (not us), alive or not; nil when there is none.
    static func recordedPID(at path: String) -> Int32? {
        guard let bytes = Files.readSmall(path, limit: 64) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace }
        guard let pid = Int32(text), pid > 0, pid != Posix.getpid() else { return nil }
        return pid
    }

    static func write(_ path: String) throws(SyscallError) {
        try Files.write(path, "\(Posix.getpid())\n")
    }

    /// Removes the pidfile if it still names this process (another instance may own it by now).
    static func remove(_ path: String) {
        guard let bytes = Files.readSmall(path, limit: 64) else { return }
        let text = String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace }
        if Int32(text) == Posix.getpid() { Files.remove(path) }
    }
}

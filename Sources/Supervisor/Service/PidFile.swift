// The pidfile: refuse to start over a live process, write ours, remove it at exit (file calls in Shared's Files).
import Shared

enum PidFile {
    /// The pid recorded in `path` if that process is alive (and is not us), else nil.
    static func livePID(at path: String) -> Int32? {
        guard let pid = recordedPID(at: path) else { return nil }
        return Posix.processExists(pid) ? pid : nil
    }

    /// The pid recorded in `path` (not us), alive or not; nil when there is none.
    static func recordedPID(at path: String) -> Int32? {
        guard let bytes = try? Files.readContents(path, limit: 64) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace }
        guard let pid = Int32(text), pid > 0, pid != Posix.getpid() else { return nil }
        return pid
    }

    static func write(_ path: String) throws(SyscallError) {
        try Files.write(path, "\(Posix.getpid())\n")
    }

    /// Removes the pidfile if it still names this process (another instance may own it by now).
    static func remove(_ path: String) {
        guard let bytes = try? Files.readContents(path, limit: 64) else { return }
        let text = String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace }
        if Int32(text) == Posix.getpid() { Files.remove(path) }
    }
}

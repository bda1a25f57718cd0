// Reading /proc: process state, children of a process, and which process owns a TCP connection.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum ProcFS {
    /// Fields of /proc/<pid>/stat after the command name: [0] = state, [1] = ppid.
    static func statFields(_ pid: pid_t) -> [Substring]? {
        let text = readTextFile("/proc/\(pid)/stat")
        // The command name is in parentheses and may itself hold spaces or parentheses.
        guard let close = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: close)...].split(separator: " ")
    }

    /// True while the process exists and is not a zombie.
    static func isAlive(_ pid: pid_t) -> Bool {
        guard let f = statFields(pid), let state = f.first else { return false }
        return state != "Z" && state != "X"
    }

    static func parent(of pid: pid_t) -> pid_t? {
        guard let f = statFields(pid), f.count > 1 else { return nil }
        return pid_t(f[1])
    }

    /// Live (non-zombie) children, from /proc/<pid>/task/*/children, else by scanning every ppid.
    static func children(of pid: pid_t) -> [pid_t] {
        let fm = FileManager.default
        var kids: [pid_t] = []
        var sawChildrenFile = false
        let tasks = (try? fm.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        for task in tasks {
            let path = "/proc/\(pid)/task/\(task)/children"
            guard fm.fileExists(atPath: path) else { continue }
            sawChildrenFile = true
            kids += readTextFile(path).split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        if !sawChildrenFile {
            let all = ((try? fm.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
            kids = all.filter { parent(of: $0) == pid }
        }
        return Array(Set(kids.filter(isAlive))).sorted()
    }

    /// Inodes of the sockets among the process's open files.
    static func socketInodes(of pid: pid_t) -> Set<UInt64> {
        let fm = FileManager.default
        var inodes = Set<UInt64>()
        for fd in (try? fm.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? [] {
            guard let target = try? fm.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                  target.hasPrefix("socket:["), target.hasSuffix("]") else { continue }
            if let inode = UInt64(target.dropFirst(8).dropLast()) { inodes.insert(inode) }
        }
        return inodes
    }

    struct TCPSocket {
        let localPort: Int
        let remotePort: Int
        let inode: UInt64
    }

    /// Every TCP socket of this network namespace (IPv4 and IPv6).
    static func tcpSockets() -> [TCPSocket] {
        var result: [TCPSocket] = []
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            for line in readTextFile(file).split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ")
                guard f.count > 9,
                      let lp = f[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) }),
                      let rp = f[2].split(separator: ":").last.flatMap({ Int($0, radix: 16) }),
                      let inode = UInt64(f[9]) else { continue }
                result.append(TCPSocket(localPort: lp, remotePort: rp, inode: inode))
            }
        }
        return result
    }

    /// Which of `candidates` holds the accepted end (local port `serverPort`) of the connection a
    /// client made from local port `clientPort`; nil if none does.
    static func owner(ofConnectionFrom clientPort: Int, to serverPort: Int, among candidates: [pid_t]) -> pid_t? {
        let inodes = Set(tcpSockets()
            .filter { $0.localPort == serverPort && $0.remotePort == clientPort && $0.inode != 0 }
            .map(\.inode))
        guard !inodes.isEmpty else { return nil }
        return candidates.first { !socketInodes(of: $0).isDisjoint(with: inodes) }
    }
}

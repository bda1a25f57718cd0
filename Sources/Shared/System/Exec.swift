// Replacing or ending the running image (the supervisor's binary upgrade, exit) and the environment it passes on.
import Glibc

extension Posix {
    /// execv(2): replaces this process's image with `path`, keeping its PID, its descriptors without
    /// FD_CLOEXEC, its signal mask and its environment. Returns only on failure, with the reason.
    public static func exec(path: String, arguments: [String]) -> Errno {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        _ = argv.withUnsafeBufferPointer { execv(path, $0.baseAddress!) }
        return .current
    }

    /// exit(3): runs atexit handlers and flushes stdio, then ends the process with `code`.
    public static func exit(_ code: Int32) -> Never {
        Glibc.exit(code)
    }

    public static func setenv(_ name: String, _ value: String) {
        _ = Glibc.setenv(name, value, 1)
    }

    public static func unsetenv(_ name: String) {
        _ = Glibc.unsetenv(name)
    }
}

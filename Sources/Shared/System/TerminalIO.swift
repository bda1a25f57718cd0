// The controlling terminal for `pgswift top`: raw mode (no echo, no line buffering, no signals from
// keys), its size, one key with a timeout, a password read without echo. Wrapped here as every syscall is.
import Glibc

public final class RawTerminal {
    private let fd: Int32
    private var saved = termios()
    private var active = false

    private init(fd: Int32) { self.fd = fd }

    /// Standard input in raw mode, when both it and standard output are terminals; nil otherwise.
    public static func enter() -> RawTerminal? {
        guard isatty(0) == 1, isatty(1) == 1 else { return nil }
        let t = RawTerminal(fd: 0)
        guard tcgetattr(0, &t.saved) == 0 else { return nil }
        var raw = t.saved
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL)
        guard tcsetattr(0, TCSANOW, &raw) == 0 else { return nil }
        t.active = true
        return t
    }

    /// Puts the terminal's settings back (once).
    public func leave() {
        guard active else { return }
        active = false
        _ = tcsetattr(fd, TCSANOW, &saved)
    }

    deinit { leave() }

    /// Rows and columns of standard output's terminal (24 × 80 when it does not say).
    public func size() -> (rows: Int, cols: Int) {
        var w = winsize()
        if ioctl(1, UInt(TIOCGWINSZ), &w) == 0 && w.ws_row > 0 && w.ws_col > 0 {
            return (Int(w.ws_row), Int(w.ws_col))
        }
        return (24, 80)
    }

    /// A byte typed within the timeout, else nil; end of input reads as 4 (Ctrl-D).
    public func readKey(timeoutMillis: Int32) -> UInt8? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let r = Glibc.poll(&p, 1, max(0, timeoutMillis))
        guard r == 1 else { return nil }
        var b: UInt8 = 0
        let n = Glibc.read(fd, &b, 1)
        if n == 0 { return 4 }
        return n == 1 ? b : nil
    }

    /// A line typed on /dev/tty with echo off, after `prompt`; nil without a controlling terminal.
    public static func askPassword(_ prompt: String) -> String? {
        let fd = Glibc.open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var saved = termios()
        let isTerminal = tcgetattr(fd, &saved) == 0
        if isTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            _ = tcsetattr(fd, TCSANOW, &quiet)
        }
        _ = Array(prompt.utf8).withUnsafeBytes { Posix.writeAll(fd, $0) }
        var line: [UInt8] = []
        var b: UInt8 = 0
        while Glibc.read(fd, &b, 1) == 1 && b != 10 && b != 13 { line.append(b) }
        if isTerminal { _ = tcsetattr(fd, TCSANOW, &saved) }
        _ = Array("\n".utf8).withUnsafeBytes { Posix.writeAll(fd, $0) }
        return String(decoding: line, as: UTF8.self)
    }
}

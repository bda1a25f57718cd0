// epoll: one selector per process; user data carries (generation, index) packed by the caller.
import Glibc
import CLinux

public struct EpollEvents: OptionSet, Sendable {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let input = EpollEvents(rawValue: cl_EPOLLIN())
    public static let output = EpollEvents(rawValue: cl_EPOLLOUT())
    public static let error = EpollEvents(rawValue: cl_EPOLLERR())
    public static let hangup = EpollEvents(rawValue: cl_EPOLLHUP())
    public static let readHangup = EpollEvents(rawValue: cl_EPOLLRDHUP())
    public static let edgeTriggered = EpollEvents(rawValue: cl_EPOLLET())
    public static let exclusive = EpollEvents(rawValue: cl_EPOLLEXCLUSIVE())
}

/// An epoll instance plus its reusable event array.
public struct Epoll: ~Copyable {
    public let fd: Int32
    @usableFromInline let events: UnsafeMutablePointer<epoll_event>
    public let capacity: Int

    public init(capacity: Int = 256) throws(SyscallError) {
        let fd = epoll_create1(Int32(cl_O_CLOEXEC()))
        if fd < 0 { throw SyscallError("epoll_create1", .current) }
        self.fd = fd
        self.capacity = capacity
        self.events = .allocate(capacity: capacity)
    }

    deinit {
        events.deallocate()
        Posix.close(fd)
    }

    public func add(_ target: Int32, events: EpollEvents, data: UInt64) throws(SyscallError) {
        var ev = epoll_event()
        cl_epoll_event_set(&ev, events.rawValue, data)
        if epoll_ctl(fd, EPOLL_CTL_ADD, target, &ev) < 0 { throw SyscallError("epoll_ctl(ADD)", .current) }
    }

    public func modify(_ target: Int32, events: EpollEvents, data: UInt64) throws(SyscallError) {
        var ev = epoll_event()
        cl_epoll_event_set(&ev, events.rawValue, data)
        if epoll_ctl(fd, EPOLL_CTL_MOD, target, &ev) < 0 { throw SyscallError("epoll_ctl(MOD)", .current) }
    }

    /// Removing is optional before close(); it matters only for fds that stay open (dup'ed, passed on).
    public func remove(_ target: Int32) {
        var ev = epoll_event()
        _ = epoll_ctl(fd, EPOLL_CTL_DEL, target, &ev)
    }

    /// Waits up to `timeoutMillis` (-1 forever). Returns how many events are ready.
    @inlinable
    public func wait(timeoutMillis: Int32) throws(SyscallError) -> Int {
        while true {
            let n = epoll_wait(fd, events, Int32(capacity), timeoutMillis)
            if n >= 0 { return Int(n) }
            let e = Errno.current
            if e == .interrupted { return 0 }
            throw SyscallError("epoll_wait", e)
        }
    }

    @inlinable
    public func event(_ i: Int) -> (events: UInt32, data: UInt64) {
        let p = events + i
        return (cl_epoll_event_events(p), cl_epoll_event_data(p))
    }
}

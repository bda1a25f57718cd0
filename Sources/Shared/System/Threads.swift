// Detached threads for blocking work kept off an event loop (the supervisor's getaddrinfo lookups).
import Glibc

public enum Threads {
    /// Starts a detached thread running `body`; false when no thread could be created.
    public static func startDetached(_ body: @escaping @Sendable () -> Void) -> Bool {
        let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<ThreadBody>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, context)
        if rc != 0 {
            Unmanaged<ThreadBody>.fromOpaque(context).release()
            return false
        }
        pthread_detach(tid)
        return true
    }
}

/// The closure a new thread runs, boxed to cross pthread_create's void pointer.
private final class ThreadBody: Sendable {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}

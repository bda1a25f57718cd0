// Pools' welcome parameters shared between workers: the first worker whose server logs in to a pool
// reports the ParameterStatus set it got (`welcomeFromWorker`); the supervisor keeps it and passes it
// to the other workers (`welcomeToWorker`), so that a worker whose pool has no server yet answers a
// login at once, as PgBouncer's one process does once any server of the pool has logged in, instead of
// holding the login until a server of its own can log in (which service-wide limits may forbid for
// as long as another worker holds every place: max_user_connections = 1).
import Shared

/// The welcome of each pool some worker reported, bounded (oldest first out).
struct SharedWelcomes {
    static let capacity = 10_000
    private(set) var byPool: [String: (database: String, user: String, parameters: [String])] = [:]
    private var order: [String] = []
    private var head = 0

    /// Records a pool's welcome; false if it was already known with the same parameters.
    mutating func record(database: String, user: String, parameters: [String]) -> Bool {
        let key = database + "\u{0}" + user
        if let known = byPool[key] {
            if known.parameters == parameters { return false }
            byPool[key] = (database, user, parameters)
            return true
        }
        byPool[key] = (database, user, parameters)
        order.append(key)
        if order.count - head > Self.capacity {
            byPool[order[head]] = nil
            head += 1
            if head > Self.capacity { order.removeFirst(head); head = 0 }
        }
        return true
    }
}

extension Supervisor {
    /// A worker's pool learnt its welcome: kept, and passed to every other worker that reads it.
    func welcomeLearnt(database: String, user: String, parameters: [String], from source: WorkerSlot) {
        guard welcomes.record(database: database, user: user, parameters: parameters) else { return }
        relay(.welcomeToWorker(database: database, user: user, parameters: parameters),
              from: source, toWorkersWith: WorkerFeatures.sharedWelcome)
    }

    /// A worker that just became ready gets every welcome known so far.
    func sendWelcomes(to slot: WorkerSlot) {
        guard slot.features & WorkerFeatures.sharedWelcome != 0 else { return }
        for (_, w) in welcomes.byPool {
            _ = slot.send(.welcomeToWorker(database: w.database, user: w.user, parameters: w.parameters))
        }
    }
}

// Welcome parameters shared between workers (Supervisor/Workers/SharedWelcomes.swift): a pool whose
// first server logged in here reports what it learnt; a pool of this worker with no server yet answers
// logins with what another worker learnt, as PgBouncer's single process does once any server of the
// pool has logged in, instead of holding each login until a server of its own can log in.
import Shared

extension Worker {
    /// Pool `p`'s welcome came from its first server here: the supervisor passes it to the other workers.
    func reportWelcome(_ p: Int) {
        guard let welcome = pools[p].welcome else { return }
        var flat: [String] = []
        flat.reserveCapacity(welcome.count * 2)
        for (name, value) in welcome {
            flat.append(name)
            flat.append(value)
        }
        sendControl(.welcomeFromWorker(database: pools[p].database, user: pools[p].user, parameters: flat))
    }

    /// Another worker's pool learnt its welcome: kept for when this worker opens the pool, and given at
    /// once to this worker's pool if it has none yet (its waiting logins finish).
    func sharedWelcomeArrived(database: String, user: String, parameters: [String]) {
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(parameters.count / 2)
        var i = 0
        while i + 1 < parameters.count {
            pairs.append((parameters[i], parameters[i + 1]))
            i += 2
        }
        // Bounded as the supervisor's set is (it forwards each pool's once, or again when it changes).
        if sharedWelcomes.count >= Worker.sharedWelcomeCapacity { sharedWelcomes.removeAll() }
        let key = database + "\u{0}" + user
        sharedWelcomes[key] = pairs
        if let p = poolIndex[key] { adoptSharedWelcome(Int(p)) }
    }

    /// Gives pool `p` the welcome another worker reported when it has none; true if it has one now.
    @discardableResult
    func adoptSharedWelcome(_ p: Int) -> Bool {
        if pools[p].welcome != nil { return true }
        guard let pairs = sharedWelcomes[pools[p].database + "\u{0}" + pools[p].user] else { return false }
        setWelcome(p, pairs)
        finishWelcomeWaits(p)
        return true
    }

    /// The pool now knows its welcome: clients that authenticated before get their login answer.
    func finishWelcomeWaits(_ p: Int) {
        var ci: Int32 = 0
        let cap = Int32(clients.capacity)
        while ci < cap {
            if clients[ci].state == .waitWelcome && clients[ci].pool == Int32(p) { finishLogin(ci) }
            ci += 1
        }
    }
}

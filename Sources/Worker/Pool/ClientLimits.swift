// max_db_client_connections and max_user_client_connections: client connections per database and
// per user for the whole service, counted in the name table of the shared client-count file
// (Shared/System/ClientCounter.swift), or per worker when the supervisor could not make one.
import Shared

extension Worker {
    /// PgBouncer's error for a full database or user (FATAL 08P01, its default pooler-error code).
    static func clientLimitMessage(_ key: String) -> String { "client connections exceeded (\(key))" }

    /// Once the client has authenticated (its database known, or the admin console): counts it for its
    /// database and its user (the name it logged in as) when a limit applies to them. Returns the
    /// refusal, with nothing counted, when one of them is full; `exempt` (an admin_users member on the
    /// admin console, as in PgBouncer) is counted but never refused. `entry`: the client's database
    /// entry (nil: the admin console).
    func admitToClientLimits(_ ci: Int32, entry: DatabaseEntry?, exempt: Bool) -> String? {
        guard let info = clients[ci].info else { return nil }
        let dbLimit = config.effectiveMaxDBClientConnections(database: entry)
        if dbLimit > 0 {
            let key = ClientCounter.nameKey(kind: "d", info.database)
            guard takeClientPlace(key, limit: exempt ? 0 : dbLimit) else {
                return Worker.clientLimitMessage("max_db_client_connections")
            }
            info.countedDB = key
        }
        let userLimit = config.effectiveMaxUserClientConnections(user: info.user)
        if userLimit > 0 {
            let key = ClientCounter.nameKey(kind: "u", info.user)
            guard takeClientPlace(key, limit: exempt ? 0 : userLimit) else {
                giveBackClientPlaces(info)
                return Worker.clientLimitMessage("max_user_client_connections")
            }
            info.countedUser = key
        }
        return nil
    }

    /// A client adopted in a rolling restart: counted under today's limits without a check (the
    /// predecessor gave its places back as it handed the client over).
    func adoptClientLimits(_ info: ClientInfo, entry: DatabaseEntry?) {
        if config.effectiveMaxDBClientConnections(database: entry) > 0 {
            let key = ClientCounter.nameKey(kind: "d", info.database)
            if takeClientPlace(key, limit: 0) { info.countedDB = key }
        }
        if config.effectiveMaxUserClientConnections(user: info.user) > 0 {
            let key = ClientCounter.nameKey(kind: "u", info.user)
            if takeClientPlace(key, limit: 0) { info.countedUser = key }
        }
    }

    /// freeClient's hook: the places the client was counted in.
    func giveBackClientPlaces(_ info: ClientInfo) {
        for key in [info.countedDB, info.countedUser] where key != 0 {
            if let c = limits.counter {
                if let e = c.nameEntry(key, claim: false) { c.release(entry: e, slot: limits.counterWord) }
            } else if let n = limits.localClientCounts[key] {
                limits.localClientCounts[key] = n > 1 ? n - 1 : nil
            }
        }
        info.countedDB = 0
        info.countedUser = 0
    }

    /// One place for the name `key` (limit 0: no check). A full name table counts nothing and admits,
    /// with a warning: a limit is not worth refusing everyone for.
    private func takeClientPlace(_ key: Int64, limit: Int) -> Bool {
        guard let c = limits.counter else {
            let n = limits.localClientCounts[key] ?? 0
            if limit > 0 && n >= limit { return false }
            limits.localClientCounts[key] = n + 1
            return true
        }
        guard let e = c.nameEntry(key, claim: true) else {
            if !limits.nameTableFullLogged {
                limits.nameTableFullLogged = true
                log.warning("the shared table of client counts is full (\(ClientCounter.nameCapacity) databases and users): "
                            + "max_db_client_connections / max_user_client_connections are not enforced for new names")
            }
            return true
        }
        return c.tryAcquire(entry: e, slot: limits.counterWord, limit: limit)
    }
}

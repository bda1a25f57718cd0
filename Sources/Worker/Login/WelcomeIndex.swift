// A pool's welcome parameters indexed by tracked parameter once, so logins and links compare no names.

extension Worker {
    /// Records the first server's ParameterStatus set and which entries are tracked parameters.
    /// finishLogin, expectedParamsKey and syncParameters used to look each name up as a string
    /// (lowercasing and ~100 string comparisons per login).
    func setWelcome(_ p: Int, _ reported: [(String, String)]) {
        pools[p].welcome = reported
        pools[p].welcomeTrackedValues = [String?](repeating: nil, count: tracked.names.count)
        pools[p].welcomeTrackedIndex = reported.map { entry in
            guard let t = tracked.index(of: entry.0) else { return -1 }
            // The first report of a name wins, as `first(where:)` did.
            if pools[p].welcomeTrackedValues[t] == nil { pools[p].welcomeTrackedValues[t] = entry.1 }
            return t
        }
    }

    /// The pool's welcome value of tracked parameter `t` (nil: not reported, or no welcome yet).
    @inline(__always)
    func welcomeValue(_ p: Int, _ t: Int) -> String? {
        t < pools[p].welcomeTrackedValues.count ? pools[p].welcomeTrackedValues[t] : nil
    }
}

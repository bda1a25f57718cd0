// Backend health: exponential backoff with full jitter, a per-host up/down state machine, and role facts.

/// Exponential backoff with "full jitter" (AWS architecture blog): the n-th retry waits a uniformly
/// random time in [0, min(cap, initial · 2ⁿ)], so many pollers that failed together spread out
/// instead of retrying in lockstep. `floor` bounds the wait from below (a worker's server_login_retry).
public struct Backoff: Sendable, Equatable {
    public var initialNanos: Int64
    public var maxNanos: Int64
    public var floorNanos: Int64
    /// Failures since the last success.
    public private(set) var failures = 0

    public init(initialNanos: Int64, maxNanos: Int64, floorNanos: Int64 = 0) {
        self.initialNanos = max(1_000_000, initialNanos)
        self.maxNanos = max(self.initialNanos, maxNanos)
        self.floorNanos = max(0, floorNanos)
    }

    /// The ceiling of the next wait: initial · 2^(failures-1), capped. 0 before any failure.
    public var currentCapNanos: Int64 {
        guard failures > 0 else { return 0 }
        var cap = initialNanos
        var n = failures - 1
        while n > 0 && cap < maxNanos {
            cap = cap > maxNanos / 2 ? maxNanos : cap * 2
            n -= 1
        }
        return min(cap, maxNanos)
    }

    /// Records one more failure; returns (cap, wait) where wait is uniform in [floor, max(floor, cap)].
    /// `random` is a uniform value in [0, 1) (injected so tests are deterministic).
    public mutating func fail(random: Double) -> (capNanos: Int64, waitNanos: Int64) {
        failures += 1
        let cap = currentCapNanos
        let r = min(max(random, 0), 1)
        var wait = Int64(Double(cap) * r)
        if wait < floorNanos { wait = floorNanos }
        // Never a zero wait: a host that refuses at once must not spin the loop.
        if wait < 10_000_000 { wait = min(10_000_000, max(cap, floorNanos)) }
        return (cap, wait)
    }

    public mutating func reset() { failures = 0 }
}

/// What the health check learnt about a host's role (for `target_session_attrs`).
public struct HostRole: Sendable, Equatable {
    /// `pg_is_in_recovery()`: a standby.
    public var inRecovery: Bool
    /// `transaction_read_only` of a fresh session (`default_transaction_read_only`, or a standby).
    public var readOnly: Bool

    public init(inRecovery: Bool, readOnly: Bool) {
        self.inRecovery = inRecovery
        self.readOnly = readOnly
    }
}

/// libpq's `target_session_attrs`, checked against what the health check saw.
public enum TargetSessionAttrs: String, Sendable, CaseIterable {
    case any
    case readWrite = "read-write"
    case readOnly = "read-only"
    case primary
    case standby
    case preferStandby = "prefer-standby"

    /// Whether a host with `role` may serve this database. nil role (not learnt yet) only fits `any`.
    public func accepts(_ role: HostRole?) -> Bool {
        switch self {
        case .any: return true
        case .preferStandby: return true
        case .readWrite: return role.map { !$0.readOnly && !$0.inRecovery } ?? false
        case .readOnly: return role.map { $0.readOnly || $0.inRecovery } ?? false
        case .primary: return role.map { !$0.inRecovery } ?? false
        case .standby: return role.map { $0.inRecovery } ?? false
        }
    }
}

/// One host's health as the supervisor tracks it: a pure state machine the checker drives.
public struct HostHealth: Sendable {
    public enum State: String, Sendable { case unknown, up, down }

    public private(set) var state: State = .unknown
    public private(set) var backoff: Backoff
    /// Why the last check failed (or "" after a success).
    public private(set) var lastError = ""
    public private(set) var role: HostRole? = nil
    public private(set) var lastChangeNanos: Int64 = 0
    public private(set) var lastCheckNanos: Int64 = 0
    public private(set) var checks: UInt64 = 0
    public private(set) var failedChecks: UInt64 = 0
    public private(set) var transitions: UInt64 = 0

    public init(backoff: Backoff) {
        self.backoff = backoff
    }

    /// What a check result means for the caller: log a transition, and when to check next.
    public struct Outcome: Sendable, Equatable {
        /// Set when the state changed (first result included): the new state.
        public var changedTo: State?
        /// Nanoseconds until the next check.
        public var nextInNanos: Int64
        /// On failure: the backoff ceiling used (for the log); 0 on success.
        public var backoffCapNanos: Int64
        /// On failure: the retry number (1 = first retry after the host went down).
        public var retry: Int
    }

    /// Enters `next`; returns it when that is a change (counted, timestamped), nil when already there.
    private mutating func move(to next: State, now: Int64) -> State? {
        guard state != next else { return nil }
        state = next
        lastChangeNanos = now
        transitions += 1
        return next
    }

    public mutating func succeeded(now: Int64, role: HostRole?, periodNanos: Int64) -> Outcome {
        checks += 1
        lastCheckNanos = now
        backoff.reset()
        lastError = ""
        self.role = role
        let changed = move(to: .up, now: now)
        return Outcome(changedTo: changed, nextInNanos: max(periodNanos, 10_000_000), backoffCapNanos: 0, retry: 0)
    }

    public mutating func failed(now: Int64, reason: String, random: Double) -> Outcome {
        checks += 1
        failedChecks += 1
        lastCheckNanos = now
        lastError = reason
        let changed = move(to: .down, now: now)
        let (cap, wait) = backoff.fail(random: random)
        return Outcome(changedTo: changed, nextInNanos: wait, backoffCapNanos: cap, retry: backoff.failures)
    }
}

/// Flags of a `backendState` control message.
public struct BackendFlags: OptionSet, Sendable, Equatable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The health check has a verdict (else: not checked yet; workers treat the host as usable).
    public static let known = BackendFlags(rawValue: 1)
    public static let up = BackendFlags(rawValue: 2)
    /// The role below was learnt.
    public static let roleKnown = BackendFlags(rawValue: 4)
    public static let inRecovery = BackendFlags(rawValue: 8)
    public static let readOnly = BackendFlags(rawValue: 16)
    /// The addresses list is authoritative (a host name the supervisor resolved).
    public static let resolved = BackendFlags(rawValue: 32)
    /// A standby whose replay lag is above the smallest max_standby_lag of the routed databases on it:
    /// no reads for it (issue 20; Supervisor/Health/StandbyLag.swift).
    public static let lagging = BackendFlags(rawValue: 64)

    public var role: HostRole? {
        contains(.roleKnown) ? HostRole(inRecovery: contains(.inRecovery), readOnly: contains(.readOnly)) : nil
    }
}

/// Formats nanoseconds as seconds for logs ("0.5", "1", "2.25").
public enum HealthText {
    public static func seconds(nanos: Int64) -> String {
        let ms = (nanos + 500_000) / 1_000_000
        if ms % 1000 == 0 { return String(ms / 1000) }
        var frac = String(ms % 1000)
        while frac.count < 3 { frac = "0" + frac }
        while frac.hasSuffix("0") { frac.removeLast() }
        return "\(ms / 1000).\(frac)"
    }
}

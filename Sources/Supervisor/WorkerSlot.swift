// One worker slot: the process serving it now (if any), its control channel and its restart history.
import Shared

final class WorkerSlot {
    let index: Int
    /// 0 while no process runs in this slot.
    var pid: Int32 = 0
    /// Bumped at every spawn and packed into the channel's epoll data, so an event queued for a
    /// previous process's channel (whose fd number may be reused) is recognised and dropped.
    var generation: UInt32 = 0
    var channel: ControlChannel?
    var startedAt: Int64 = 0
    var ready = false
    var backoff = RespawnBackoff()
    /// Monotonic time at which to start a replacement, while waiting out the backoff.
    var respawnAt: Int64?
    var clients: Int32 = 0
    var servers: Int32 = 0

    init(index: Int) { self.index = index }

    /// epoll data of this slot's current channel: (generation << 32) | (index + 1); 0 is the signalfd.
    var epollData: UInt64 { UInt64(generation) << 32 | UInt64(index + 1) }

    static func decode(epollData: UInt64) -> (index: Int, generation: UInt32) {
        (Int(truncatingIfNeeded: epollData & 0xffff_ffff) - 1, UInt32(truncatingIfNeeded: epollData >> 32))
    }

    /// False when the worker has no open channel, is gone, or its socket is full.
    @discardableResult
    func send(_ message: ControlMessage) -> Bool {
        channel?.send(message) ?? false
    }
}

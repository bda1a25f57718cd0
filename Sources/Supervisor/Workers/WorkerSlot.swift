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
    /// `WorkerFeatures` bits the current process announced in its `ready`.
    var features: UInt32 = 0
    var backoff = RespawnBackoff()
    /// Monotonic time at which to start a replacement, while waiting out the backoff.
    var respawnAt: Int64?
    var clients: Int32 = 0
    var servers: Int32 = 0
    /// Messages the channel could not take yet (EPOLLOUT drains them, in order).
    var outbox = ControlOutbox()
    /// The last periodic stats snapshot of the current process, and when it came (monotonic ns).
    var latest: WorkerStatsSnapshot?
    var lastReportAt: Int64 = 0
    /// Already logged as silent (no stats for a while); logged again only after it recovers.
    var reportedSilent = false
    /// Processes started in this slot after the first.
    var restarts: Int32 = 0

    /// This process's word in the shared client count: the slot's index, or index + workers for a
    /// rolling restart's new process when the old one uses the index (they alternate).
    var counterWord: Int

    init(index: Int) {
        self.index = index
        counterWord = index
    }

    /// epoll data of this slot's current channel (`SupervisorToken.channel`: generation and index).
    var epollData: SupervisorToken { .channel(slot: index, generation: generation) }

    /// Sends now or queues behind earlier messages. False when the worker has no open channel, is
    /// gone, or the backlog is full.
    @discardableResult
    /// `passing` (>= 0): a descriptor that goes with the message (SCM_RIGHTS), owned by the slot from
    /// now on: closed once sent, or when it cannot be.
    func send(_ message: ControlMessage, passing: Int32 = -1) -> Bool {
        guard let fd = channel?.fd else {
            if passing >= 0 { Posix.close(passing) }
            return false
        }
        let bytes = message.encode()
        guard bytes.count <= ControlMessage.maximumSize else {
            if passing >= 0 { Posix.close(passing) }
            return false
        }
        guard outbox.enqueue(bytes, fd: passing) else { return false }
        return outbox.drain(fd: fd)
    }
}

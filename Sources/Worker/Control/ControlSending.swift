// Sending to the supervisor through the ordered outbox, with EPOLLOUT armed while it holds anything.
import Shared

extension Worker {
    /// Sends (or queues) one encoded control message; keeps EPOLLOUT armed while anything waits.
    /// `passing` (>= 0): a descriptor that goes with the bytes (SCM_RIGHTS); the outbox owns it from
    /// now on (closed once sent, or if it cannot be).
    func sendControlBytes(_ bytes: [UInt8], passing: Int32 = -1) {
        guard controlFD >= 0 else {
            if passing >= 0 { Posix.close(passing) }
            return
        }
        if !stats.outbox.enqueue(bytes, fd: passing) {
            log.warning("control channel backlog full: a message to the supervisor was dropped")
            return
        }
        drainControl()
    }

    func drainControl() {
        guard controlFD >= 0 else { return }
        _ = stats.outbox.drain(fd: controlFD)
        let want = !stats.outbox.isEmpty
        if want != stats.outbox.watchingOutput {
            stats.outbox.watchingOutput = want
            let token = WorkerToken(.control, fd: controlFD).raw
            try? epoll.modify(controlFD, events: want ? [.input, .output] : [.input], data: token)
        }
    }
}

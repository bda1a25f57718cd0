// Sending to the supervisor through the ordered outbox, with EPOLLOUT armed while it holds anything.
import Shared

extension Worker {
    /// Sends (or queues) one encoded control message; keeps EPOLLOUT armed while anything waits.
    func sendControlBytes(_ bytes: [UInt8]) {
        guard controlFD >= 0 else { return }
        if !stats.outbox.enqueue(bytes) {
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

// The workers' control channels: EPOLLOUT only while a channel has queued messages, and sending them.
import Shared

extension Supervisor {
    /// Keeps EPOLLOUT on exactly the channels with queued messages.
    func updateChannelInterest() {
        for slot in allProcesses {
            guard let fd = slot.channel?.fd else { continue }
            let want = !slot.outbox.isEmpty
            if want != slot.outbox.watchingOutput {
                slot.outbox.watchingOutput = want
                try? epoll.modify(fd, events: want ? [.input, .output] : [.input], data: slot.epollData.raw)
            }
        }
    }

    /// EPOLLOUT (or any event) on a channel: send what waits.
    func drainChannel(_ slot: WorkerSlot) {
        guard let fd = slot.channel?.fd, !slot.outbox.isEmpty else { return }
        _ = slot.outbox.drain(fd: fd)
    }
}

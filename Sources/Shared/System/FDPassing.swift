// recvmsg with SCM_RIGHTS into caller-owned storage: no array per call, for a loop that reads often.
import CLinux

extension Posix {
    /// Receives one datagram into `buf` and up to `maxFDs` descriptors (close-on-exec) into `fds`;
    /// `received` is how many. `.processed(0)` with no descriptor is end of file.
    public static func receive(_ sock: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int,
                               fds: UnsafeMutablePointer<Int32>, maxFDs: Int32,
                               received: inout Int32) throws(SyscallError) -> IOResult {
        try retrying("recvmsg", badFDIsBug: false) { cl_recv_fds(sock, buf, count, fds, maxFDs, &received) }
    }
}

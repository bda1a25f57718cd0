// A TCP relay the test can close and reopen in a few milliseconds: a backend that "goes down" without a restart.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A Python asyncio relay from `port` to a backend port. `close()` stops listening and resets every
/// relayed connection (new connects are refused, as with a stopped server); `open()` listens again.
/// Used where real PostgreSQL restarts (about a second each) would make a test too slow.
final class TCPGate: @unchecked Sendable {
    let port: Int
    let process: ChildProcess
    let dir: String

    static let script = """
        import asyncio, signal, sys
        listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
        state = {"server": None}
        conns = set()

        async def pipe(r, w):
            try:
                while True:
                    data = await r.read(65536)
                    if not data:
                        break
                    w.write(data)
                    await w.drain()
            except Exception:
                pass
            finally:
                try:
                    w.close()
                except Exception:
                    pass

        async def handle(cr, cw):
            try:
                sr, sw = await asyncio.open_connection("127.0.0.1", target_port)
            except Exception:
                cw.transport.abort()
                return
            pair = (cw, sw)
            conns.add(pair)
            await asyncio.gather(pipe(cr, sw), pipe(sr, cw))
            conns.discard(pair)

        async def up():
            if state["server"] is None:
                state["server"] = await asyncio.start_server(handle, "127.0.0.1", listen_port, reuse_address=True)
            print("open", flush=True)

        def down():
            if state["server"] is not None:
                state["server"].close()
                state["server"] = None
            for cw, sw in list(conns):
                cw.transport.abort()
                sw.transport.abort()
            conns.clear()
            print("closed", flush=True)

        async def main():
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGUSR1, down)
            loop.add_signal_handler(signal.SIGUSR2, lambda: asyncio.ensure_future(up()))
            await up()
            await asyncio.Event().wait()

        asyncio.run(main())
        """

    init(targetPort: Int) throws {
        dir = try makeTempDirectory(prefix: "gate")
        port = try freePort()
        try Self.script.write(toFile: dir + "/gate.py", atomically: false, encoding: .utf8)
        process = try ChildProcess.spawn(["python3", dir + "/gate.py", String(port), String(targetPort)],
                                         stdoutPath: dir + "/gate.out", stderrPath: dir + "/gate.err")
        guard waitUntil(timeout: 10, { TestSocket.canConnect(port: port) }) else {
            throw E2EError("TCP gate did not start: \(readTextFile(dir + "/gate.err"))")
        }
    }

    private func events() -> [Substring] { readTextFile(dir + "/gate.out").split(separator: "\n") }

    /// Refuse new connections and reset the open ones; returns once the relay did it.
    func close() {
        let n = events().count
        process.signal(SIGUSR1)
        _ = waitUntil(timeout: 10, poll: 0.005) { events().count > n }
    }

    func open() {
        let n = events().count
        process.signal(SIGUSR2)
        _ = waitUntil(timeout: 10, poll: 0.005) { events().count > n }
    }

    func stop() {
        _ = process.terminate(SIGTERM, grace: 5)
        try? FileManager.default.removeItem(atPath: dir)
    }
}
